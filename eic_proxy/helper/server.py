"""The per-user helper: keeps the data path imported and forks one process per connection.

Started on demand by the thin client (``helper/client.py``), detached from ssh, listening on a 0600
socket in a 0700 directory and answering only its own user (SO_PEERCRED). For each connection it
forks: the child takes ssh's descriptors, the client's environment and working directory, runs
``cli.main`` exactly as ``eic-proxy connect`` would in-process, and reports the exit code. A child
never depends on the helper afterwards, so killing, restarting or upgrading the helper ends no tunnel.

The helper has one thread whenever it forks (``fork`` copies only the calling thread; a lock held by
another would stay locked forever in the child): its loading thread is joined before it accepts
again. It leaves when no connection came for ``--idle`` seconds, when its socket was taken over, or
when its own code on disk changed (an upgrade).
"""
from __future__ import annotations

import argparse
import gc
import os
import select
import signal
import socket
import struct
import sys
import threading
import time
from typing import Optional

from eic_proxy.helper import address, wire
from eic_proxy.helper.client import peer_uid

DEFAULT_IDLE = 900.0
CHECK_EVERY = 5.0  # how often an idle helper looks whether its socket or its code changed
COLD_AFTER = 1.0  # idle this long before the cold path's modules are loaded (a burst is served first)
REQUEST_WAIT = 2.0
HANDOFF_WAIT = 10.0
HELPER_NAME = "eicproxy-helper"  # /proc/PID/comm (15 characters at most): what ps and pkill see
TUNNEL_NAME = "eicproxy-tunnel"
PREPARE_NAME = "eicproxy-prep"  # the short-lived process that prepares a connection for its tunnel

# What the warm connect path imports, so a child finds it loaded; the cold path's (botocore) follows
# once the helper is idle, one group per idle moment so a connection never waits for a whole preload.
WARM = ("eic_proxy.cli", "eic_proxy.commands.connect", "eic_proxy.lifecycle.session", "eic_proxy.control.locate",
        "eic_proxy.transport.pump", "eic_proxy.transport.link", "eic_proxy.tunnel.protocol", "eic_proxy.transport.handshake",
        "eic_proxy.tunnel.signer", "eic_proxy.control.push", "eic_proxy.lifecycle.limiter", "eic_proxy.transport.probe",
        "eic_proxy.control.hostkey_guard", "eic_proxy.keys.lifecycle", "eic_proxy.store.cache", "eic_proxy.store.audit",
        "eic_proxy.aws.sharedfiles", "eic_proxy.aws.client", "eic_proxy.control.endpoint", "eic_proxy.control.resolve",
        "eic_proxy.aws.proxy", "eic_proxy.store.knownhosts", "ssl", "base64", "hashlib",
        "platformdirs", "encodings.idna", "eic_proxy.lifecycle.handover", "pickle")
# (cryptography is left out: only a key rotation needs it, a few times a day, and it weighs 7 MiB.)
COLD = (("botocore.session", "botocore.client"), ("eic_proxy.aws.client:cut_models",))


def set_name(name: str) -> None:
    """The process's name in ps and pkill: Linux only (/proc/self/comm). macOS has no way without a
    C extension (README: "The helper")."""
    if sys.platform != "linux":
        return
    try:
        fd = os.open("/proc/self/comm", os.O_WRONLY)
    except OSError:
        return
    try:
        os.write(fd, name.encode())
    except OSError:
        pass
    finally:
        os.close(fd)


def preload(modules: tuple[str, ...]) -> None:
    """Import each module (``module:function`` also calls the function)."""
    for name in modules:
        module, _, function = name.partition(":")
        try:
            __import__(module)
            if function:
                getattr(sys.modules[module], function)()
        except Exception:  # noqa: BLE001 - what fails to load here only costs the connection the load
            pass


class Helper:
    def __init__(self, directory: str, name: str, ident: str, idle: float) -> None:
        self.directory = directory
        self.name = name
        self.identity = ident
        self.idle = idle
        self.listener: Optional[socket.socket] = None
        self.inode = 0
        self.last = time.monotonic()
        self.cold = list(COLD)
        self.cold_wanted = False  # set when a connection had to load botocore: first connections happen here
        self.started = time.monotonic()
        self.connections = 0

    def listen(self) -> None:
        """Bind a private name, then rename it into place: a stale socket is replaced atomically."""
        if sys.platform == "win32":  # no helper on Windows (and the type checker sees it)
            raise OSError("the helper is POSIX-only")
        os.chdir(self.directory)  # relative names: the path may be too long for sockaddr_un
        if not address.private_dir_ok("."):
            raise SystemExit(f"{self.directory} is not a private directory of this user")
        temp = f".{self.name}.{os.getpid()}"
        try:
            os.unlink(temp)
        except FileNotFoundError:
            pass
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(temp)
        os.chmod(temp, 0o600)
        sock.listen(128)
        os.rename(temp, self.name)
        self.inode = os.stat(self.name).st_ino
        self.listener = sock

    def still_ours(self) -> bool:
        """False when another helper took the name, someone removed it, or our code changed on disk."""
        return _same_inode(self.name, self.inode) and address.identity() == self.identity

    def serve(self) -> None:
        assert self.listener is not None
        gc.freeze()  # what is loaded now stays shared with the children (no copy-on-write by the collector)
        next_check = time.monotonic() + CHECK_EVERY
        while True:
            now = time.monotonic()
            loading = self.cold and self.cold_wanted
            due = min(next_check, self.last + self.idle, self.last + COLD_AFTER if loading else float("inf"))
            wait = max(0.0, due - now)
            ready, _, _ = select.select([self.listener], [], [], wait)
            if ready:
                self.accept()
                continue
            now = time.monotonic()
            if loading and now >= self.last + COLD_AFTER:
                # In a thread (gone before the next fork): what loading allocates lands in a malloc arena
                # of its own, not in the heap each forked connection allocates from (copying its pages).
                loader = threading.Thread(target=preload, args=(self.cold.pop(0),), name="eic-preload")
                loader.start()
                loader.join()
                gc.freeze()
                continue
            if now >= self.last + self.idle or (now >= next_check and not self.still_ours()):
                self.leave()
                return
            next_check = now + CHECK_EVERY

    def leave(self) -> None:
        """Remove our socket (not one another helper put in its place) and stop listening."""
        if _same_inode(self.name, self.inode):
            try:
                os.unlink(self.name)
            except OSError:
                pass
        if self.listener is not None:
            self.listener.close()

    def accept(self) -> None:
        if sys.platform == "win32":  # no helper on Windows (and the type checker sees it)
            raise OSError("the helper is POSIX-only")
        assert self.listener is not None
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        try:
            if peer_uid(conn) != os.geteuid():
                return
            conn.settimeout(REQUEST_WAIT)
            request = wire.recv(conn)
            if isinstance(request, dict) and request.get("op") in ("status", "stop", "cold"):
                self.cold_wanted = self.cold_wanted or request["op"] == "cold"
                wire.send(conn, {"pid": os.getpid(), "identity": self.identity, "uptime": time.monotonic() - self.started,
                                 "connections": self.connections, "idle": self.idle, "cold_loaded": not self.cold,
                                 "cold_wanted": self.cold_wanted})
                if request["op"] == "stop":
                    raise SystemExit(0)
                return
            if not _valid(request):
                return
            self.last = time.monotonic()  # only connections count as activity, not `helper status`
            if request["identity"] != self.identity:
                wire.send(conn, ("other", self.identity))
                return
            self.connections += 1
            pid = os.fork()
            if pid == 0:
                code = 70
                try:
                    self.listener.close()
                    code = run_child(conn, request, os.path.join(self.directory, self.name))
                finally:
                    os._exit(code)
        except (OSError, wire.WireError):
            pass
        finally:
            conn.close()


def _valid(request: object) -> bool:
    return (isinstance(request, dict) and isinstance(request.get("identity"), str)
            and isinstance(request.get("cwd"), str) and isinstance(request.get("argv"), list)
            and all(isinstance(a, str) for a in request["argv"]) and isinstance(request.get("env"), dict)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in request["env"].items()))


def _same_inode(name: str, inode: int) -> bool:
    try:
        return os.stat(name).st_ino == inode
    except OSError:
        return False


def _take_environment(wanted: dict[str, str]) -> None:
    """Make os.environ (and the C environment) exactly ``wanted``, touching only what differs: usually
    nothing, as the helper started with the environment of an earlier connection. (Clearing and
    refilling it costs each tunnel 0.4-0.8 MiB of copied memory; measured.)"""
    for key in [k for k in os.environ if k not in wanted]:
        del os.environ[key]
    for key, value in wanted.items():
        if os.environ.get(key) != value:
            os.environ[key] = value


def _no_system_proxy_lookup() -> None:
    """In a forked child on macOS: proxies from the environment the client sent, never from the system.

    urllib's (and so botocore's) proxy lookup falls back to ``_scproxy`` (SystemConfiguration) when no
    ``*_proxy`` variable is set, and Apple's frameworks are not fork-safe: a forked process that calls
    them may crash (CPython gh-105912). The helper never asks; a connection made without the helper
    (``--no-helper``) still honours the system settings.
    """
    if sys.platform != "darwin":
        return
    import urllib.request

    from_env = {"getproxies": urllib.request.getproxies_environment,
                "proxy_bypass": vars(urllib.request)["proxy_bypass_environment"]}  # not in every stub
    # botocore.utils bound both names when it was imported (the helper preloads it)
    for module in (urllib.request, sys.modules.get("botocore.utils")):
        for name, function in from_env.items():
            if module is not None:
                setattr(module, name, function)


def _park_loading_arena() -> None:
    """Give the malloc arena the helper's loading thread used to a thread that only waits: glibc hands
    a dead thread's arena to the next new thread, which would be the tunnel's pump, writing into (and
    copying) pages full of botocore. Measured with the loading thread: 20 tunnels 189 → 157 MiB."""
    threading.Thread(target=threading.Event().wait, name="eic-parked", daemon=True).start()


def run_child(conn: socket.socket, request: dict, helper_socket: str) -> int:
    """In the forked child: take ssh's descriptors and the client's environment, run the connection.

    The connection is prepared by a process this one forks (``prepare``), which hands the tunnel back
    (``lifecycle/handover.py``) and exits: this long-lived process then only opens the WebSocket and pumps,
    and keeps none of the memory the preparing touched. A connection the preparer carries itself
    (``--start``, or one that fails before its tunnel) ends there, and its exit code comes back here."""
    if sys.platform == "win32":  # no helper on Windows (and the type checker sees it)
        raise OSError("the helper is POSIX-only")
    set_name(TUNNEL_NAME)
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD):  # the helper's own; SIGINT was never changed
        signal.signal(sig, signal.SIG_DFL)
    conn.settimeout(HANDOFF_WAIT)
    wire.send(conn, ("ready", os.getpid()))
    try:
        _, fds, _, _ = socket.recv_fds(conn, 1, 3)
    except OSError:
        return 0
    if len(fds) != 3:  # the client gave up waiting and went its own way: touch nothing of its
        for fd in fds:
            os.close(fd)
        return 0
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    _take_environment(request["env"])
    _no_system_proxy_lookup()
    try:
        os.chdir(request["cwd"])
    except OSError:
        os.chdir("/")
    sys.argv = ["eic-proxy", *request["argv"]]

    code = 70
    try:
        code = _prepared_elsewhere(conn, request["argv"], helper_socket)
    finally:
        from eic_proxy.transport.pump import SIGNALS

        for sig in SIGNALS:  # ssh's SIGHUP at its exit must not cut the outcome off (the tunnel is over)
            signal.signal(sig, signal.SIG_IGN)
        _flush()
        try:
            conn.settimeout(HANDOFF_WAIT)
            conn.sendall(b"%d\n" % int(code))  # a text line: the client's waiter may be /bin/sh's `read`
        except OSError:
            pass
    return int(code)


def _prepared_elsewhere(conn: socket.socket, argv: list[str], helper_socket: str) -> int:
    """Fork the preparer, wait for its plan (or its exit code), and carry the tunnel it hands over."""
    if sys.platform == "win32":  # no helper on Windows (and the type checker sees it)
        raise OSError("the helper is POSIX-only")
    from eic_proxy.transport.pump import SIGNALS

    ours, theirs = socket.socketpair()
    pid = os.fork()
    if pid == 0:
        try:
            ours.close()
            conn.close()
            set_name(PREPARE_NAME)
            prepare(argv, theirs, helper_socket)
        finally:
            os._exit(0)  # the outcome went through the socket
    theirs.close()
    # ssh's signals reach this process (the client's waiter forwards them to it): the preparer gets
    # them, and answers as a connection in its place would (an exit code, or its death by the signal).
    previous = {sig: signal.signal(sig, lambda signum, _frame: _forward(pid, signum)) for sig in SIGNALS}
    try:
        message = _receive(ours)
    finally:
        ours.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if isinstance(message, tuple) and message[:1] == ("plan",):
        # The preparer exits on its own meanwhile; reaped when it does, not waited for here.
        signal.signal(signal.SIGCHLD, lambda _signum, _frame: _reap(pid))
        _reap(pid)
        return _carry(message[1], pid)
    _, status = os.waitpid(pid, 0)
    if isinstance(message, tuple) and message[:1] == ("code",) and isinstance(message[1], int):
        return message[1]
    if os.WIFSIGNALED(status) and os.WTERMSIG(status) in SIGNALS:  # ssh's signal, passed on: go the same way
        signal.signal(os.WTERMSIG(status), signal.SIG_DFL)
        os.kill(os.getpid(), os.WTERMSIG(status))
    from eic_proxy.errors import error_line

    how = f"killed by signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status) else f"exit status {os.WEXITSTATUS(status)}"
    line = error_line(f"the process {pid} preparing the connection ended without an answer ({how})",
                      "the connection was not made; retry, and run with -v if it happens again")
    try:
        os.write(2, (line + "\n").encode())
    except OSError:
        pass
    return 70


def prepare(argv: list[str], sock: socket.socket, helper_socket: str) -> None:
    """In the preparer: run the connection as ``eic-proxy connect`` would, up to the moment its
    WebSocket would open; hand the prepared session over then. Whatever ends before (an error, said
    on stderr as usual) or is not handed over (``--start``) sends its exit code instead."""
    import logging

    from eic_proxy.cli import main
    from eic_proxy.commands import connect
    from eic_proxy.lifecycle.handover import plan_of

    cold_before = "botocore" in sys.modules
    sent = False

    def hand_over(session: object) -> bool:
        nonlocal sent
        level = logging.getLogger("eic_proxy").level or logging.WARNING
        plan = plan_of(session, max(0, (logging.WARNING - level) // 10))
        _flush()  # what we said comes before what the carrier says
        _send(sock, ("plan", plan))
        sent = True
        return True

    connect.hand_over = hand_over
    code = 70
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse: --help, or a bad command line
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    finally:
        _flush()
        if not sent:
            _send(sock, ("code", int(code)))
        sock.close()
        if not cold_before and "botocore" in sys.modules:
            from eic_proxy.helper.client import ask

            ask(helper_socket, "cold")


def _carry(plan: object, preparer: int) -> int:
    """The tunnel of the plan, with the same one-line errors and exit codes as ``cli.main``."""
    import logging

    from eic_proxy.cli import guarded, setup_logging
    from eic_proxy.commands.connect import carry

    setup_logging(getattr(plan, "verbose", 0))
    logging.getLogger("eic_proxy.helper").debug("= prepared by process %d, carried by this one", preparer)
    _park_loading_arena()
    return guarded(lambda: carry(plan))


def _forward(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except OSError:
        pass


def _reap(pid: int) -> None:
    if sys.platform == "win32":  # no helper on Windows (and the type checker sees it)
        raise OSError("the helper is POSIX-only")
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    except ChildProcessError:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass


def _send(sock: socket.socket, message: object) -> None:
    from eic_proxy.lifecycle.handover import dumps

    try:
        wire.send(sock, message, dumps=dumps)
    except OSError:
        pass  # the tunnel's process is gone: nobody is left to tell


def _receive(sock: socket.socket) -> object:
    """The preparer's one message, or None when it ended without one."""
    from eic_proxy.lifecycle.handover import loads

    try:
        return wire.recv(sock, loads=loads)
    except wire.WireError:
        return None


def warm_up() -> None:
    """Build what every connection would build first (``connect``'s parser, the log level, the TLS
    context of this environment's trust store: a child with another CA bundle loads its own), then
    run the rest of what it runs on made-up data (``rehearsal``). What fails here only leaves the work
    to the connections."""
    try:
        from eic_proxy.aws.sharedfiles import SharedSettings
        from eic_proxy.cli import build_parser, setup_logging
        from eic_proxy.transport.handshake import tls_context

        build_parser("connect")
        setup_logging(0)  # the level most connections use, set before they are forked
        tls_context(SharedSettings(None).ca_bundle)
        rehearsal()
    except Exception:  # noqa: BLE001
        pass


def _idle_from_env() -> float:
    """``EIC_PROXY_HELPER_IDLE`` in seconds; anything that is not a positive number means the default."""
    try:
        value = float(os.environ.get("EIC_PROXY_HELPER_IDLE") or DEFAULT_IDLE)
    except ValueError:
        return DEFAULT_IDLE
    return value if 0 < value < float("inf") else DEFAULT_IDLE


def rehearsal() -> None:
    """Run the parser, the signer and the protocol on made-up data before any connection is forked:
    CPython 3.11 rewrites a function's bytecode while it warms up (specialisation), and a child doing
    that copies the page from the helper. Measured: ~0.3 MiB less copied per tunnel. Touches no file
    and no network."""
    from eic_proxy.aws.sharedfiles import StaticCredentials
    from eic_proxy.cli import build_parser
    from eic_proxy.tunnel.protocol import TunnelProtocol
    from eic_proxy.tunnel.signer import presign_url

    frame = struct.pack("!BB", 0x82, 100) + b"\0" * 100  # a server's BINARY frame: unmasked
    for _ in range(3):
        build_parser("connect").parse_args(["connect", "i-0123456789abcdef0", "22", "ec2-user"])
        presign_url(StaticCredentials("AKIAREHEARSAL0000000", "-"), "us-east-1", "eice.invalid",
                    "eice-0123456789abcdef0", 22, "10.0.0.1")
        proto = TunnelProtocol(0.0, keepalive=30.0, warn_before=None)
        proto.local_data(b"\0" * 1000, 0.5)
        proto.receive_bytes(frame, 0.6)
        proto.tick(1.0)
        proto.local_eof(1.1)
        proto.take()


def _stop(_signum: int, _frame: object) -> None:
    raise SystemExit(0)


def main(argv: Optional[list[str]] = None) -> int:
    if sys.platform == "win32":  # no helper on Windows (and the type checker sees it)
        raise OSError("the helper is POSIX-only")
    parser = argparse.ArgumentParser(prog="python -m eic_proxy.helper.server")
    parser.add_argument("--dir", required=True)
    parser.add_argument("--socket", required=True)
    parser.add_argument("--ready-fd", type=int)
    parser.add_argument("--idle", type=float, default=_idle_from_env())
    parser.add_argument("--identity", help=argparse.SUPPRESS)  # tests: pose as another build
    args = parser.parse_args(argv)
    set_name(HELPER_NAME)
    os.umask(0o077)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel; their outcome goes to their client
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _stop)
    preload(WARM)
    warm_up()
    helper = Helper(args.dir, args.socket, args.identity or address.identity(), max(args.idle, 0.1))
    helper.listen()
    if args.ready_fd is not None:
        try:
            os.write(args.ready_fd, b"1")
            os.close(args.ready_fd)
        except OSError:
            pass
    try:
        helper.serve()
    except SystemExit:
        helper.leave()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The thin ProxyCommand: hand ``connect`` to the per-user helper, which forks a warm process for it.

This runs before argparse, logging or any module of the data path is imported: it only needs ``os``,
the C socket and signal modules and ``marshal`` (``array``, ``struct`` and ``zlib`` cost ~3.5 ms to import:
not used here). A connection that cannot use the helper
(none wanted, none running and none can start, another build, no answer within ``HANDOFF_WAIT``)
returns None before anything is handed over, and ``cli.main`` runs it in this process as before.

Once the descriptors are handed over the child owns the connection: this process becomes a small
/bin/sh waiter (``WAITER``) that forwards the signals ssh sends it and exits with the child's code.
"""
from __future__ import annotations

import os
import sys

from eic_proxy import settings
from eic_proxy.helper import address, wire

TYPE_CHECKING = False  # typing costs a ProxyCommand ~2 ms to import; annotations are strings here
if TYPE_CHECKING:
    from typing import Any, Optional

HANDOFF_WAIT = 2.0  # the helper answers in milliseconds; longer means it is wedged: go around it
SPAWN_WAIT = 5.0  # a new helper imports the data path (~0.1 s) before it listens
LOCK_WAIT = 5.0
LOST = 70  # ExitCode.INTERNAL, without importing errors.py


def run_via_helper(argv: list[str]) -> Optional[int]:
    """``connect`` through the helper: its exit code, or None when this process must run it itself."""
    if not argv or argv[0] != "connect" or not _wanted(argv):
        return None
    verbose = _verbose(argv)
    d = address.helper_dir()
    if d is None or not address.make_private_dir(d):
        _debug(verbose, f"not used: its directory {d} is missing or not private to this user")
        return None
    ident = address.identity()
    name = address.socket_name(ident)
    sock = connect_helper(d, name)
    if sock is None:
        sock = _spawn_and_connect(d, name, verbose)
        if sock is None:
            return None
    try:
        return _hand_over(sock, ident, argv, verbose)
    finally:
        sock.close()


def _wanted(argv: list[str]) -> bool:
    options = argv[:argv.index("--")] if "--" in argv else argv
    if settings.BY_NAME["helper"].flag in options:
        return False
    if settings.is_false(settings.environment_value("helper")):
        return False
    if sys.platform == "darwin" and _keyring_wanted(options):
        return False
    return _config_allows(argv)


def _keyring_wanted(options: list[str]) -> bool:
    """macOS: the Keychain (keyring's backend) is not fork-safe, and the helper's connections are forked:
    a connection that may read its key from the keyring (agent mode) runs in its own process."""
    agent = settings.environment_value("agent").strip()
    return (settings.BY_NAME["agent"].flag in options or (agent != "" and not settings.is_false(agent))
            or settings.environment_value("key_store").strip().lower() == "keyring")


def _host_of(argv: list[str]) -> str:
    if "--" in argv:  # the generated block: options, then `-- %h %p %r`
        rest = argv[argv.index("--") + 1:]
        return rest[0] if rest else ""
    return next((a for a in argv[1:] if not a.startswith("-")), "")


def _config_allows(argv: list[str]) -> bool:
    """``helper = no`` in the config file (on macOS also agent mode, see ``_keyring_wanted``). The file is
    parsed only when it mentions them at all; it is where ``config.config_path`` finds it (one rule:
    ``settings.config_file``), and its values mean what ``config.load`` makes of them."""
    path = settings.config_file()
    if path is None:
        return True  # Windows: no helper there anyway
    try:
        with open(path, "rb") as fh:
            text = fh.read(1 << 20)
    except OSError:
        return True  # no file (or a broken one, which the in-process path reports)
    words = (b"helper", b"agent", b"keyring") if sys.platform == "darwin" else (b"helper",)
    if not any(w in text for w in words):
        return True
    try:
        from eic_proxy.config import load
        from eic_proxy.control.resolve import parse_host

        host = _host_of(argv)
        layer = load().for_host(parse_host(host).alias) if host else None
    except Exception:  # a bad file or host: the in-process path says what is wrong
        return False
    if layer is None:
        return True
    if sys.platform == "darwin" and (layer.agent or layer.key_store == "keyring"):
        return False
    return layer.helper is not False


def _verbose(argv: list[str]) -> bool:
    return bool(os.environ.get("EIC_PROXY_DEBUG")) or any(
        a == "--verbose" or (a.startswith("-v") and a.strip("v") == "-") for a in argv)


def _debug(verbose: bool, text: str) -> None:
    if verbose:
        try:
            os.write(2, f"eic-proxy: helper: {text}\n".encode(errors="replace"))
        except OSError:
            pass


def connect_helper(d: str, name: str) -> Any:
    """A connected socket to a live helper of this user, or None (no socket file, a stale one, another user's)."""
    if sys.platform == "win32":  # no helper on Windows (and the type checker sees it)
        raise OSError("the helper is POSIX-only")
    import _socket

    path = os.path.join(d, name)
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    sock.settimeout(HANDOFF_WAIT)
    try:
        if len(path.encode()) <= address.MAX_SUN_PATH:
            sock.connect(path)
        else:
            _connect_relative(sock, d, name)
        if peer_uid(sock) != os.geteuid():
            raise OSError("the helper's socket belongs to another user")
    except OSError:
        sock.close()
        return None
    return sock


def ask(path: str, op: str) -> Optional[dict]:
    """A helper's answer to ``status``, ``stop`` or ``cold`` (a connection had to load botocore);
    None if nothing of ours answers at ``path``."""
    sock = connect_helper(*os.path.split(path))
    if sock is None:
        return None
    try:
        wire.send(sock, {"op": op})
        answer = wire.recv(sock)
    except (OSError, wire.WireError):
        return None
    finally:
        sock.close()
    return answer if isinstance(answer, dict) else None


def _connect_relative(sock: Any, d: str, name: str) -> None:
    if sys.platform == "win32":  # no helper on Windows (and the type checker sees it)
        raise OSError("the helper is POSIX-only")
    here = os.open(".", os.O_RDONLY)
    try:
        os.chdir(d)
        sock.connect(name)
    finally:
        os.fchdir(here)
        os.close(here)


SOL_LOCAL = 0  # macOS and the BSDs: <sys/un.h>
LOCAL_PEERCRED = 1  # struct xucred { u_int cr_version; uid_t cr_uid; short cr_ngroups; gid_t cr_groups[16]; }
XUCRED_SIZE = 76  # 4 + 4 + 2 (+2 padding) + 16 * 4
UCRED_SIZE = 12  # Linux: struct ucred { pid_t pid; uid_t uid; gid_t gid; }


def peer_uid(sock: Any) -> int:
    """The uid of the process at the other end of a Unix socket: SO_PEERCRED on Linux, LOCAL_PEERCRED
    (what getpeereid reads) on macOS and the BSDs; -1 where the OS cannot say, which no uid matches."""
    if sys.platform == "win32":  # no helper on Windows (and the type checker sees it)
        raise OSError("the helper is POSIX-only")
    import _socket

    if sys.platform == "linux":
        raw = sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, UCRED_SIZE)
        return _uint(raw, 4) if len(raw) >= 8 else -1
    try:
        raw = sock.getsockopt(SOL_LOCAL, getattr(_socket, "LOCAL_PEERCRED", LOCAL_PEERCRED), XUCRED_SIZE)
    except OSError:
        return -1
    if len(raw) < 8:
        return -1
    return _uint(raw, 4) if _uint(raw, 0) == 0 else -1


def _uint(raw: bytes, at: int) -> int:
    """A C unsigned int of the kernel's answer (this machine's byte order)."""
    return int.from_bytes(raw[at:at + 4], sys.byteorder)


def _spawn_and_connect(d: str, name: str, verbose: bool) -> Any:
    """Start the helper (one at a time: a lock file serialises parallel first connections) and connect."""
    if sys.platform == "win32":  # no helper on Windows (and the type checker sees it)
        raise OSError("the helper is POSIX-only")
    import fcntl
    import time

    lock = os.open(os.path.join(d, address.LOCK_NAME), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        deadline = time.monotonic() + LOCK_WAIT
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                if time.monotonic() > deadline:
                    _debug(verbose, "not used: another connection has been starting it for too long")
                    return None
                time.sleep(0.01)
        sock = connect_helper(d, name)  # started by whoever held the lock before us
        if sock is not None:
            return sock
        if not _spawn(d, name, verbose):
            return None
        return connect_helper(d, name)
    finally:
        os.close(lock)


def _spawn(d: str, name: str, verbose: bool) -> bool:
    """Fork, detach (new session, reparented to init) and exec ``python -m eic_proxy.helper.server``;
    True once it listens. It inherits no descriptor of ssh's: only /dev/null and the ready pipe."""
    if sys.platform == "win32":  # no helper on Windows (and the type checker sees it)
        raise OSError("the helper is POSIX-only")
    import select

    r, w = os.pipe()
    log = os.path.join(d, "helper.log") if verbose else os.devnull
    argv = [sys.executable, "-m", "eic_proxy.helper.server", "--ready-fd", str(w), "--dir", d, "--socket", name]
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the intermediate process
        try:
            os.setsid()
            os.chdir(d)  # `-m` puts the working directory first on sys.path: a checkout there would shadow us
            if os.fork() == 0:
                null = os.open(os.devnull, os.O_RDWR)
                out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600) if verbose else null
                os.dup2(null, 0)
                os.dup2(out, 1)
                os.dup2(out, 2)
                os.closerange(3, w)
                os.closerange(w + 1, 65536)
                os.set_inheritable(w, True)
                os.execv(sys.executable, argv)
        finally:
            os._exit(0)
    os.close(w)
    try:
        os.waitpid(pid, 0)
        ready, _, _ = select.select([r], [], [], SPAWN_WAIT)
        ok = bool(ready) and os.read(r, 1) == b"1"
    except OSError:
        ok = False
    finally:
        os.close(r)
    _debug(verbose, "started" if ok else f"did not start within {SPAWN_WAIT:.0f} s (see {log})")
    return ok


def _hand_over(sock: Any, ident: str, argv: list[str], verbose: bool) -> Optional[int]:
    if sys.platform == "win32":  # no helper on Windows (and the type checker sees it)
        raise OSError("the helper is POSIX-only")
    import _socket

    try:
        cwd = os.getcwd()
    except OSError:
        cwd = "/"
    try:
        wire.send(sock, {"identity": ident, "argv": argv, "env": dict(os.environ), "cwd": cwd})
        reply = wire.recv(sock)
    except (OSError, wire.WireError) as exc:
        _debug(verbose, f"not used: it did not answer ({exc})")
        return None
    if not (isinstance(reply, tuple) and len(reply) == 2 and reply[0] == "ready" and isinstance(reply[1], int)):
        _debug(verbose, f"not used: it is another build of eic-proxy ({reply[1]!r:.300} is not {ident!r:.300})"
               if isinstance(reply, tuple) and reply[:1] == ("other",) else f"not used: unexpected answer {reply!r:.80}")
        return None
    child = reply[1]
    try:
        sock.sendmsg([b"G"], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, wire.descriptors([0, 1, 2]))])
    except OSError as exc:
        _debug(verbose, f"not used: handing over failed ({exc})")
        return None
    _debug(verbose, f"connection handed to process {child}")
    _let_go_of_stdio()
    _wait_in_shell(sock, child)  # returns only if there is no /bin/sh
    forwarded = _forward_signals(sock)
    sock.settimeout(None)
    line = b""
    while not line.endswith(b"\n"):
        try:
            chunk = sock.recv(16)
        except OSError:
            break
        if not chunk:
            break
        line += chunk
    if line.strip().isdigit():
        return int(line)
    if forwarded:
        # ssh's SIGHUP ended the child after the tunnel was over, as it would have ended us in-process
        return 128 + forwarded[-1]
    _lost()
    return LOST


LOST_LINE = ("eic-proxy: error: the tunnel's process ended without an outcome (killed?); the connection "
             "is lost (hint: retry; `eic-proxy helper stop` restarts the helper)")  # (it may carry others: no pid)

# The waiter /bin/sh becomes once the child owns the connection: it passes ssh's signals on as a letter
# on the socket (helper/waiter.py: the tunnel may share its process with others) and exits with the
# tunnel's code, in a few hundred KiB instead of a Python process's 4-5 MiB (20 open tunnels: ~90 MiB
# less; bench/RESULTS.md). `read` returns early when a trapped signal arrives; only a failed read with
# no signal since is the end of the socket.
WAITER = """
child=$1 sig= seen=0 n=0
trap '' PIPE
trap 'n=$((n+1)) sig=129; printf H >&3 2>/dev/null' HUP
trap 'n=$((n+1)) sig=143; printf T >&3 2>/dev/null' TERM
trap 'n=$((n+1)) sig=130; printf I >&3 2>/dev/null' INT
while :; do
  code=
  if IFS= read -r code <&3; then break; fi
  [ -n "$code" ] && break
  [ "$n" -ne "$seen" ] && { seen=$n; continue; }
  [ -n "$sig" ] && exit "$sig"
  printf '%s\n' "$2" >&2
  exit 70
done
case $code in ''|*[!0-9]*) exit 70;; esac
exit "$code"
"""


def _wait_in_shell(sock: Any, child: int) -> None:
    """Become ``/bin/sh`` running WAITER, the socket on fd 3; returns only if that cannot be done."""
    if not os.path.exists("/bin/sh"):
        return
    try:
        sock.settimeout(None)  # a timeout makes the descriptor non-blocking: the shell's read would fail at once
        fd = sock.fileno()
        if fd != 3:
            os.dup2(fd, 3)
        os.set_inheritable(3, True)
        os.execv("/bin/sh", [sys.argv[0] or "eic-proxy", "-c", WAITER, "eic-proxy", str(child),
                             LOST_LINE])
    except OSError:
        return


def _lost() -> None:
    try:
        os.write(2, (LOST_LINE + "\n").encode())
    except OSError:
        pass


def _let_go_of_stdio() -> None:
    """ssh must see EOF when the child closes its copies: ours become /dev/null (numbers kept)."""
    null = os.open(os.devnull, os.O_RDWR)
    try:
        os.dup2(null, 0)
        os.dup2(null, 1)
    finally:
        os.close(null)


def _forward_signals(sock: Any) -> list[int]:
    """ssh sends its ProxyCommand SIGHUP (or SIGTERM) when it exits; the tunnel is the one to hear it,
    as a letter on the socket (``helper/waiter.py``), as WAITER passes it on. Returns the list the
    forwarded signals are recorded in."""
    import _signal

    forwarded: list[int] = []
    letters = {_signal.SIGHUP: b"H", _signal.SIGTERM: b"T", _signal.SIGINT: b"I"}

    def forward(signum: int, _frame: object) -> None:
        forwarded.append(signum)
        try:
            sock.send(letters[signum])
        except OSError:
            pass

    for sig in (_signal.SIGHUP, _signal.SIGTERM, _signal.SIGINT):
        _signal.signal(sig, forward)
    return forwarded

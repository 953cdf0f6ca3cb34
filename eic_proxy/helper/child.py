"""A connection's process under the helper: forked per connection, it takes ssh's descriptors and the
client's environment and prepares the connection (``connection.prepare``) — in place when that needs
nothing of AWS (all cached: a warm burst), else in a short-lived preparer it forks, so that botocore's
memory never stays in the tunnel's process. Then it hands the tunnel to a carrier of the same
environment (``helper/carrier.py``) and exits, or carries it itself (``connection.carry``) and takes
the next tunnels of its environment meanwhile.

A tunnel never depends on the helper afterwards, so killing, restarting or upgrading the helper ends
no tunnel. Its exit code goes back to the client's waiter as a text line; ssh's signals come from the
waiter as letters on the same socket (``helper/waiter.py``).
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
from typing import TYPE_CHECKING, Optional, Union

from eic_proxy.helper import carrier, waiter, wire
from eic_proxy.helper.waiter import WaiterSignals
from eic_proxy.transport.pump import SIGNALS

if TYPE_CHECKING:
    from eic_proxy.lifecycle.connection import Plan
    from eic_proxy.lifecycle.limiter import Slot

log = logging.getLogger("eic_proxy.helper")

HANDOFF_WAIT = 10.0
HELPER_NAME = "eicproxy-helper"  # /proc/PID/comm (15 characters at most): what ps and pkill see
TUNNEL_NAME = "eicproxy-tunnel"
PREPARE_NAME = "eicproxy-prep"  # the short-lived process that prepares a connection for its tunnel


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

    A connection that needs nothing of AWS is prepared here (``_prepared_here``); any other by a process
    this one forks (``prepare``), which hands the plan back (``lifecycle/handover.py``) and exits: this
    long-lived process then only opens the WebSocket and pumps, and keeps none of botocore's memory.
    A connection the preparer carries itself
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

    conn.settimeout(None)
    signals = WaiterSignals(conn, unattached=_as_if_signalled)  # reads while the connection is prepared
    code, handed, host = 70, False, None
    try:
        prepared = _prepared_here(request["argv"], signals)
        if prepared is None:  # it needs AWS: a preparer does that, so botocore's memory never stays here
            prepared = _prepared_elsewhere(request["argv"], helper_socket, signals, conn)
        if isinstance(prepared, int):
            code = prepared
        else:
            from eic_proxy.report import setup_logging

            plan, preparer = prepared
            setup_logging(plan.verbose)  # (-v: why a hand-over did not happen is said too)
            group, directory = carrier.group_of(request, plan), os.path.dirname(helper_socket)
            slot = carrier.free_slot(plan)
            signals.pause()  # a carrier reads the waiter's socket next (a signal already read: carried here)
            if signals.kept:
                log.debug("= carried here: ssh's signal came before the hand-over")
            handed, host = _handed_or_founding(directory, group, plan, conn, slot, signals.kept)
            if handed:
                code = 0
            else:
                if host is not None:  # ssh's letter before the pump runs: kept for it (not this process's end)
                    signals.unattached = None
                signals.start()
                waiter.every.append(signals)
                for sig in SIGNALS:  # one sent to this process: for every tunnel in it
                    signal.signal(sig, waiter.to_every_tunnel)
                code = _carry(plan, preparer, signals, slot)
    finally:
        signals.stop()
        if signals in waiter.every:
            waiter.every.remove(signals)
        for sig in SIGNALS:  # (the tunnel is over; the others it carries still hear them)
            signal.signal(sig, waiter.to_every_tunnel if host is not None else signal.SIG_IGN)
        _flush()
        if not handed:  # (a carrier writes the code of a tunnel it took)
            try:
                conn.settimeout(HANDOFF_WAIT)
                conn.sendall(b"%d\n" % int(code))  # a text line: the client's waiter may be /bin/sh's `read`
            except OSError:
                pass
    if host is not None:  # its own ssh is done: nothing of it stays open here (a reader of its stderr waits for EOF)
        from eic_proxy.transport.local import close_quietly

        conn.close()
        for fd in (0, 1, 2):
            close_quietly(fd)
        host.finish()
    return int(code)


def _handed_or_founding(directory: str, group: str, plan: Plan, conn: socket.socket, slot: Optional[Slot],
                        kept: bool) -> tuple[bool, Optional[carrier.Host]]:
    """(True, None) once a carrier of the group has taken the tunnel; else (False, the carrier this
    process founds for the next tunnels, or None). A tunnel whose ssh signal came first stays here."""
    if not kept and carrier.hand_over(directory, group, plan, conn, slot):
        return True, None
    with carrier.founding(directory, group):
        if not kept and carrier.hand_over(directory, group, plan, conn, slot):  # founded while we waited
            return True, None
        return False, carrier.Host.open(directory, group)


def _as_if_signalled(signum: int) -> None:
    """ssh's signal, before the tunnel's pump runs: this process (carrying no other tunnel) ends at once,
    as the signal itself would end it (the waiter, which passed it on, exits with 128+N)."""
    os._exit(128 + signum)


def _prepared_here(argv: list[str], signals: WaiterSignals) -> Union[None, int, tuple[Plan, Optional[int]]]:
    """A connection that needs nothing of AWS (target, endpoint, push and host keys all cached: a warm
    burst) is prepared in this process, a fork less: the plan, or the exit code of what failed (said on
    stderr). None: it needs AWS — a preparer then does it all again (what was done here, reading caches
    and noting the key's use, is harmless twice). ssh's signal meanwhile ends this process as the signal
    would (``_as_if_signalled``)."""
    from eic_proxy.aws.client import NeedsAws, without_aws
    from eic_proxy.lifecycle.connection import prepare as prepare_connection
    from eic_proxy.options import parse_connect
    from eic_proxy.report import guarded, setup_logging

    plans: list[Plan] = []

    def run() -> int:
        opts, verbose = parse_connect(argv)
        setup_logging(verbose)
        plans.append(prepare_connection(opts, verbose=_verbosity()))
        return 0

    signals.start()
    try:
        with without_aws():
            code = guarded(run)
    except NeedsAws:
        return None
    except SystemExit as exc:  # argparse: --help, or a bad command line
        code = _code_of(exc)
    finally:
        signals.pause()  # (this process has one thread again: a preparer may be forked next)
    if not plans:
        return int(code)
    log.debug("= prepared in place (nothing of AWS was needed)")
    return plans[0], None


def _code_of(exit: SystemExit) -> int:
    """argparse's exit as a process would have it: its number, 0 for none, 2 for a message."""
    return exit.code if isinstance(exit.code, int) else (0 if exit.code is None else 2)


def _verbosity() -> int:
    """-v's count as the logging set up for this connection has it (``EIC_PROXY_DEBUG`` included)."""
    level = logging.getLogger("eic_proxy").level or logging.WARNING
    return max(0, (logging.WARNING - level) // 10)


def _prepared_elsewhere(argv: list[str], helper_socket: str, signals: WaiterSignals,
                        conn: socket.socket) -> Union[int, tuple[Plan, Optional[int]]]:
    """Fork the preparer and wait for its plan (with the preparer's pid) or its exit code. (Forked
    before ``signals`` reads in a thread: this process has one thread when it forks.)"""
    if sys.platform == "win32":  # no helper on Windows (and the type checker sees it)
        raise OSError("the helper is POSIX-only")
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
    # ssh's signals (the waiter's letters, or sent to this process) go to the preparer, which answers
    # as a connection in its place would (an exit code, or its death by the signal).
    signals.attach(lambda signum: _forward(pid, signum))
    signals.start()
    previous = {sig: signal.signal(sig, lambda signum, _frame: _forward(pid, signum)) for sig in SIGNALS}
    try:
        message = _receive(ours)
    finally:
        ours.close()
        signals.detach()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if isinstance(message, tuple) and message[:1] == ("plan",):
        # The preparer exits on its own meanwhile; reaped when it does, not waited for here.
        signal.signal(signal.SIGCHLD, lambda _signum, _frame: _reap(pid))
        _reap(pid)
        from eic_proxy.lifecycle.connection import Plan

        return (message[1], pid) if isinstance(message[1], Plan) else 70
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
    """In the preparer: ``connection.prepare`` for this command line, for the parent that will carry the
    tunnel; the plan goes to it. What ends before (an error, said on stderr as ``cli.main`` would), or a
    plan another process cannot carry (``--start``'s open tunnel: carried here), sends an exit code."""
    from eic_proxy.lifecycle.connection import prepare as prepare_connection
    from eic_proxy.options import parse_connect
    from eic_proxy.report import guarded, setup_logging

    cold_before = "botocore" in sys.modules
    sent = False

    def run() -> int:
        nonlocal sent
        opts, verbose = parse_connect(argv)
        setup_logging(verbose)
        plan = prepare_connection(opts, carrier_pid=os.getppid(), verbose=_verbosity())
        if not plan.portable:
            return _carried(plan)
        _flush()  # what we said comes before what the carrier says
        _send(sock, ("plan", plan))
        sent = True
        return 0

    code = 70
    try:
        code = guarded(run)
    except SystemExit as exc:  # argparse: --help, or a bad command line
        code = _code_of(exc)
    finally:
        _flush()
        if not sent:
            _send(sock, ("code", int(code)))
        sock.close()
        if not cold_before and "botocore" in sys.modules:
            from eic_proxy.helper.client import ask

            ask(helper_socket, "cold")


def _carried(plan: Plan, signals: Optional[WaiterSignals] = None, slot: Optional[Slot] = None) -> int:
    """``connection.carry`` on ssh's descriptors, with ``connect``'s exit code and error line."""
    from eic_proxy.lifecycle.connection import carry, exit_code_of
    from eic_proxy.transport.local import LocalEnd, close_quietly

    return exit_code_of(carry(plan, LocalEnd(0, 1), lambda: close_quietly(1), signals=signals, slot=slot))


def _carry(plan: Plan, preparer: Optional[int], signals: WaiterSignals, slot: Optional[Slot]) -> int:
    """The tunnel of the plan, with the same one-line errors and exit codes as ``cli.main``."""
    from eic_proxy.report import guarded

    if preparer is not None:
        log.debug("= prepared by process %d, carried by this one", preparer)
    _park_loading_arena()
    return guarded(lambda: _carried(plan, signals, slot))


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



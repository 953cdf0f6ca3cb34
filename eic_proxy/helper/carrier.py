"""Several tunnels in one process: a tunnel's process takes the next tunnels of the same environment.

A process per tunnel costs ~5 MiB that nobody shares (bench/RESULTS.md: pages CPython writes just by
running); a thread per tunnel beside others costs a few hundred KiB. After its plan has come (and a
slot of the endpoint is free), a connection's process hands the tunnel to a carrier of its group —
same build, environment, working directory and verbosity, so nothing process-wide differs — by
passing ssh's descriptors, its waiter's socket and the slot over a Unix socket, and exits. A
connection's process that finds no carrier becomes one (``Host``) while it carries its own tunnel.

What each tunnel keeps of its own, in the carrier: its ssh's stderr and disk warning (``console.py``),
ssh's signals (the waiter's letters, ``helper/waiter.py``: a signal to the process would end every
tunnel in it), its slot, audit entries and exit code. At most ``MAX_TUNNELS`` share a process, so a
busy tunnel shares the interpreter's lock with few others; a carrier leaves once the last is over.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import select
import socket
import sys
import threading
from typing import TYPE_CHECKING, Iterator, Optional

from eic_proxy import console
from eic_proxy.helper import address, wire

if TYPE_CHECKING:
    from eic_proxy.lifecycle.connection import Plan
    from eic_proxy.lifecycle.limiter import Slot

MAX_TUNNELS = 10  # per carrier process, its own included
CARRIERS = 8  # per group: the 81st tunnel of one environment gets a process of its own
HANDOFF_WAIT = 15.0  # a carrier answers in milliseconds; a machine loaded to a standstill may take longer
FOUNDING_WAIT = 5.0  # the longest a tunnel waits for others to found (or hand over to) its group's carrier
TAKEN = b"K"  # the carrier will take the tunnel …
GO = b"G"  # … and the connection's process, still waiting for that, lets it go

log = logging.getLogger("eic_proxy.helper")


def group_of(request: dict, plan: Plan) -> str:
    """What must be equal for two tunnels to share a process: build, environment, directory, verbosity.

    Spelled out byte by byte: ``marshal``'s output for equal values differs with the objects' history
    (an interned string, an object met twice), which once put two tunnels of one environment apart."""
    parts = [request["identity"], request["cwd"], str(plan.verbose),
             *(f"{name}={value}" for name, value in sorted(request["env"].items()))]
    return hashlib.sha256("\0".join(parts).encode("utf-8", "surrogatepass")).hexdigest()[:16]


def _name(group: str, n: int) -> str:
    return f"carrier-{group}-{n}.sock"


@contextlib.contextmanager
def _address(directory: str, name: str) -> Iterator[Optional[str]]:
    """What ``bind``/``connect`` take for ``directory/name``: the path, or where it is too long for a
    socket address, the same file through a descriptor of the directory (Linux); None: not reachable."""
    path = os.path.join(directory, name)
    if len(path.encode()) <= address.MAX_SUN_PATH:
        yield path
        return
    if sys.platform != "linux":
        yield None
        return
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}/{name}"
    finally:
        os.close(fd)


@contextlib.contextmanager
def founding(directory: str, group: str) -> Iterator[None]:
    """One tunnel at a time founds a carrier of ``group`` (``Host.open``): tunnels whose plans were ready
    at the same moment (a burst prepared in place) then fill the first carrier instead of each founding
    one (20 tunnels in 2 processes, not 4). Only local work happens under it: a look at the directory,
    a hand-over to a carrier just founded, a bind. Past FOUNDING_WAIT, or without the lock file, the
    tunnel goes on without it (at worst one carrier more)."""
    import time

    from eic_proxy.store import files

    try:
        fd: Optional[int] = os.open(os.path.join(directory, f"carrier-{group}.lock"),
                                    os.O_RDWR | os.O_CREAT | files.O_NOFOLLOW, 0o600)
    except OSError:
        fd = None
    deadline = time.monotonic() + FOUNDING_WAIT
    try:
        while fd is not None:
            try:
                if files.try_lock(fd):
                    break
            except OSError:
                break
            if time.monotonic() > deadline:
                log.debug("= founding a carrier without waiting longer for another tunnel's")
                break
            time.sleep(0.002)
        yield
    finally:
        if fd is not None:
            os.close(fd)  # (and the lock with it)


def free_slot(plan: Plan) -> Optional[Slot]:
    """The endpoint's slot for a tunnel that may be handed over: taken now, or None (carry() queues)."""
    from eic_proxy.lifecycle.limiter import try_acquire

    return try_acquire(plan.located.endpoint.endpoint_id, plan.opts.max_connections)


def hand_over(directory: str, group: str, plan: Plan, conn: socket.socket, slot: Optional[Slot]) -> bool:
    """Give the tunnel (ssh's descriptors 0-2, the waiter's socket, the slot) to a carrier of ``group``;
    True once one has taken it. Nothing is lost when none does: the caller carries it itself."""
    if sys.platform == "win32":  # no helper on Windows (and the type checker sees it)
        raise OSError("the helper is POSIX-only")
    from eic_proxy.helper.client import peer_uid
    from eic_proxy.lifecycle.handover import dumps

    if slot is None or slot.fd is None:
        log.debug("= carried here: no slot of the endpoint free now")
        return False
    fds = wire.descriptors([0, 1, 2, conn.fileno(), slot.fd])
    try:
        present = set(os.listdir(directory))  # (one look instead of a connect per possible name)
    except OSError:
        present = set()
    found = 0
    for n in range(CARRIERS):
        if _name(group, n) not in present:
            continue
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(HANDOFF_WAIT)
        try:
            with _address(directory, _name(group, n)) as where:
                if where is None:
                    return False
                sock.connect(where)
            found += 1
            if peer_uid(sock) != os.geteuid():
                log.debug("= carrier %d is not this user's", n)
                continue
            wire.send(sock, ("tunnel", plan), dumps=dumps)
            sock.sendmsg([b"F"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])
            answer = sock.recv(1)
            if answer == TAKEN:
                sock.sendall(GO)  # from here the carrier's: a late TAKEN is never answered, so never two carry it
                return True
            log.debug("= carrier %d did not take the tunnel (%s)", n, "full or leaving" if not answer else answer)
        except (OSError, wire.WireError) as exc:
            if not isinstance(exc, FileNotFoundError):
                log.debug("= carrier %d: %s", n, exc)
            continue
        finally:
            sock.close()
    if not found:
        log.debug("= no carrier of this environment (group %s) yet", group)
    return False


class Host:
    """The listening side of a carrier: takes tunnels handed over, each carried in a thread of its own."""

    def __init__(self, listener: socket.socket, path: str) -> None:
        self.listener = listener
        self._wake_r, self._wake_w = os.pipe()  # finish() wakes the acceptor (a listening socket's
        #                                          shutdown does not wake accept() everywhere)
        self.path = path
        self.inode = os.stat(path).st_ino
        self.closing = False
        self.lock = threading.Lock()
        self.tunnels: list[threading.Thread] = []
        self.acceptor: Optional[threading.Thread] = threading.Thread(target=self._accept, name="eic-carrier", daemon=True)

    @classmethod
    def open(cls, directory: str, group: str) -> Optional[Host]:
        """Listen as a carrier of ``group`` (the first free name; a stale one is replaced), or None."""
        if sys.platform == "win32":  # no helper on Windows (and the type checker sees it)
            raise OSError("the helper is POSIX-only")
        for n in range(CARRIERS):
            path = os.path.join(directory, _name(group, n))
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                with _address(directory, _name(group, n)) as where:
                    if where is None:
                        sock.close()
                        return None
                    if os.path.lexists(path) and not _stale(where):
                        sock.close()
                        continue
                    try:
                        os.unlink(path)
                    except FileNotFoundError:
                        pass
                    sock.bind(where)
                os.chmod(path, 0o600)
                sock.listen(16)
            except OSError:
                sock.close()
                continue
            host = cls(sock, path)
            console.per_connection()  # each tunnel's lines to its own ssh
            assert host.acceptor is not None
            host.acceptor.start()
            log.debug("= carries the next tunnels of its group as %s", os.path.basename(path))
            return host
        log.debug("= carries its tunnel alone: no carrier name of group %s was free", group)
        return None

    def _accept(self) -> None:
        if sys.platform == "win32":  # no helper on Windows (and the type checker sees it)
            raise OSError("the helper is POSIX-only")
        from eic_proxy.helper.client import peer_uid

        while not self.closing:
            try:
                ready, _, _ = select.select([self.listener.fileno(), self._wake_r], [], [])
                if self._wake_r in ready:
                    return
                sock, _ = self.listener.accept()
            except OSError:
                return
            try:
                if peer_uid(sock) == os.geteuid():
                    sock.settimeout(HANDOFF_WAIT)
                    self._take(sock)
            except (OSError, wire.WireError):
                pass
            except Exception:  # noqa: BLE001 - one bad hand-over must not end the taking of the next
                log.debug("= a tunnel offered to this carrier could not be taken", exc_info=True)
            finally:
                sock.close()

    def _take(self, sock: socket.socket) -> None:
        if sys.platform == "win32":  # no helper on Windows (and the type checker sees it)
            raise OSError("the helper is POSIX-only")
        from eic_proxy.lifecycle.connection import Plan
        from eic_proxy.lifecycle.handover import loads

        message = wire.recv(sock, loads=loads)
        _, fds, _, _ = socket.recv_fds(sock, 1, 5)
        with self.lock:
            self.tunnels = [t for t in self.tunnels if t.is_alive()]
            wanted = (len(fds) == 5 and isinstance(message, tuple) and len(message) == 2 and message[0] == "tunnel"
                      and isinstance(message[1], Plan) and not self.closing and len(self.tunnels) + 1 < MAX_TUNNELS)
        try:
            if wanted:
                sock.sendall(TAKEN)
                wanted = sock.recv(1) == GO  # (nothing: it gave up waiting and carries the tunnel itself)
            if wanted:
                with self.lock:  # (let go of by its process: carried even if finish() began meanwhile — it waits)
                    tunnel = console.thread(_carry_hosted, "eic-hosted", (message[1], fds))
                    self.tunnels.append(tunnel)
                    tunnel.start()
                return
        except (OSError, RuntimeError):  # (RuntimeError: no thread could be started)
            pass
        for fd in fds:
            os.close(fd)

    def finish(self) -> None:
        """Take no more tunnels, and return once every one taken has ended (once; again: nothing)."""
        with self.lock:
            if self.acceptor is None:
                return
            self.closing = True
        if address.same_inode(self.path, self.inode):
            try:
                os.unlink(self.path)
            except OSError:
                pass
        os.write(self._wake_w, b"x")
        self.acceptor.join()
        self.acceptor = None
        self.listener.close()
        os.close(self._wake_r)
        os.close(self._wake_w)
        for tunnel in list(self.tunnels):
            tunnel.join()


def _carry_hosted(plan: Plan, fds: list[int]) -> None:
    """One tunnel handed over: carried with its own stderr, signals and slot; its code to its waiter."""
    from pathlib import Path

    from eic_proxy.helper import waiter
    from eic_proxy.lifecycle.connection import carry, exit_code_of
    from eic_proxy.lifecycle.limiter import Slot
    from eic_proxy.report import guarded
    from eic_proxy.transport.local import LocalEnd, close_quietly

    in_fd, out_fd, err_fd, conn_fd, slot_fd = fds
    console.use(console.Console(err_fd))
    log.debug("= taken by process %d, carried beside its own tunnel", os.getpid())
    conn = socket.socket(fileno=conn_fd)
    signals = waiter.WaiterSignals(conn).start()
    waiter.every.append(signals)  # a signal sent to the carrier's process ends this tunnel too
    code = 70
    try:
        code = guarded(lambda: exit_code_of(carry(plan, LocalEnd(in_fd, out_fd), lambda: close_quietly(out_fd),
                                                  signals=signals, slot=Slot(slot_fd, Path(f"/dev/fd/{slot_fd}")))))
    finally:
        signals.stop()
        waiter.every.remove(signals)
        try:
            conn.settimeout(HANDOFF_WAIT)
            conn.sendall(b"%d\n" % int(code))
        except OSError:
            pass
        conn.close()
        for fd in (in_fd, out_fd, err_fd):
            try:
                os.close(fd)
            except OSError:
                pass


def _stale(path: str) -> bool:
    """A socket file nobody listens on (its carrier was killed)."""
    if sys.platform == "win32":  # no helper on Windows (and the type checker sees it)
        raise OSError("the helper is POSIX-only")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
        return False
    except ConnectionRefusedError:
        return True
    except OSError:
        return False
    finally:
        probe.close()


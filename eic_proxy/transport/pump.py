"""The one I/O driver of ``TunnelProtocol``: sockets, file descriptors, threads, signals and the clock.

Threads, each doing one blocking thing (no ``select`` on stdin, so Windows pipes work):
- *uplink* reads ssh's bytes and feeds them to the protocol;
- *reader* reads the endpoint's bytes, feeds them, and writes what comes out to ssh;
- *sender* is the only writer of the socket: frames leave in the order the protocol made them;
- the calling thread keeps time, receives signals (through a wake-up socket: handlers only record)
  and does the teardown.

The driver's rules (docs/architecture.md, "The tunnel core"): the diagnostic line is written to
stderr before ssh's input is closed; once an outcome is decided, SIGHUP and stdin EOF only hurry
the exit; teardown never blocks — the socket is shut down under any blocked thread, every send
is watched for progress, and the process is gone within 2 s in every state.
"""
from __future__ import annotations

import logging
import select
import signal
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from functools import partial
from typing import Callable, Optional, Protocol, Sequence

from eic_proxy import console
from eic_proxy.errors import EicProxyError, error_line
from eic_proxy.transport.link import POLL, Link, describe_socket_error
from eic_proxy.transport.local import LocalEnd, stderr_line
from eic_proxy.tunnel.effects import CloseOutput, Done, Effect, Note, Outcome, Reconnect, Say, Send, Write
from eic_proxy.tunnel.protocol import MAX_FRAME, TunnelProtocol

log = logging.getLogger(__name__)

TICK_MAX = 1.0           # the longest the timer sleeps (send-progress watch resolution)
RECV_SIZE = 64 * 1024     # an SSL read returns one TLS record (<= 16 KiB); more is only memory touched per tunnel
WRITE_BATCH = 64 * 1024  # most held back for ssh while a frame arrives: a pipe's size, so a write never waits
FINAL_SEND_GRACE = 0.25  # at the end, how long our CLOSE may take to leave
HURRY_GRACE = 1.0        # after a hurry (signal, EOF), how long the reader may take to finish the line

# ssh ends its ProxyCommand with SIGHUP; Ctrl-C and service managers send SIGINT/SIGTERM.
SIGNALS = tuple(getattr(signal, n) for n in ("SIGHUP", "SIGTERM", "SIGINT") if hasattr(signal, n))


@dataclass
class PumpResult:
    """How a tunnel ended, plus byte counts for the audit log."""

    outcome: Outcome
    bytes_up: int
    bytes_down: int
    duration: float

    @property
    def error(self) -> Optional[EicProxyError]:
        return self.outcome.error

    @property
    def reason(self) -> str:
        return self.outcome.reason

    @property
    def exit_code(self) -> int:
        return self.outcome.exit_code


class SignalSource(Protocol):
    """ssh's signals for a tunnel that does not get them as a process (``helper/waiter.py``)."""
    def attach(self, deliver: Callable[[int], None]) -> None: ...
    def detach(self) -> None: ...


class Driver:
    """Runs one protocol over one link and ssh's end of it. ``run()`` returns when it has ended."""

    def __init__(self, link: Link, proto: TunnelProtocol, local: LocalEnd,
                 close_output: Callable[[], None], reconnect: Optional[Callable[[], Optional[socket.socket]]] = None,
                 tell: Callable[[str], None] = stderr_line, handle_signals: Optional[bool] = None,
                 inspect: Optional[Callable[[bytes], Optional[EicProxyError]]] = None,
                 chores: Sequence[tuple[float, Callable[[], None]]] = (), signals: Optional[SignalSource] = None) -> None:
        self.link, self.proto = link, proto
        self.signals = signals
        self.chores = sorted(chores, key=lambda c: c[0])  # (monotonic time, work): run once, in a thread of its own
        self.local = local
        self.close_output_fn = close_output
        self.reconnect = reconnect
        self.tell = tell
        self.inspect = inspect  # sees every byte for ssh before it is written; an error stops the tunnel
        self._held: list[bytes] = []
        self._reader_thread: Optional[threading.Thread] = None
        self.handle_signals = (threading.current_thread() is threading.main_thread() and signals is None
                               if handle_signals is None else handle_signals)  # (given a source: the process's are not ours)
        self.lock = threading.Lock()
        self.done = threading.Event()
        self._said = False
        self._output_closed = False
        self._end_lock = threading.Lock()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        link.on_error = lambda detail: self.step(partial(self.proto.connection_lost, detail))

    # ---- feeding the protocol --------------------------------------------------------------------
    def step(self, feed: Callable[[float], None]) -> None:
        """Give the protocol one input (``feed(now)``) under the lock, queue its frames, then carry out
        the rest in order, outside the lock (a write to a slow ssh must not stop the other threads)."""
        with self.lock:
            feed(time.monotonic())
            effects = self.proto.take()
            self.link.enqueue([e for e in effects if isinstance(e, Send)])
        self.perform([e for e in effects if not isinstance(e, Send)])

    def perform(self, effects: list[Effect]) -> None:
        # Writes come from the reader thread only. They are held while a frame is still arriving (up
        # to WRITE_BATCH): one write per frame, as websocket-client delivers, not one per TLS record.
        held = self._held
        reader = threading.current_thread() is self._reader_thread  # only it touches what is held
        for e in effects:
            if isinstance(e, Write):
                refusal = self.inspect(e.data) if self.inspect is not None else None
                if refusal is not None:  # not a byte of it reaches ssh
                    self.inspect = None
                    self._flush(held)
                    self.step(partial(self.proto.fail, refusal))
                    return
                held.append(e.data)
                continue
            if held and reader and not self._flush(held):
                return
            if isinstance(e, Note):
                self.tell(e.text)
            elif isinstance(e, Say):
                self._say(e.text)
            elif isinstance(e, CloseOutput):
                self._close_output()
            elif isinstance(e, Reconnect):
                self._reconnect()
            elif isinstance(e, Done):
                self.done.set()
                self.wake()
        if held and reader and not (self.proto.mid_frame and sum(map(len, held)) < WRITE_BATCH
                                    and not self.proto.finished):
            self._flush(held)

    def _flush(self, pending: list[bytes]) -> bool:
        """Write what is pending to ssh; False when ssh is gone (the protocol has been told)."""
        if not pending:
            return True
        data = pending[0] if len(pending) == 1 else b"".join(pending)
        pending.clear()
        try:
            self.local.write(data)
            return True
        except OSError:
            if not self.proto.finished:
                self.step(self.proto.output_failed)
            return False

    def _say(self, text: str) -> None:
        with self._end_lock:
            if self._said:
                return
            self._said = True
        self.tell(text)

    def _close_output(self) -> None:
        with self._end_lock:
            if self._output_closed:
                return
            self._output_closed = True
        self.close_output_fn()

    def _reconnect(self) -> None:
        assert self.reconnect is not None
        try:
            sock = self.reconnect()
        except EicProxyError as exc:
            self.step(partial(self.proto.reconnect_failed, exc))
            return
        if sock is None:
            self.step(partial(self.proto.reconnect_failed, None))
            return
        with self.lock:  # the swap and the replay are one step: later uplink frames queue after it
            self.link.swap(sock)
            self.proto.reconnected(time.monotonic())
            effects = self.proto.take()
            self.link.enqueue([e for e in effects if isinstance(e, Send)])
        self.perform([e for e in effects if not isinstance(e, Send)])

    def wake(self, what: bytes = b"\0") -> None:
        try:
            self._wake_w.send(what)
        except OSError:
            pass

    def deliver(self, signum: int) -> None:
        """A signal meant for this tunnel, as if its handler had recorded it."""
        self.wake(bytes([signum]))

    # ---- the threads -----------------------------------------------------------------------------
    def _uplink(self) -> None:
        # In a bulk transfer (a read filled the buffer), up to UPLINK_FRAMES frames per read (ssh's pipe
        # is enlarged to hold them): the sender thread is woken once per read, not once per frame,
        # which is most of the uplink's CPU beyond TLS. An interactive tunnel keeps the small buffer.
        buf = bytearray(MAX_FRAME)
        view = memoryview(buf)
        while not self.proto.finished:
            try:
                n = self.local.readinto(buf)
            except OSError as exc:
                log.debug("reading from ssh failed: %s", exc)
                n = 0
            if n == 0:
                self.step(self.proto.local_eof)
                self.wake()
                return
            pieces = [bytes(view[i:min(i + MAX_FRAME, n)]) for i in range(0, n, MAX_FRAME)]
            if n == len(buf) < UPLINK_FRAMES * MAX_FRAME:
                buf = bytearray(UPLINK_FRAMES * MAX_FRAME)
                view = memoryview(buf)
            self.step(partial(_feed, self.proto, pieces))
            self.link.wait_for_room()

    def _reader(self) -> None:
        buf = bytearray(RECV_SIZE)
        view = memoryview(buf)
        while not self.proto.finished and not self.link.closed:
            sock, generation = self.link.sock, self.link.generation
            try:
                n = sock.recv_into(buf)
            except (socket.timeout, ssl.SSLWantReadError):
                continue
            except (OSError, ValueError) as exc:
                if self.link.closed or self.link.generation != generation:
                    continue
                detail = describe_socket_error(exc)
                self.step(partial(self.proto.connection_lost, detail))
                return
            if n == 0:
                if self.link.generation != generation:
                    continue
                self.step(partial(self.proto.connection_lost, "closed without a WebSocket close"))
                return
            # The recv buffer itself: the parser copies each payload out once, and the writes happen
            # in this thread before the next recv reuses it.
            self.step(partial(self.proto.receive_bytes, view[:n]))

    # ---- the calling thread ----------------------------------------------------------------------
    def run(self) -> None:
        self.local.grow(UPLINK_FRAMES * MAX_FRAME)  # ssh reads what we write, and we read it, in fewer wake-ups
        restore = self._install_signals() if self.handle_signals else (lambda: None)
        if self.signals is not None:
            self.signals.attach(self.deliver)
        threads = [console.thread(f, f"eic-{f.__name__.strip('_')}")
                   for f in (self.link.run_sender, self._reader, self._uplink)]
        self._reader_thread = threads[1]
        try:
            for t in threads:
                t.start()
            self._timer()
        finally:
            restore()
            if self.signals is not None:
                self.signals.detach()
            self._teardown()
            # The socket threads were woken by the shutdown: once they are out, the descriptor can go
            # (closing it under a thread still inside recv could hand its number to a new file).
            for t in threads[:2]:
                t.join(POLL)
            if not any(t.is_alive() for t in threads[:2]):
                self.link.release()

    def _timer(self) -> None:
        hurried_at: Optional[float] = None
        while not self.done.is_set():
            now = time.monotonic()
            deadline = self.proto.next_deadline()
            wait = TICK_MAX if deadline is None else min(max(deadline - now, 0.0), TICK_MAX)
            self._run_due_chores(now)
            if hurried_at is not None:
                wait = min(wait, max(hurried_at + HURRY_GRACE - now, 0.0))
            signums = self._wait(wait)
            if self.done.is_set():
                return
            if self.proto.finished and hurried_at is None:
                hurried_at = time.monotonic()  # decided, but a thread is still busy ending: don't wait long
            if hurried_at is not None and time.monotonic() >= hurried_at + HURRY_GRACE:
                return
            for s in signums:
                self.step(partial(self.proto.signal, s))
            self.step(lambda now: self.proto.tick(now, self.link.blocked_since()))

    def _run_due_chores(self, now: float) -> None:
        while self.chores and self.chores[0][0] <= now:
            _, work = self.chores.pop(0)
            console.thread(_quietly, "eic-chore", (work,)).start()

    def _wait(self, timeout: float) -> list[int]:
        try:
            ready, _, _ = select.select([self._wake_r], [], [], timeout)
        except (OSError, ValueError):
            return []
        if not ready:
            return []
        try:
            data = self._wake_r.recv(256)
        except OSError:
            return []
        return [b for b in data if b in SIGNALS]  # the wake-up fd carries every handled signal (SIGCHLD too)

    def _install_signals(self) -> Callable[[], None]:
        """Handlers only record: the C-level handler writes the signal number to the wake-up socket."""
        previous = {}
        for sig in SIGNALS:
            try:
                previous[sig] = signal.signal(sig, lambda signum, frame: None)
            except (ValueError, OSError):  # pragma: no cover - not settable here
                pass
        try:
            old_fd = signal.set_wakeup_fd(self._wake_w.fileno(), warn_on_full_buffer=False)
        except (ValueError, OSError):  # pragma: no cover
            old_fd = -1

        def restore() -> None:
            try:
                signal.set_wakeup_fd(old_fd)
            except (ValueError, OSError):  # pragma: no cover
                pass
            for sig, handler in previous.items():
                try:
                    signal.signal(sig, handler)
                except (ValueError, OSError, TypeError):  # pragma: no cover
                    pass

        return restore

    def _teardown(self) -> None:
        outcome = self.proto.outcome
        if outcome is not None and outcome.error is not None:
            self._say(error_line(outcome.error.message, outcome.error.hint))  # no-op when the thread that decided already said it
            outcome.error.reported = True
        self._close_output()
        self.link.drain(FINAL_SEND_GRACE)
        self.link.close()
        for s in (self._wake_r, self._wake_w):
            s.close()


UPLINK_FRAMES = 4


def _quietly(work: Callable[[], None]) -> None:
    try:
        work()
    except Exception as exc:  # a chore (a key rotation) never ends a tunnel
        log.debug("chore %s failed: %s", getattr(work, "__name__", work), exc)


def _feed(proto: TunnelProtocol, pieces: list[bytes], now: float) -> None:
    for piece in pieces:
        proto.local_data(piece, now)


def pump(sock: socket.socket, proto: TunnelProtocol, local: LocalEnd, close_output: Callable[[], None],
         reconnect: Optional[Callable[[], Optional[socket.socket]]] = None, first: bytes = b"",
         tell: Callable[[str], None] = stderr_line,
         inspect: Optional[Callable[[bytes], Optional[EicProxyError]]] = None,
         chores: Sequence[tuple[float, Callable[[], None]]] = (), signals: Optional[SignalSource] = None) -> PumpResult:
    """Move bytes both ways until either side ends; the protocol decides how it ended.

    ``first``: bytes a probe already read through this WebSocket, written to ssh before anything else.
    ``reconnect``: opens a new WebSocket for the one replay the protocol may ask for (None: no replay).
    ``inspect``: sees every byte for ssh before it is written (the host-key guard); an error it
    returns ends the tunnel with that error's line, and those bytes are not written.
    ``chores``: (monotonic time, work) pairs, each run once in a thread of its own if the tunnel still
    lives then (a due key's rotation, which must not wait for an end that may never run).
    ``signals``: where ssh's signals come from when they do not come to this process.
    """
    started = time.monotonic()
    if first:
        refusal = inspect(first) if inspect is not None else None
        try:
            if refusal is not None:
                proto.fail(refusal, time.monotonic())
            else:
                local.write(first)
        except OSError:
            proto.output_failed(time.monotonic())
    link = Link(sock)
    driver = Driver(link, proto, local, close_output, reconnect, tell, inspect=inspect, chores=chores, signals=signals)
    if not proto.finished:
        driver.run()
    else:
        driver._teardown()
    assert proto.outcome is not None
    return PumpResult(proto.outcome, proto.bytes_up, proto.bytes_down, time.monotonic() - started)

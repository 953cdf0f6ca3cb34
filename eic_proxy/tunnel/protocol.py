"""The tunnel's whole policy as one sans-I/O object, like websockets' ``Protocol``.

Inputs: bytes from ssh, ssh's EOF, bytes or frames from the endpoint, the connection's loss, a failed
local write, signals and time (every input takes ``now``). Outputs, in order, from ``take()``: the
effects of ``effects.py``. No socket, thread or clock inside, so every rule is tested with data alone
(tests/unit/test_tunnel_protocol.py); ``pump.py`` and ``probe.py`` do the I/O.
The diagnostic line comes before "close the local output", nothing is written to ssh after it, and
data the endpoint sent before its CLOSE is delivered before the outcome.
"""
from __future__ import annotations

import signal as _signal
from dataclasses import dataclass, field
from typing import Callable, Optional, Union

from eic_proxy.errors import EicProxyError, ExitCode, NetworkError, NetworkTimeout, ProtocolError, TunnelClosed, error_line
from eic_proxy.tunnel.effects import (
    CloseOutput,
    Done,
    Effect,
    EndReason,
    Note,
    Outcome,
    Phase,
    Reconnect,
    Say,
    Send,
    Write,
    format_bytes,
    signal_exit_code,
)
from eic_proxy.tunnel.endpoint_errors import close_error
from eic_proxy.tunnel.wsframes import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    CloseCode,
    Frame,
    FrameError,
    FrameParser,
    close_payload,
    encode,
)

# The official client sends at most 65 000 bytes per BINARY frame (docs/protocol.md §4.2).
MAX_FRAME = 65000
MAX_MESSAGE = 16 * 1024 * 1024  # none documented; payloads are streamed, so this only bounds garbage
KEEPALIVE_MISSES = 3
CLOSE_WAIT = 0.5          # after our CLOSE, how long the endpoint's echo (and data before it) may take
STALL_NOTE = 3.0          # silence while we wait for an answer that counts as "the endpoint stalled"
DEFAULT_BANNER_WAIT = 5.0  # below Ansible's default ConnectTimeout (10 s): our warning comes first
PREAMBLE_LIMIT = 256 * 1024  # kept for a replay; ssh sends only its banner before the server answers


@dataclass
class _Timers:
    opened: float
    last_received: Optional[float] = None     # any frame from the endpoint
    waiting_since: Optional[float] = None     # we sent something the endpoint has not answered yet
    next_ping: Optional[float] = None
    first_ping: Optional[float] = None
    ping_unanswered_since: Optional[float] = None
    warn_at: Optional[float] = None
    close_deadline: Optional[float] = None
    banner_warned: bool = False


@dataclass
class TunnelProtocol:
    """One tunnel's state machine. Construct with the time the WebSocket opened; feed it; ``take()`` effects.

    ``expect_banner``: the server speaks first (SSH): no byte within ``banner_wait`` earns a warning.
    ``can_replay``: the bytes sent before the first answer are kept, so an "Unable to connect to
    target" (a stale cached address) can be healed once on a new WebSocket.
    """

    now: float
    max_duration: Optional[float] = None
    keepalive: float = 30.0
    warn_before: Optional[float] = 60.0
    expect_banner: bool = False
    banner_wait: float = DEFAULT_BANNER_WAIT
    can_replay: bool = False
    max_message: int = MAX_MESSAGE
    mask_key: Optional[Callable[[], bytes]] = None

    bytes_up: int = field(default=0, init=False)
    bytes_down: int = field(default=0, init=False)
    outcome: Optional[Outcome] = field(default=None, init=False)

    def __post_init__(self) -> None:
        self._effects: list[Effect] = []
        self._parser = FrameParser(self.max_message)
        self._t = _Timers(opened=self.now)
        self._generation = 0
        self.phase = Phase.OPEN
        self._replayed = False  # the one replay a tunnel gets has been used
        self._message: Optional[int] = None   # opcode of the message being received, if unfinished
        self._message_size = 0
        self._pong_seen = False
        self._preamble: Optional[bytearray] = bytearray() if self.can_replay else None
        self._pending_close_error: Optional[EicProxyError] = None
        if self.keepalive > 0:
            # A first PING at once tells early whether this endpoint answers PINGs at all, so a stall
            # in the first seconds (mid-download) is already ours to find, not left to ssh.
            self._t.next_ping = self.now
        if self.max_duration and self.warn_before:
            self._t.warn_at = self.now + max(self.max_duration - min(self.warn_before, self.max_duration / 2), 0)

    # ---- outputs ---------------------------------------------------------------------------------
    def take(self) -> list[Effect]:
        effects, self._effects = self._effects, []
        return effects

    @property
    def finished(self) -> bool:
        return self.phase is Phase.FINISHED

    @property
    def mid_frame(self) -> bool:
        return self._parser.mid_frame

    def next_deadline(self) -> Optional[float]:
        """The earliest time ``tick`` has something to do (None: nothing timed is pending)."""
        if self.finished:
            return None
        t = self._t
        candidates = [t.next_ping, t.warn_at, t.close_deadline]
        if self.expect_banner and not t.banner_warned and self.bytes_down == 0:
            candidates.append(t.opened + self.banner_wait)
        return min((c for c in candidates if c is not None), default=None)

    # ---- inputs from ssh -------------------------------------------------------------------------
    def local_data(self, data: bytes, now: float) -> None:
        if self.phase is Phase.CLOSING or self.phase is Phase.FINISHED or not data:
            return
        self.bytes_up += len(data)
        if self._preamble is not None:
            if len(self._preamble) + len(data) > PREAMBLE_LIMIT:
                self._preamble = None
            else:
                self._preamble += data
        if self.phase is Phase.RECONNECTING:
            if self._preamble is None:  # too much to keep while a new WebSocket opens: give the healing up
                self._finish(EndReason.CLOSED_ERROR, self._pending_close_error)
            return
        if self._t.waiting_since is None:
            self._t.waiting_since = now
        self._send_data(data)

    def local_eof(self, now: float) -> None:
        """ssh closed its end: our CLOSE, then a short wait for the endpoint's (and the data before it)."""
        if self.phase is Phase.CLOSING or self.phase is Phase.FINISHED:
            return
        stalled = self._stalled_for(now)
        if stalled is not None:
            self._finish(EndReason.HANGUP_STALLED, self._stall_error(stalled, "ssh closed the connection"))
            return
        self.phase = Phase.CLOSING
        self._send_frame(OP_CLOSE, close_payload(CloseCode.NORMAL))
        self._t.close_deadline = now + CLOSE_WAIT

    def fail(self, error: EicProxyError, now: float) -> None:
        """The driver found a reason to stop (a host key the console did not list): end with its line."""
        self._finish(EndReason.REFUSED, error)

    def output_failed(self, now: float) -> None:
        """Writing to ssh failed: ssh is gone, nothing more to deliver; end quietly."""
        self._finish(EndReason.OUTPUT_CLOSED, None)

    def signal(self, signum: int, now: float) -> None:
        """SIGHUP (ssh is done with us), SIGTERM, SIGINT. After the outcome they only hurry the exit."""
        if self.finished:
            return
        stalled = self._stalled_for(now)
        who = {getattr(_signal, "SIGHUP", -1): "ssh hung up", _signal.SIGINT: "interrupted (SIGINT)"}.get(
            signum, f"stopped by signal {signum}")
        err = self._stall_error(stalled, who) if stalled is not None else None
        code = signal_exit_code(signum)
        if err is not None and code == ExitCode.OK:
            code = err.exit_code
        self._finish(EndReason.SIGNAL, err, exit_code=code, detail=str(signum))

    # ---- inputs from the endpoint ----------------------------------------------------------------
    def receive_bytes(self, data: Union[bytes, memoryview], now: float) -> None:
        if self.finished:
            return
        try:
            frames = self._parser.feed(data)
        except FrameError as exc:
            self._violation(f"the endpoint sent invalid WebSocket data: {exc.what}", exc.close_code)
            return
        for frame in frames:
            self.receive_frame(frame, now)
            if self.finished:
                return

    def receive_frame(self, frame: Frame, now: float) -> None:
        if self.finished:
            return
        t = self._t
        t.last_received = now
        t.waiting_since = None
        op = frame.opcode
        if op == OP_PING:
            self._send_frame(OP_PONG, frame.payload)
        elif op == OP_PONG:
            self._pong_seen = True
            t.ping_unanswered_since = None
        elif op == OP_CLOSE:
            self._on_close(frame.payload, now)
        elif op == OP_TEXT or (op == OP_CONT and self._message == OP_TEXT):
            self._violation("a TEXT frame where only binary tunnel data is allowed", CloseCode.UNSUPPORTED_DATA)
        elif op == OP_BINARY and self._message is not None:
            self._violation("a new message before the previous one ended", CloseCode.PROTOCOL_ERROR)
        elif op == OP_CONT and self._message is None:
            self._violation("a continuation frame with no message to continue", CloseCode.PROTOCOL_ERROR)
        else:
            self._message = None if frame.fin else OP_BINARY
            self._message_size = 0 if op == OP_BINARY else self._message_size
            self._message_size += len(frame.payload)
            if self._message_size > self.max_message:
                self._violation(f"a message of more than {self.max_message} bytes", CloseCode.MESSAGE_TOO_BIG)
                return
            if frame.fin:
                self._message_size = 0
            if frame.payload:
                self._deliver(frame.payload)

    def connection_lost(self, detail: str, now: float) -> None:
        """The TCP/TLS connection ended without a CLOSE (reset, EOF, TLS error)."""
        if self.finished:
            return
        if self.phase is Phase.CLOSING:
            self._finish(EndReason.EOF, None)
            return
        moved = f"after {format_bytes(self.bytes_down)} down and {format_bytes(self.bytes_up)} up"
        what = f" ({detail})" if detail else ""
        self._finish(EndReason.ENDPOINT_GONE, NetworkError(
            f"the connection to the endpoint was lost{what} {moved}",
            hint="retry; if it keeps happening, check the network path and proxies to the endpoint"))

    # ---- time ------------------------------------------------------------------------------------
    def tick(self, now: float, send_blocked_since: Optional[float] = None) -> None:
        """Deadlines: close wait, banner warning, keep-alive PINGs and misses, expiry warning; and a send
        without progress since ``send_blocked_since`` for as long as the keep-alive allows is a dead endpoint."""
        if self.finished:
            return
        t = self._t
        if t.close_deadline is not None and now >= t.close_deadline:
            self._finish(EndReason.EOF, None)
            return
        if (self.expect_banner and not t.banner_warned and self.bytes_down == 0
                and now - t.opened >= self.banner_wait):
            t.banner_warned = True
            self._note(f"warning: the tunnel is open but the instance has sent nothing for {now - t.opened:.0f} s "
                       "(an SSH server speaks first): the endpoint may not reach it (security groups, routing), "
                       "or sshd is not answering; `eic-proxy doctor HOST` checks the chain")
        if t.warn_at is not None and now >= t.warn_at and self.max_duration:
            t.warn_at = None
            self._note(f"warning: the endpoint will close this tunnel in {t.opened + self.max_duration - now:.0f} s "
                       f"(maximum duration {int(self.max_duration)} s); reconnect then, or see the README on long "
                       "sessions")
        limit = self.keepalive * KEEPALIVE_MISSES
        if self.keepalive > 0 and send_blocked_since is not None and now - send_blocked_since > limit:
            self._finish(EndReason.SEND_STALLED, NetworkTimeout(
                f"the endpoint stopped reading: nothing could be sent to it for {now - send_blocked_since:.0f} s "
                f"({format_bytes(self.bytes_up)} sent up so far)",
                hint="the endpoint or the network path to it is stuck; reconnect"))
            return
        if t.next_ping is not None and now >= t.next_ping:
            self._keepalive(now, limit)

    def _keepalive(self, now: float, limit: float) -> None:
        t = self._t
        if not self._pong_seen and t.first_ping is not None and now - t.first_ping > limit:
            t.next_ping = None  # never answered a PING: no keep-alive here, ssh's own takes over
            return
        if self._pong_seen and t.ping_unanswered_since is not None and now - t.ping_unanswered_since > limit:
            silent = now - (t.last_received or t.opened)
            self._finish(EndReason.KEEPALIVE, NetworkTimeout(
                f"the endpoint stopped answering: no reply to {KEEPALIVE_MISSES} keep-alive pings, nothing "
                f"received for {silent:.0f} s ({format_bytes(self.bytes_down)} received so far)",
                hint="the network or the endpoint is down; reconnect"))
            return
        self._send_frame(OP_PING, b"eic")
        if t.first_ping is None:
            t.first_ping = now
        if t.ping_unanswered_since is None:
            t.ping_unanswered_since = now
        t.next_ping = now + self.keepalive

    # ---- the replay on a new WebSocket -----------------------------------------------------------
    def reconnected(self, now: float) -> None:
        """The driver opened a new WebSocket: replay what ssh sent so far on it."""
        if self.phase is not Phase.RECONNECTING:
            return
        self.phase = Phase.OPEN
        self._generation += 1
        self._parser = FrameParser(self.max_message)
        self._message = None
        self._t.opened = now
        self._t.waiting_since = now if self._preamble else None
        if self._preamble:
            self._send_data(bytes(self._preamble))

    def reconnect_failed(self, error: Optional[EicProxyError], now: float) -> None:
        if self.phase is not Phase.RECONNECTING:
            return
        self._finish(EndReason.CLOSED_ERROR, error or self._pending_close_error)

    # ---- internals -------------------------------------------------------------------------------
    def _deliver(self, data: bytes) -> None:
        self._preamble = None  # the instance answered: no replay from here on
        self.bytes_down += len(data)
        self._effects.append(Write(data))  # only while not finished: every input stops there

    def _send_data(self, data: bytes) -> None:
        if len(data) <= MAX_FRAME:  # the usual case (ssh's reads are smaller): no copy
            self._send_frame(OP_BINARY, data)
            return
        view = memoryview(data)
        for i in range(0, len(view), MAX_FRAME):
            self._send_frame(OP_BINARY, bytes(view[i:i + MAX_FRAME]))

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        key = self.mask_key() if self.mask_key is not None else None
        self._effects.append(Send(encode(opcode, payload, key), self._generation))

    def _note(self, text: str) -> None:
        self._effects.append(Note(f"eic-proxy: {text}"))

    def _on_close(self, payload: bytes, now: float) -> None:
        if len(payload) == 1:
            self._violation("a malformed close frame (one byte)", CloseCode.PROTOCOL_ERROR)
            return
        code = int.from_bytes(payload[:2], "big") if payload else None
        reason = payload[2:].decode("utf-8", "replace")
        elapsed = now - self._t.opened
        closing = self.phase is Phase.CLOSING
        err = close_error(code, reason, elapsed, None if closing else self.max_duration)
        if closing:
            self._finish(EndReason.EOF if err is None else EndReason.CLOSED_ERROR, err, echo=False)
            return
        if (err is not None and err.exit_code == ExitCode.TARGET_UNREACHABLE and self._preamble is not None
                and not self._replayed):
            self._replayed = True
            self.phase = Phase.RECONNECTING
            self._pending_close_error = err
            self._effects.append(Reconnect())
            return
        self._finish(EndReason.CLOSED if err is None else EndReason.CLOSED_ERROR, err, close_code=code)

    def _violation(self, what: str, close_code: int) -> None:
        self._finish(EndReason.PROTOCOL, ProtocolError(
            what if what.startswith("the endpoint") else f"the endpoint sent {what}",
            hint="this is not an EC2 Instance Connect Endpoint, or a proxy is interfering; retry with -v"),
            close_code=close_code)

    def _stalled_for(self, now: float) -> Optional[float]:
        """How long the endpoint has left something of ours unanswered, if that counts as a stall."""
        t = self._t
        since = t.waiting_since
        if self._pong_seen and t.ping_unanswered_since is not None:
            since = min(since, t.ping_unanswered_since) if since is not None else t.ping_unanswered_since
        if self.expect_banner and self.bytes_down == 0:
            since = t.opened if since is None else min(since, t.opened)
        if since is None or now - since < STALL_NOTE:
            return None
        return now - since

    def _stall_error(self, stalled: float, what_happened: str) -> NetworkTimeout:
        if self.bytes_down == 0:
            where = "before the instance sent anything: the endpoint may not reach it (security groups, " \
                    "routing) or its SSH server does not answer; `eic-proxy doctor HOST` checks the chain"
        else:
            where = f"after {format_bytes(self.bytes_down)} received: the endpoint or the network path stalled"
        return NetworkTimeout(f"{what_happened} while the endpoint had not answered for {stalled:.0f} s, {where}")

    def _finish(self, reason: EndReason, error: Optional[EicProxyError], exit_code: Optional[int] = None,
                close_code: Optional[int] = CloseCode.NORMAL, echo: bool = True, detail: str = "") -> None:
        if self.finished:
            return
        closed_already = self.phase is Phase.CLOSING
        self.phase = Phase.FINISHED
        code = exit_code if exit_code is not None else (int(error.exit_code) if error is not None else ExitCode.OK)
        self.outcome = Outcome(reason.value + (f":{detail}" if detail else ""), int(code), error)
        if error is not None:
            self._effects.append(Say(error_line(error.message, error.hint)))
        self._effects.append(CloseOutput())
        if echo and not closed_already:
            if isinstance(error, TunnelClosed) or reason is EndReason.CLOSED:
                close_code = CloseCode.NORMAL  # echo the endpoint's CLOSE without repeating its error
            self._send_frame(OP_CLOSE, close_payload(close_code if close_code is not None else CloseCode.NORMAL))
        self._effects.append(Done(self.outcome))

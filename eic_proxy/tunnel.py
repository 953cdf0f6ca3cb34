"""The WebSocket to the endpoint and the full-duplex byte pump between it and a pair of file descriptors.

Two threads, one per direction, each with plain blocking reads (no ``select`` on stdin, so Windows
pipes work). Policy (frame sizes, close meanings, handshake errors) lives in ``protocol.py``.
"""
from __future__ import annotations

import errno
import logging
import os
import signal
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from . import __version__
from .errors import EicProxyError, ExitCode, NetworkError, ProtocolError
from .protocol import MAX_FRAME, close_outcome, handshake_error, parse_close_payload

log = logging.getLogger(__name__)

DEFAULT_KEEPALIVE = 30.0
KEEPALIVE_MISSES = 3
DEFAULT_EXPIRY_WARNING = 60.0

# After our CLOSE, how long to wait for the endpoint's CLOSE (and the data queued before it).
CLOSE_WAIT = 0.5
DEFAULT_HANDSHAKE_TIMEOUT = 15.0


def open_websocket(url: str, ca_bundle: Optional[str] = None, timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
                   max_duration_sent: bool = False) -> Any:
    """TLS + HTTP upgrade to the presigned URL; every failure becomes an EicProxyError.

    TLS is always verified; ``ca_bundle`` (AWS_CA_BUNDLE / profile ca_bundle) only replaces the trust store.
    """
    import websocket

    sslopt: dict[str, Any] = {"cert_reqs": ssl.CERT_REQUIRED, "check_hostname": True}
    if ca_bundle:
        sslopt["ca_certs"] = ca_bundle
    host = url.split("/", 3)[2].split("?")[0]
    from .proxy import proxy_for

    proxy = proxy_for(url)
    proxy_opts: dict[str, Any] = {"http_no_proxy": ["*"]}  # never let the library read the env on its own
    if proxy is not None:
        proxy_opts = {"http_proxy_host": proxy.host, "http_proxy_port": proxy.port, "proxy_type": "http",
                      "http_proxy_auth": proxy.auth}
        log.debug("= via proxy %s:%d", proxy.host, proxy.port)
    try:
        ws = websocket.create_connection(
            url,
            timeout=timeout,
            sslopt=sslopt,
            **proxy_opts,
            enable_multithread=True,
            skip_utf8_validation=True,
            suppress_origin=True,
            header=[f"User-Agent: eic-proxy/{__version__}"],
        )
    except websocket.WebSocketProxyException as exc:
        where = f"{proxy.host}:{proxy.port}" if proxy else "the proxy"
        raise NetworkError(f"the proxy {where} refused the tunnel to {host}: {exc}",
                           hint="check HTTPS_PROXY (and its user:password) and NO_PROXY") from exc
    except websocket.WebSocketBadStatusException as exc:
        # Never show str(exc): it carries the response headers. The JSON body has the Message.
        raise handshake_error(exc.status_code, exc.resp_body or b"", max_duration_sent) from exc
    except ssl.SSLCertVerificationError as exc:
        raise NetworkError(f"TLS certificate of the endpoint {host} is not trusted: {exc.verify_message}",
                           hint="if you use a TLS-inspecting proxy or a test endpoint, set AWS_CA_BUNDLE to its CA",
                           exit_code=ExitCode.TLS) from exc
    except ssl.SSLError as exc:
        raise NetworkError(f"TLS handshake with the endpoint {host} failed: {exc.reason or exc}",
                           hint="check proxies and AWS_CA_BUNDLE", exit_code=ExitCode.TLS) from exc
    except socket.gaierror as exc:
        raise NetworkError(f"DNS lookup of the endpoint {host} failed: {exc.strerror}",
                           hint="check DNS and the network; the endpoint's DNS name must resolve") from exc
    except (socket.timeout, websocket.WebSocketTimeoutException) as exc:
        raise NetworkError(f"timed out connecting to the endpoint {host}", hint="check the network and proxies",
                           exit_code=ExitCode.TIMEOUT) from exc
    except (ConnectionError, OSError) as exc:
        if proxy is not None:
            raise NetworkError(f"cannot connect to the proxy {proxy.host}:{proxy.port}: {exc.strerror or exc}",
                               hint="check HTTPS_PROXY, or add the endpoint to NO_PROXY") from exc
        raise NetworkError(f"cannot connect to the endpoint {host}: {exc.strerror or exc}",
                           hint="check the network, proxies and firewall for outbound HTTPS (443)") from exc
    except websocket.WebSocketException as exc:
        raise ProtocolError(f"bad WebSocket handshake from the endpoint {host}: {exc}",
                            hint="a proxy may be interfering; retry with -v") from exc
    ws.settimeout(None)
    _guard_frame_size(ws)
    return ws


# Frames from the endpoint are at most 65 000 bytes in practice (§4.2); no limit is documented, so
# be generous, but never let a garbage length header make us buffer gigabytes.
MAX_INCOMING_FRAME = 16 * 1024 * 1024


def _guard_frame_size(ws: Any) -> None:
    import websocket

    fb = getattr(ws, "frame_buffer", None)
    if fb is None or not hasattr(fb, "recv_length"):
        return
    original = fb.recv_length

    def recv_length() -> None:
        original()
        if fb.length is not None and fb.length > MAX_INCOMING_FRAME:
            raise websocket.WebSocketPayloadException(
                f"frame of {fb.length} bytes is over the {MAX_INCOMING_FRAME}-byte limit")

    fb.recv_length = recv_length


@dataclass
class PumpResult:
    """How a tunnel ended, plus byte counts for the audit log."""

    error: Optional[EicProxyError] = None
    bytes_up: int = 0
    bytes_down: int = 0
    reason: str = "eof"
    duration: float = 0.0


@dataclass
class _State:
    done: threading.Event = field(default_factory=threading.Event)
    result: PumpResult = field(default_factory=PumpResult)
    lock: threading.Lock = field(default_factory=threading.Lock)
    finished: bool = False
    closing: bool = False  # we sent CLOSE first: the endpoint's CLOSE is just its echo
    last_pong: Optional[float] = None
    unanswered_since: Optional[float] = None  # when the oldest PING not yet answered went out

    def finish(self, reason: str, error: Optional[EicProxyError] = None) -> None:
        with self.lock:
            if self.finished:
                return
            self.finished = True
            self.result.reason = reason
            self.result.error = error
        self.done.set()


def _write_all(fd: int, data: bytes) -> None:
    mv = memoryview(data)
    while mv:
        n = os.write(fd, mv)
        mv = mv[n:]


class _Link:
    """The current WebSocket, replaceable once while the endpoint has sent us nothing yet.

    Until the first byte arrives from the instance, everything sent up is also kept (``preamble``):
    if the endpoint then says it cannot reach the target (a stale cached IP), a new WebSocket to the
    re-resolved target gets the same bytes and ssh never notices. Appending and sending happen under
    one lock, and the swap replays and switches under it too, so no byte is lost or sent twice.
    """

    def __init__(self, ws: Any, can_retry: bool) -> None:
        self.ws = ws
        self.lock = threading.Lock()
        self.swapped = threading.Condition(self.lock)
        self.preamble: Optional[bytearray] = bytearray() if can_retry else None

    def send(self, data: bytes) -> None:
        with self.lock:
            if self.preamble is not None:
                if len(self.preamble) + len(data) > PREAMBLE_LIMIT:
                    self.preamble = None
                else:
                    self.preamble += data
            ws = self.ws
            try:
                ws.send_binary(data)
            except Exception:
                if self.preamble is None:
                    raise
                # The old socket died before any reply: wait for the swap (or the end), the bytes are kept.
                self.swapped.wait(RECONNECT_WAIT)
                if self.ws is ws:
                    raise

    def got_data(self) -> None:
        if self.preamble is not None:
            with self.lock:
                self.preamble = None

    def swap(self, new_ws: Any) -> None:
        with self.lock:
            if self.preamble:
                new_ws.send_binary(bytes(self.preamble))
            old, self.ws = self.ws, new_ws
            self.swapped.notify_all()
        try:
            old.shutdown()
        except Exception:
            pass


# Bytes kept for a replay; ssh sends only its version banner before the server answers.
PREAMBLE_LIMIT = 256 * 1024
RECONNECT_WAIT = 60.0


def pump(ws: Any, in_fd: int, out_fd: int, max_duration: Optional[float] = None,
         on_close_out: Optional[Callable[[], None]] = None,
         reconnect: Optional[Callable[[], Optional[Any]]] = None,
         keepalive: float = DEFAULT_KEEPALIVE, warn_before: Optional[float] = DEFAULT_EXPIRY_WARNING) -> PumpResult:
    """Move bytes both ways until either side ends; return how it ended.

    Local EOF → our CLOSE, a short wait for the endpoint's CLOSE, done. Endpoint CLOSE → the output
    is closed (ssh sees EOF at once) and the close code decides the outcome. Everything received
    before a close is written out before we return.

    ``reconnect`` is called at most once, when the endpoint cannot reach the target before any byte
    came back; it returns a new WebSocket (or None to give up), which continues the same stream.

    ``keepalive``: seconds between WebSocket PINGs (0: none). An endpoint that answered PINGs and
    then misses ``KEEPALIVE_MISSES`` in a row is declared dead; one that never answers is assumed
    not to support them and is left to ssh's own ServerAliveInterval. ``warn_before``: one stderr
    line this many seconds before ``max_duration`` runs out.
    """
    state = _State()
    started = time.monotonic()
    debug = log.isEnabledFor(logging.DEBUG)
    link = _Link(ws, reconnect is not None)

    def uplink() -> None:
        buf = bytearray(MAX_FRAME)
        view = memoryview(buf)
        try:
            while True:
                n = os.readv(in_fd, [buf]) if hasattr(os, "readv") else _readinto(in_fd, buf)
                if n == 0:
                    break
                link.send(bytes(view[:n]))
                state.result.bytes_up += n
                if debug:
                    log.debug("> binary %d bytes", n)
        except OSError as exc:
            if state.finished:
                return
            if isinstance(exc, (BrokenPipeError, ConnectionResetError)) or exc.errno in (errno.EPIPE, errno.ECONNRESET):
                state.finish("endpoint-gone", NetworkError("the connection to the endpoint was lost",
                                                           hint="retry; check the network"))
            else:
                state.finish("input-error", NetworkError(f"reading from ssh failed: {exc}"))
            return
        except Exception as exc:  # websocket-client raises its own types for a dead socket
            if not state.finished:
                state.finish("endpoint-gone", NetworkError(f"the connection to the endpoint was lost: {exc}",
                                                           hint="retry; check the network"))
            return
        if debug:
            log.debug("= local EOF, closing")
        state.closing = True
        _send_close(link.ws)
        # Give the endpoint a moment to echo the CLOSE; the downlink delivers what precedes it.
        state.done.wait(CLOSE_WAIT)
        state.finish("eof")

    def downlink() -> None:
        import websocket

        nonlocal reconnect
        ws = link.ws
        try:
            while True:
                opcode, data = ws.recv_data(control_frame=True)
                if opcode == websocket.ABNF.OPCODE_BINARY or opcode == websocket.ABNF.OPCODE_CONT:
                    if data:
                        link.got_data()
                        try:
                            _write_all(out_fd, data)
                        except OSError:
                            # ssh closed its end: nothing more to deliver, end quietly.
                            _send_close(ws)
                            state.finish("output-closed")
                            return
                        state.result.bytes_down += len(data)
                        if debug:
                            log.debug("< binary %d bytes", len(data))
                elif opcode == websocket.ABNF.OPCODE_TEXT:
                    _send_close(ws, 1003)
                    state.finish("protocol", ProtocolError(
                        "the endpoint sent a TEXT frame where only binary tunnel data is allowed",
                        hint="this is not an EC2 Instance Connect Endpoint, or a proxy is interfering"))
                    return
                elif opcode == websocket.ABNF.OPCODE_CLOSE:
                    code, reason = parse_close_payload(data or b"")
                    if debug:
                        log.debug("< close %s %r", code, reason)
                    # After our own CLOSE the endpoint's is an echo, unless it carries an error of its own.
                    err = close_outcome(code, reason, time.monotonic() - started,
                                        None if state.closing else max_duration)
                    if (err is not None and err.exit_code == ExitCode.TARGET_UNREACHABLE and reconnect is not None
                            and link.preamble is not None and not state.closing):
                        retry, reconnect = reconnect, None
                        try:
                            new_ws = retry()
                        except EicProxyError as exc:
                            new_ws, err = None, exc
                        if new_ws is not None:
                            link.swap(new_ws)
                            ws = new_ws
                            continue
                    state.finish(("eof" if state.closing else "closed") if err is None else "closed-error", err)
                    return
                elif opcode == websocket.ABNF.OPCODE_PONG:
                    state.last_pong = time.monotonic()
                    state.unanswered_since = None
                # PING: websocket-client already answered it.
        except EicProxyError as exc:
            state.finish("protocol", exc)
        except Exception as exc:
            if state.finished:
                return
            state.finish("endpoint-gone", _classify_recv_error(exc))

    def monitor() -> None:
        """PINGs for liveness, and the one warning before the endpoint's maxTunnelDuration cut."""
        warn_at = None
        if max_duration and warn_before:
            warn_at = started + max(max_duration - min(warn_before, max_duration / 2), 0)
        next_ping = started + keepalive if keepalive > 0 else None
        first_ping_at: Optional[float] = None
        while True:
            now = time.monotonic()
            deadlines = [t for t in (warn_at, next_ping) if t is not None]
            if not deadlines:
                return
            if state.done.wait(max(min(deadlines) - now, 0)):
                return
            now = time.monotonic()
            if warn_at is not None and now >= warn_at:
                log.warning("the endpoint will close this tunnel in %.0f s (maximum duration %d s); "
                            "reconnect then, or see the README on long sessions", started + max_duration - now,
                            int(max_duration))
                warn_at = None
            if next_ping is not None and now >= next_ping:
                if state.last_pong is None and first_ping_at is not None \
                        and now - first_ping_at > keepalive * KEEPALIVE_MISSES:
                    log.debug("endpoint does not answer PINGs; leaving liveness to ssh")
                    next_ping = None
                    continue
                waiting = state.unanswered_since
                if state.last_pong is not None and waiting is not None and now - waiting > keepalive * KEEPALIVE_MISSES:
                    _send_close(link.ws, 1001)
                    state.finish("keepalive", NetworkError(
                        f"the endpoint stopped answering (no reply to {KEEPALIVE_MISSES} keep-alive pings)",
                        hint="the network or the endpoint is down; reconnect", exit_code=ExitCode.TIMEOUT))
                    return
                try:
                    link.ws.ping(b"eic")
                except Exception:
                    pass
                if first_ping_at is None:
                    first_ping_at = now
                if state.unanswered_since is None:
                    state.unanswered_since = now
                next_ping = now + keepalive

    restore = _install_signal_handlers(lambda signum: (_send_close(link.ws), state.finish(f"signal:{signum}")))
    up = threading.Thread(target=uplink, name="eic-uplink", daemon=True)
    down = threading.Thread(target=downlink, name="eic-downlink", daemon=True)
    mon = threading.Thread(target=monitor, name="eic-monitor", daemon=True)
    up.start()
    down.start()
    mon.start()
    try:
        state.done.wait()
    finally:
        restore()
    # Close our output first so ssh sees EOF immediately, then drop the socket.
    if on_close_out is not None:
        on_close_out()
    try:
        link.ws.shutdown()
    except Exception:
        pass
    state.result.duration = time.monotonic() - started
    return state.result


# ssh ends its ProxyCommand with SIGHUP; Ctrl-C and service managers send SIGINT/SIGTERM.
_CLEAN_SIGNALS = tuple(getattr(signal, n) for n in ("SIGHUP", "SIGTERM", "SIGINT") if hasattr(signal, n))


def _install_signal_handlers(on_signal: Callable[[int], Any]) -> Callable[[], None]:
    """Close the WebSocket properly on a signal instead of dying mid-frame; returns an undo function."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {}
    for sig in _CLEAN_SIGNALS:
        try:
            previous[sig] = signal.signal(sig, lambda signum, _frame: on_signal(signum))
        except (ValueError, OSError):  # pragma: no cover - not settable here
            pass

    def restore() -> None:
        for sig, handler in previous.items():
            try:
                signal.signal(sig, handler)
            except (ValueError, OSError):  # pragma: no cover
                pass

    return restore


def _readinto(fd: int, buf: bytearray) -> int:  # pragma: no cover - platforms without os.readv (Windows)
    data = os.read(fd, len(buf))
    buf[: len(data)] = data
    return len(data)


def _send_close(ws: Any, code: int = 1000) -> None:
    try:
        ws.send_close(code)
    except Exception:
        pass


def _classify_recv_error(exc: BaseException) -> EicProxyError:
    import websocket

    if isinstance(exc, websocket.WebSocketProtocolException) or isinstance(exc, websocket.WebSocketPayloadException):
        return ProtocolError(f"the endpoint sent invalid WebSocket data: {exc}",
                             hint="a proxy may be interfering; retry with -v")
    if isinstance(exc, (websocket.WebSocketTimeoutException, socket.timeout)):
        return NetworkError("the endpoint stopped answering", hint="check the network",
                            exit_code=ExitCode.TIMEOUT)
    return NetworkError(f"the connection to the endpoint was lost: {exc.__class__.__name__}",
                        hint="retry; check the network")

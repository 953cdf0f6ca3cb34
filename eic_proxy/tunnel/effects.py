"""What ``TunnelProtocol`` hands its driver: the effects, in order, and the outcome of a tunnel.

Plain records and the formatting shared with ``cli`` (the one-line error) and the audit listing.
"""
from __future__ import annotations

import signal as _signal
from dataclasses import dataclass
from enum import Enum
from typing import Optional, Union

from eic_proxy.errors import EicProxyError, ExitCode


class Phase(Enum):
    """Where the tunnel is: the protocol's whole state besides its counters and timers."""

    OPEN = "open"                  # bytes flow both ways
    CLOSING = "closing"            # we sent CLOSE: the endpoint's CLOSE is its echo
    RECONNECTING = "reconnecting"  # the target was unreachable: a new WebSocket is opening for the replay
    FINISHED = "finished"          # ``outcome`` is decided; inputs are ignored


class EndReason(Enum):
    """Why a tunnel ended: the ``reason`` of its outcome and of the audit log's ``disconnect`` entry."""

    EOF = "eof"                        # a clean end after ssh closed its side
    CLOSED = "closed"                  # the endpoint closed normally
    CLOSED_ERROR = "closed-error"      # the endpoint closed with an error (unreachable, expired, ...)
    REFUSED = "refused"                # we refused to go on (a host key the console did not list)
    OUTPUT_CLOSED = "output-closed"    # ssh stopped reading
    SIGNAL = "signal"                  # SIGHUP, SIGTERM or SIGINT (the reason says which: signal:N)
    HANGUP_STALLED = "hangup-stalled"  # ssh closed while the endpoint had stalled
    ENDPOINT_GONE = "endpoint-gone"    # TCP/TLS ended without a CLOSE
    SEND_STALLED = "send-stalled"      # the endpoint stopped reading
    KEEPALIVE = "keepalive"            # the endpoint stopped answering pings
    PROTOCOL = "protocol"              # the endpoint broke RFC 6455


@dataclass(frozen=True)
class Outcome:
    """How the tunnel ended: ``reason`` for the audit log, the exit code, and the error if it failed."""

    reason: str
    exit_code: int
    error: Optional[EicProxyError] = None


@dataclass(frozen=True)
class Send:
    data: bytes
    generation: int  # the WebSocket it belongs to: frames of a replaced one are dropped, not sent


@dataclass(frozen=True)
class Write:
    data: bytes


@dataclass(frozen=True)
class Note:
    text: str  # a warning; the tunnel goes on


@dataclass(frozen=True)
class Say:
    text: str  # the one diagnostic line, already formatted


@dataclass(frozen=True)
class CloseOutput:
    pass


@dataclass(frozen=True)
class Reconnect:
    pass  # the driver opens a new WebSocket and calls reconnected() or reconnect_failed()


@dataclass(frozen=True)
class Done:
    outcome: Outcome


Effect = Union[Send, Write, Note, Say, CloseOutput, Reconnect, Done]


def signal_exit_code(signum: int) -> int:
    """0 for ssh's SIGHUP (its normal way to end us); 128+N for the rest, as shells expect."""
    if signum == getattr(_signal, "SIGHUP", -1):
        return ExitCode.OK
    return ExitCode(128 + signum) if 128 + signum in ExitCode._value2member_map_ else 128 + signum


def format_bytes(n: int) -> str:
    """1536 → "1.5 KiB": byte counts in error lines and the audit listing."""
    size = float(n)
    for unit in ("B", "KiB", "MiB"):
        if size < 1024:
            return f"{n} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"

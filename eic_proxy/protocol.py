"""Pure tunnel policy: frame sizes, close codes, handshake failures. No sockets, no threads, no clock.

Mirrors websockets' sans-I/O split: ``tunnel.py`` owns the I/O and asks this module what things mean.
"""
from __future__ import annotations

import json
from enum import IntEnum
from typing import Optional

from .errors import ExitCode, HandshakeError, ProtocolError, TunnelClosed

# The official client sends at most 65 000 bytes per BINARY frame (eice-protocol.md §4.2).
MAX_FRAME = 65000
# The endpoint never sends frames larger than the client's; anything far bigger is garbage or an attack.
MAX_INCOMING_FRAME = 16 * 1024 * 1024


class CloseCode(IntEnum):
    NORMAL_CLOSURE = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    NO_STATUS_RCVD = 1005
    ABNORMAL_CLOSURE = 1006
    INVALID_DATA = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    MANDATORY_EXTENSION = 1010
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013
    BAD_GATEWAY = 1014


CLOSE_EXPLANATIONS = {
    1000: "normal closure",
    1001: "going away",
    1002: "protocol error",
    1003: "unsupported data",
    1005: "no status received",
    1006: "abnormal closure",
    1007: "invalid data",
    1008: "policy violation",
    1009: "message too big",
    1010: "mandatory extension",
    1011: "internal error",
    1012: "service restart",
    1013: "try again later",
    1014: "bad gateway",
}

UNREACHABLE_HINT = (
    "the endpoint could not open TCP to the instance: allow inbound on that port in the instance's security "
    "group from the endpoint's security group or subnet (or, if the endpoint preserves client IPs, from your "
    "own public address), allow the endpoint's security group outbound to it, and check sshd listens there"
)


def describe_close(code: Optional[int], reason: str) -> str:
    """Render a close like websockets' ``Close.__str__``: "1011 (internal error) reason"."""
    if code is None:
        return "no close code"
    text = f"{code} ({CLOSE_EXPLANATIONS.get(code, 'private use' if code >= 3000 else 'unknown')})"
    return f"{text} {reason}".rstrip() if reason else text


def parse_close_payload(payload: bytes) -> tuple[Optional[int], str]:
    """Split a CLOSE payload into (code, reason); empty means no code, one byte is a protocol error."""
    if not payload:
        return None, ""
    if len(payload) < 2:
        raise ProtocolError("the endpoint sent a malformed close frame", hint="retry; report it if it persists")
    code = int.from_bytes(payload[:2], "big")
    return code, payload[2:].decode("utf-8", "replace")


def close_outcome(code: Optional[int], reason: str, elapsed: float,
                  max_duration: Optional[float]) -> Optional[TunnelClosed]:
    """What a server CLOSE means: None for a normal end, else the error to report.

    The close sent at maxTunnelDuration is undocumented (§4.3), so expiry is recognised by time:
    any close arriving within a few seconds of the limit is reported as expiry, whatever its code.
    """
    if max_duration is not None and elapsed >= max_duration - min(2.0, max_duration * 0.05):
        return TunnelClosed(
            f"the tunnel reached its maximum duration of {int(max_duration)} s and was closed by the endpoint",
            hint="reconnect; for long sessions use ControlMaster/ControlPersist and ServerAliveInterval (README)",
            exit_code=ExitCode.TUNNEL_EXPIRED,
        )
    if code is None or code == CloseCode.NORMAL_CLOSURE:
        return None
    text = describe_close(code, reason)
    if "unable to connect to target" in reason.lower() or "connection refused" in reason.lower():
        return TunnelClosed(f"endpoint closed the tunnel: {text}", hint=UNREACHABLE_HINT,
                            exit_code=ExitCode.TARGET_UNREACHABLE)
    if code in (CloseCode.TRY_AGAIN_LATER, CloseCode.SERVICE_RESTART, CloseCode.GOING_AWAY):
        return TunnelClosed(f"endpoint closed the tunnel: {text}", hint="retry in a moment")
    return TunnelClosed(f"endpoint closed the tunnel: {text}", hint="retry; run with -v for details")


def parse_error_body(body: bytes) -> tuple[Optional[str], Optional[str]]:
    """The ``{"ErrorCode", "Message"}`` JSON the endpoint sends with a refused handshake (§3.3)."""
    try:
        doc = json.loads(body.decode("utf-8", "replace")) if body else None
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        text = body.decode("utf-8", "replace").strip()[:200] if body else None
        return None, (text or None)
    code = doc.get("ErrorCode") or doc.get("__type") or doc.get("Code")
    msg = doc.get("Message") or doc.get("message")
    return (str(code) if code else None), (str(msg) if msg else None)


def handshake_error(status: int, body: bytes, max_duration_sent: bool = False) -> HandshakeError:
    """Map a refused upgrade (status + JSON body) to an error with the service's Message and a hint."""
    code, msg = parse_error_body(body)
    shown = msg or code or f"HTTP {status}"
    label = f"endpoint refused the tunnel (HTTP {status}{', ' + code if code else ''}): {shown}"
    low = f"{code or ''} {msg or ''}".lower()
    if "expired" in low or "request has expired" in low:
        return HandshakeError(label, hint="the presigned URL expired before the handshake: check the system clock",
                              exit_code=ExitCode.SIGNATURE_EXPIRED, status=status, error_code=code)
    if "signature" in low or "invalidsignature" in low or "credential" in low and status == 403:
        return HandshakeError(label, hint="the request signature was rejected: check the credentials "
                                          "(secret key, session token) and the region",
                              exit_code=ExitCode.SIGNATURE_REJECTED, status=status, error_code=code)
    if "accessdenied" in low or "not authorized" in low or status == 401 or (status == 403 and not code):
        extra = "" if max_duration_sent else (
            "; if the policy limits ec2-instance-connect:maxTunnelDuration, pass --max-tunnel-duration")
        return HandshakeError(label, hint="your IAM identity needs ec2-instance-connect:OpenTunnel on this "
                                          "endpoint (`eic-proxy policy` prints one)" + extra,
                              exit_code=ExitCode.ACCESS_DENIED, status=status, error_code=code)
    if status == 403:
        return HandshakeError(label, hint="check credentials, region and IAM permissions",
                              exit_code=ExitCode.SIGNATURE_REJECTED, status=status, error_code=code)
    if status == 429 or "throttl" in low or "limit" in low:
        return HandshakeError(label, hint="the endpoint allows 20 concurrent connections; retry in a moment",
                              exit_code=ExitCode.SERVICE_UNAVAILABLE, status=status, error_code=code)
    if status >= 500:
        return HandshakeError(label, hint="the service had a problem; retry in a moment",
                              exit_code=ExitCode.SERVICE_UNAVAILABLE, status=status, error_code=code)
    if "invalidparameter" in low or "port" in low:
        return HandshakeError(label, hint="check the port (the endpoint may allow only 22 and 3389) and the target",
                              exit_code=ExitCode.HANDSHAKE_REJECTED, status=status, error_code=code)
    return HandshakeError(label, hint="run with -v for details", status=status, error_code=code)


def split_frames(data: bytes, limit: int = MAX_FRAME) -> list[memoryview]:
    """Cut a chunk into frame payloads of at most ``limit`` bytes, in order, without copying."""
    mv = memoryview(data)
    return [mv[i:i + limit] for i in range(0, len(mv), limit)] or []

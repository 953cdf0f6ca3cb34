"""What the endpoint's refusals and closes mean for the user: pure mapping, no I/O.

A refused upgrade carries an HTTP status and a JSON body ``{"ErrorCode", "Message"}``; a closed
tunnel carries a close code and a reason (docs/protocol.md §3.2, §4.3). Both become one
EicProxyError with the service's words (sanitised: they reach a terminal), a hint and an exit code.
Classification goes by ``ErrorCode`` through a table; the message is read only where one code
covers several causes (AccessDeniedException is also what an expired URL gets) or no code came.
"""
from __future__ import annotations

import json
import re
from typing import Optional

from eic_proxy.errors import (
    CredentialsError,
    EicProxyError,
    EndpointBusy,
    ExitCode,
    HandshakeDenied,
    HandshakeError,
    SignatureExpired,
    SignatureRejected,
    TargetUnreachable,
    TunnelClosed,
    TunnelExpired,
)
from eic_proxy.tunnel.wsframes import CloseCode

CLOSE_EXPLANATIONS: dict[int, str] = {code: code.name.lower().replace("_", " ") for code in CloseCode}
CLOSE_EXPLANATIONS[CloseCode.NO_STATUS] = "no status received"
CLOSE_EXPLANATIONS[CloseCode.ABNORMAL] = "abnormal closure"
CLOSE_EXPLANATIONS[CloseCode.NORMAL] = "normal closure"
RETRY_LATER_CODES = (CloseCode.GOING_AWAY, CloseCode.SERVICE_RESTART, CloseCode.TRY_AGAIN_LATER)

UNREACHABLE_HINT = (
    "the endpoint could not open TCP to the instance: allow inbound on that port in the instance's security "
    "group from the endpoint's security group or subnet (or, if the endpoint preserves client IPs, from your "
    "own public address), allow the endpoint's security group outbound to it, and check sshd listens there"
)
PORT_RULE_HINT = "the endpoint accepts remote ports 22 and 3389; for other ports forward through ssh (ssh -L)"
SERVER_TEXT_LIMIT = 300
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def clean_text(text: str, limit: int = SERVER_TEXT_LIMIT) -> str:
    """Server text made safe for one terminal line: control characters escaped, length capped.

    ESC sequences or a newline in a close reason or an error Message would otherwise reach the
    user's terminal raw (escape injection, or a second line that looks like ours).
    """
    text = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 256
                        else f"\\u{ord(m.group()):04x}", text)
    return text if len(text) <= limit else text[:limit] + "…"


def describe_close(code: Optional[int], reason: str) -> str:
    """Render a close like websockets' ``Close.__str__``: "1011 (internal error) reason"."""
    if code is None:
        return "no close code"
    text = f"{code} ({CLOSE_EXPLANATIONS.get(code, 'private use' if code >= 3000 else 'unknown')})"
    reason = clean_text(reason)
    return f"{text} {reason}".rstrip() if reason else text


def close_error(code: Optional[int], reason: str, elapsed: float,
                max_duration: Optional[float]) -> Optional[TunnelClosed]:
    """What a server CLOSE means: None for a normal end, else the error to report.

    The close sent at maxTunnelDuration is undocumented, so expiry is recognised by time: any close
    arriving within a few seconds of the limit is reported as expiry, whatever its code.
    """
    if max_duration is not None and elapsed >= max_duration - min(2.0, max_duration * 0.05):
        return TunnelExpired(
            f"the tunnel reached its maximum duration of {int(max_duration)} s and was closed by the endpoint",
            hint="reconnect; for long sessions use ControlMaster/ControlPersist and ServerAliveInterval (README)",
        )
    if code is None or code == CloseCode.NORMAL:
        return None
    text = f"endpoint closed the tunnel: {describe_close(code, reason)}"
    low = reason.lower()
    if "unable to connect to target" in low or "connection refused" in low:
        return TargetUnreachable(text, hint=UNREACHABLE_HINT)
    if code in RETRY_LATER_CODES:
        return TunnelClosed(text, hint="retry in a moment")
    return TunnelClosed(text, hint="retry; run with -v for details")


def parse_error_body(body: bytes) -> tuple[Optional[str], Optional[str]]:
    """The ``{"ErrorCode", "Message"}`` JSON of a refused handshake; tolerant of anything else."""
    try:
        doc = json.loads(body.decode("utf-8", "replace")) if body else None
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        text = body.decode("utf-8", "replace").strip() if body else ""
        return None, (clean_text(text, 200) or None)
    code = doc.get("ErrorCode") or doc.get("__type") or doc.get("Code")
    msg = doc.get("Message") or doc.get("message")
    code_s = clean_text(str(code).rsplit("#", 1)[-1], 80) if code else None
    return code_s, (clean_text(str(msg)) if msg else None)


# ErrorCode → (exit code, hint). "denied" is refined by the message (expiry, signature).
_DENIED = "denied"
ERROR_CODES: dict[str, tuple[ExitCode, str]] = {
    "AccessDeniedException": (ExitCode.ACCESS_DENIED, _DENIED),
    "AccessDenied": (ExitCode.ACCESS_DENIED, _DENIED),
    "UnauthorizedOperation": (ExitCode.ACCESS_DENIED, _DENIED),
    "InvalidSignatureException": (ExitCode.SIGNATURE_REJECTED, "signature"),
    "SignatureDoesNotMatch": (ExitCode.SIGNATURE_REJECTED, "signature"),
    "IncompleteSignature": (ExitCode.SIGNATURE_REJECTED, "signature"),
    "MissingAuthenticationToken": (ExitCode.SIGNATURE_REJECTED, "signature"),
    "UnrecognizedClientException": (ExitCode.SIGNATURE_REJECTED, "signature"),
    "InvalidClientTokenId": (ExitCode.SIGNATURE_REJECTED, "signature"),
    "RequestExpired": (ExitCode.SIGNATURE_EXPIRED, "expired"),
    "ExpiredToken": (ExitCode.CREDENTIALS, "token"),
    "ExpiredTokenException": (ExitCode.CREDENTIALS, "token"),
    "ThrottlingException": (ExitCode.SERVICE_UNAVAILABLE, "busy"),
    "TooManyRequestsException": (ExitCode.SERVICE_UNAVAILABLE, "busy"),
    "TooManyConnections": (ExitCode.SERVICE_UNAVAILABLE, "busy"),
    "LimitExceededException": (ExitCode.SERVICE_UNAVAILABLE, "busy"),
    "ServiceQuotaExceededException": (ExitCode.SERVICE_UNAVAILABLE, "busy"),
    "InternalServerError": (ExitCode.SERVICE_UNAVAILABLE, "service"),
    "InternalServerException": (ExitCode.SERVICE_UNAVAILABLE, "service"),
    "InternalFailure": (ExitCode.SERVICE_UNAVAILABLE, "service"),
    "ServiceUnavailable": (ExitCode.SERVICE_UNAVAILABLE, "service"),
    "ServiceUnavailableException": (ExitCode.SERVICE_UNAVAILABLE, "service"),
    "InvalidParameter": (ExitCode.HANDSHAKE_REJECTED, "parameter"),
    "InvalidParameterException": (ExitCode.HANDSHAKE_REJECTED, "parameter"),
    "ValidationException": (ExitCode.HANDSHAKE_REJECTED, "parameter"),
    "ResourceNotFoundException": (ExitCode.HANDSHAKE_REJECTED, "gone"),
    "InvalidInstanceConnectEndpointId.NotFound": (ExitCode.HANDSHAKE_REJECTED, "gone"),
}
_HINTS = {
    "signature": "the request signature was rejected: check the credentials (secret key, session token) and "
                 "the region",
    "expired": "the request was signed at a time the endpoint does not accept: check this computer's clock "
               "(date, time zone and automatic time)",
    "token": "your temporary credentials expired: refresh them (e.g. `aws sso login`), then "
             "`eic-proxy cache clear`",
    "busy": "the endpoint allows 20 concurrent connections; retry in a moment",
    "service": "the service had a problem; retry in a moment",
    "parameter": "check the port and the target address; " + PORT_RULE_HINT,
    "gone": "the endpoint no longer exists: `eic-proxy cache clear`, then retry",
    "other": "run with -v for details",
}


def _word(pattern: str, text: str) -> bool:
    return re.search(rf"\b{pattern}\b", text) is not None


def _by_status(status: int, low: str) -> tuple[ExitCode, str]:
    """No (known) ErrorCode: the status decides, the message refines what 401/403 mean."""
    if status in (401, 403):
        if _word("expired", low):
            return ExitCode.SIGNATURE_EXPIRED, "expired"
        if _word("signature", low):
            return ExitCode.SIGNATURE_REJECTED, "signature"
        return ExitCode.ACCESS_DENIED, _DENIED
    if status == 429:
        return ExitCode.SERVICE_UNAVAILABLE, "busy"
    if status >= 500:
        return ExitCode.SERVICE_UNAVAILABLE, "service"
    if status == 400 and _word("remoteport", low):
        return ExitCode.HANDSHAKE_REJECTED, "parameter"
    return ExitCode.HANDSHAKE_REJECTED, "other"


def handshake_error(status: int, body: bytes, max_duration_sent: bool = False) -> EicProxyError:
    """Map a refused upgrade (status + JSON body) to an error with the service's Message and a hint."""
    code, msg = parse_error_body(body)
    shown = msg or code or "no reason given"
    label = f"endpoint refused the tunnel (HTTP {status}{', ' + code if code else ''}): {shown}"
    low = (msg or "").lower()
    known = ERROR_CODES.get(code or "")
    if known is None:
        exit_code, kind = _by_status(status, low)
    else:
        exit_code, kind = known
    if kind == _DENIED and known is not None and _word("expired", low):
        exit_code, kind = ExitCode.SIGNATURE_EXPIRED, "expired"
    from eic_proxy.clock import is_clock_refusal

    if is_clock_refusal(code, msg):  # a signature "not yet current" is the clock too, not the credentials
        exit_code, kind = ExitCode.SIGNATURE_EXPIRED, "expired"
    if kind == _DENIED:
        hint = ("your IAM identity needs ec2-instance-connect:OpenTunnel on this endpoint (`eic-proxy policy` "
                "prints one)")
        if not max_duration_sent:
            hint += "; if the policy limits ec2-instance-connect:maxTunnelDuration, pass --max-tunnel-duration"
    else:
        hint = _HINTS[kind]
    if exit_code == ExitCode.CREDENTIALS:
        return CredentialsError(label, hint=hint)
    return _HANDSHAKE_CLASSES[exit_code](label, hint=hint, status=status, error_code=code)


_HANDSHAKE_CLASSES: dict[ExitCode, type[HandshakeError]] = {
    ExitCode.SIGNATURE_REJECTED: SignatureRejected, ExitCode.SIGNATURE_EXPIRED: SignatureExpired,
    ExitCode.ACCESS_DENIED: HandshakeDenied, ExitCode.SERVICE_UNAVAILABLE: EndpointBusy,
    ExitCode.HANDSHAKE_REJECTED: HandshakeError,
}

"""This computer's clock against AWS's: refusals for the signing time, the offset a ``Date`` header shows,
and signing at AWS's time once a refusal has told us how far ours is off.

SigV4 accepts a request signed within 5 minutes of AWS's time, and a presigned URL lives 60 s: a VM or
WSL whose clock lagged through a sleep gets "Signature not yet current" or "Request has expired". The
endpoint's handshake (``lifecycle/session.py``) and the API calls (``aws/client.py``) both correct for it
once, as other AWS SDKs do, and say so in one warning.
"""
from __future__ import annotations

import time
from typing import Any, Optional

# Closer than this, a refusal is not the clock's doing (a presigned URL lives 60 s).
CLOCK_TOLERANCE = 30.0


def is_clock_refusal(code: Optional[str], message: Optional[str]) -> bool:
    """A refusal the signing time explains: the URL expired, or it was signed in the future."""
    low = (message or "").lower()
    return (code in ("RequestExpired", "RequestTimeTooSkewed") or "not yet current" in low
            or "request has expired" in low or "signature expired" in low or "time too skewed" in low
            or "clock skew" in low)


def is_time_refusal(code: str, message: str) -> bool:
    """An API refusal that the signing time explains (not a wrong secret key)."""
    return is_clock_refusal(code, message) or (code in ("SignatureDoesNotMatch", "AuthFailure")
                                               and any(w in message.lower() for w in (" time", "date", "expired")))


def http_date(value: str) -> Optional[float]:
    """An HTTP ``Date`` header as a timestamp; None when absent or unreadable."""
    if not value:
        return None
    from email.utils import parsedate_to_datetime

    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def offset_from(server_time: Optional[float]) -> Optional[float]:
    """AWS's time minus ours, when the server's time is known and at least ``CLOCK_TOLERANCE`` off."""
    if server_time is None:
        return None
    offset = server_time - time.time()
    return offset if abs(offset) >= CLOCK_TOLERANCE else None


def describe_offset(seconds: float) -> str:
    """ "about 10 min ahead of" / "45 s behind" for a clock ``seconds`` ahead (negative: behind). An HTTP
    Date has whole seconds: minutes are rounded."""
    n = abs(seconds)
    amount = f"about {round(n / 60)} min" if n >= 120 else f"{round(n)} s"
    return f"{amount} {'ahead of' if seconds > 0 else 'behind'}"


def off_by(offset: float, whose: str) -> str:
    """ "this computer's clock is about 10 min ahead of AWS's" for AWS's time minus ours."""
    return f"this computer's clock is {describe_offset(-offset)} {whose}"


def say_corrected(offset: float, whose: str) -> None:
    """The one warning when a request is signed again at ``whose`` time."""
    from eic_proxy.transport.local import stderr_line

    stderr_line(f"eic-proxy: warning: {off_by(offset, whose)}; signing with {whose} time (set the clock right: "
                "automatic date and time)")


def signing_time(offset: Optional[float]) -> Any:
    """The time to sign with: ours, or AWS's once a refusal told us how far ours is off."""
    if offset is None:
        return None
    import datetime as dt

    return dt.datetime.fromtimestamp(time.time() + offset, dt.timezone.utc)

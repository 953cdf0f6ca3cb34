"""An independent SigV4 query-signature check for the fake endpoint (not botocore verifying itself)."""
from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from typing import Optional
from urllib.parse import quote

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


class SigV4Error(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _q(s: str) -> str:
    return quote(s, safe="-_.~")


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def verify(method: str, path: str, params: list[tuple[str, str]], host: str, secrets: dict[str, str],
           region: str, service: str = "ec2-instance-connect", now: Optional[dt.datetime] = None,
           max_skew: int = 300) -> str:
    """Verify a presigned request; return the access key ID or raise SigV4Error."""
    q = dict(params)
    for name in ("X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires",
                 "X-Amz-SignedHeaders", "X-Amz-Signature"):
        if name not in q:
            raise SigV4Error("MissingAuthenticationToken", f"Missing {name} in the request")
    if q["X-Amz-Algorithm"] != "AWS4-HMAC-SHA256":
        raise SigV4Error("IncompleteSignature", "Unsupported signing algorithm")
    scope = q["X-Amz-Credential"].split("/")
    if len(scope) != 5 or scope[4] != "aws4_request":
        raise SigV4Error("IncompleteSignature", "Malformed credential scope")
    akid, day, scope_region, scope_service = scope[0], scope[1], scope[2], scope[3]
    if scope_service != service or scope_region != region:
        raise SigV4Error("InvalidSignatureException",
                         f"Credential should be scoped to a valid region and service {service}")
    if akid not in secrets:
        raise SigV4Error("UnrecognizedClientException", "The security token included in the request is invalid")
    if q["X-Amz-SignedHeaders"].split(";") != ["host"] and "host" not in q["X-Amz-SignedHeaders"].split(";"):
        raise SigV4Error("InvalidSignatureException", "host must be a signed header")
    try:
        signed_at = dt.datetime.strptime(q["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.timezone.utc)
        expires = int(q["X-Amz-Expires"])
    except ValueError:
        raise SigV4Error("IncompleteSignature", "Malformed X-Amz-Date or X-Amz-Expires") from None
    now = now or dt.datetime.now(dt.timezone.utc)
    if day != q["X-Amz-Date"][:8]:
        raise SigV4Error("InvalidSignatureException", "Credential date does not match X-Amz-Date")
    if now > signed_at + dt.timedelta(seconds=expires):
        raise SigV4Error("AccessDeniedException",
                         f"Request has expired: signed at {q['X-Amz-Date']}, valid for {expires} s")
    if signed_at - now > dt.timedelta(seconds=max_skew):
        raise SigV4Error("InvalidSignatureException", "Signature not yet current")
    canonical_query = "&".join(sorted(f"{_q(k)}={_q(v)}" for k, v in params if k != "X-Amz-Signature"))
    signed_headers = q["X-Amz-SignedHeaders"]
    canonical_request = "\n".join([method, path, canonical_query, f"host:{host}", "", signed_headers, EMPTY_SHA256])
    credential_scope = "/".join(scope[1:])
    string_to_sign = "\n".join(["AWS4-HMAC-SHA256", q["X-Amz-Date"], credential_scope,
                                hashlib.sha256(canonical_request.encode()).hexdigest()])
    key = _hmac(("AWS4" + secrets[akid]).encode(), day)
    for part in (scope_region, scope_service, "aws4_request"):
        key = _hmac(key, part)
    expected = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, q["X-Amz-Signature"]):
        raise SigV4Error("InvalidSignatureException",
                         "The request signature we calculated does not match the signature you provided")
    return akid

"""The SigV4-presigned ``wss://…/openTunnel`` URL (docs/protocol.md §3).

Signed here with hashlib/hmac rather than botocore's SigV4QueryAuth: importing botocore costs more
than everything else a warm connection does (bench/RESULTS.md). The golden vector the AWS CLI's own
test pins (tests/unit/test_signer.py) keeps this byte-for-byte equal to botocore's output.
"""
from __future__ import annotations

import hashlib
import hmac
import time
from typing import Any, Optional
from urllib.parse import quote

SIGNING_NAME = "ec2-instance-connect"
URL_EXPIRES = 60  # bounds the handshake only, not the tunnel (§3.1)
_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()  # payload hash of a presigned GET (§3.1), not UNSIGNED-PAYLOAD


def format_host(dns_name: str) -> str:
    """Bracket an IPv6 literal so it can stand in a URL authority."""
    return f"[{dns_name}]" if ":" in dns_name and not dns_name.startswith("[") else dns_name


def _enc(value: str) -> str:
    return quote(value, safe="-_.~")


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def presign_url(credentials: Any, region: str, dns_name: str, endpoint_id: str, remote_port: int,
                private_ip: str, max_tunnel_duration: Optional[int] = None,
                now: Optional[Any] = None) -> str:
    """Return a fresh presigned URL; one per WebSocket, never reused.

    ``credentials`` has ``access_key``, ``secret_key`` and ``token`` (botocore's frozen credentials
    or aws.StaticCredentials). Query order is the CLI's: instanceConnectEndpointId, remotePort,
    privateIpAddress, then maxTunnelDuration only when the user set it, then the X-Amz-* parameters
    (§3.1). Signed header: host only, port 443.
    """
    # ``now``: a datetime, for tests; time.gmtime otherwise (datetime's import costs start-up time).
    stamp = now.strftime("%Y%m%dT%H%M%SZ") if now is not None else time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    day = stamp[:8]
    scope = f"{day}/{region}/{SIGNING_NAME}/aws4_request"
    params: list[tuple[str, str]] = [
        ("instanceConnectEndpointId", endpoint_id),
        ("remotePort", str(remote_port)),
        ("privateIpAddress", private_ip),
    ]
    if max_tunnel_duration is not None:
        params.append(("maxTunnelDuration", str(max_tunnel_duration)))
    params += [
        ("X-Amz-Algorithm", "AWS4-HMAC-SHA256"),
        ("X-Amz-Credential", f"{credentials.access_key}/{scope}"),
        ("X-Amz-Date", stamp),
        ("X-Amz-Expires", str(URL_EXPIRES)),
        ("X-Amz-SignedHeaders", "host"),
    ]
    if credentials.token:
        params.append(("X-Amz-Security-Token", credentials.token))
    encoded = [f"{_enc(k)}={_enc(v)}" for k, v in params]
    host = format_host(dns_name)
    canonical_request = "\n".join(["GET", "/openTunnel", "&".join(sorted(encoded)), f"host:{host}", "", "host",
                                   _EMPTY_SHA256])
    string_to_sign = "\n".join(["AWS4-HMAC-SHA256", stamp, scope,
                                hashlib.sha256(canonical_request.encode()).hexdigest()])
    key = _hmac(("AWS4" + credentials.secret_key).encode(), day)
    for part in (region, SIGNING_NAME, "aws4_request"):
        key = _hmac(key, part)
    signature = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
    return f"wss://{host}/openTunnel?{'&'.join(encoded)}&X-Amz-Signature={signature}"

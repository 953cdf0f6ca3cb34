"""The SigV4-presigned ``wss://…/openTunnel`` URL (eice-protocol.md §3)."""
from __future__ import annotations

from typing import Any, Optional
from urllib.parse import urlencode

SIGNING_NAME = "ec2-instance-connect"
URL_EXPIRES = 60  # bounds the handshake only, not the tunnel (§3.1)
MAX_TUNNEL_DURATION = 3600


def format_host(dns_name: str) -> str:
    """Bracket an IPv6 literal so it can stand in a URL authority."""
    return f"[{dns_name}]" if ":" in dns_name and not dns_name.startswith("[") else dns_name


def presign_url(credentials: Any, region: str, dns_name: str, endpoint_id: str, remote_port: int,
                private_ip: str, max_tunnel_duration: Optional[int] = None) -> str:
    """Return a fresh presigned URL; one per WebSocket, never reused.

    Query order is the CLI's: instanceConnectEndpointId, remotePort, privateIpAddress, then
    maxTunnelDuration only when the user set it (§3.1). Signed header: host only, port 443.
    """
    from botocore.auth import SigV4QueryAuth
    from botocore.awsrequest import AWSRequest

    params: list[tuple[str, str]] = [
        ("instanceConnectEndpointId", endpoint_id),
        ("remotePort", str(remote_port)),
        ("privateIpAddress", private_ip),
    ]
    if max_tunnel_duration is not None:
        params.append(("maxTunnelDuration", str(max_tunnel_duration)))
    request = AWSRequest(method="GET", url=f"https://{format_host(dns_name)}/openTunnel?{urlencode(params)}")
    signer = SigV4QueryAuth(credentials, SIGNING_NAME, region, expires=URL_EXPIRES)
    signer.add_auth(request)
    return "wss://" + request.url[len("https://"):]

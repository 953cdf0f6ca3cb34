"""``eic-proxy connect``: the ProxyCommand, from host alias to a running byte pump."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Optional

from .errors import UsageError

log = logging.getLogger(__name__)

DEFAULT_OS_USER = "ec2-user"


@dataclass(frozen=True)
class ConnectOptions:
    host: str
    port: int = 22
    os_user: str = DEFAULT_OS_USER
    region: Optional[str] = None
    profile: Optional[str] = None
    eice_id: Optional[str] = None
    max_tunnel_duration: Optional[int] = None
    push: bool = True


def validate(opts: ConnectOptions) -> None:
    if not 1 <= opts.port <= 65535:
        raise UsageError(f"port {opts.port} is out of range 1..65535")
    if opts.max_tunnel_duration is not None and not 1 <= opts.max_tunnel_duration <= 3600:
        raise UsageError(f"--max-tunnel-duration {opts.max_tunnel_duration} is out of range 1..3600 seconds",
                         hint="the endpoint allows at most 3600 s per connection")
    from .resolve import is_instance_id

    if not is_instance_id(opts.host):
        raise UsageError(f"{opts.host!r} is not an instance ID (i-0123456789abcdef0)",
                         hint="use the instance ID as the host name")


def run(opts: ConnectOptions, in_fd: int = 0, out_fd: int = 1) -> int:
    """Resolve, push, presign, open and pump. Returns 0 on a normal end; raises EicProxyError otherwise."""
    validate(opts)
    from .aws import make_aws
    from .endpoint import dns_name_for, find_endpoint
    from .keys import ensure_key
    from .push import send_public_key
    from .resolve import describe_instance
    from .signer import presign_url
    from .tunnel import open_websocket, pump

    aws = make_aws(opts.profile, opts.region)
    ec2 = aws.client("ec2")
    target = describe_instance(aws, ec2, opts.host)
    endpoint = find_endpoint(aws, ec2, target, opts.eice_id)
    if opts.push:
        key = ensure_key()
        send_public_key(aws, aws.client("ec2-instance-connect"), target.instance_id, opts.os_user, key.public_line)
    dns = dns_name_for(endpoint, aws.use_fips)
    url = presign_url(aws.frozen_credentials(), aws.region, dns, endpoint.endpoint_id, opts.port, target.ip,
                      opts.max_tunnel_duration)
    ws = open_websocket(url, aws.ca_bundle, max_duration_sent=opts.max_tunnel_duration is not None)
    log.debug("= tunnel open to %s (%s:%d) via %s", target.instance_id, target.ip, opts.port, endpoint.endpoint_id)
    result = pump(ws, in_fd, out_fd, float(opts.max_tunnel_duration or 3600),
                  on_close_out=lambda: _close_quietly(out_fd))
    if result.error is not None:
        raise result.error
    return exit_code_for(result.reason)


def exit_code_for(reason: str) -> int:
    """0 for a normal end, including ssh's SIGHUP; 128+N for Ctrl-C and SIGTERM, as shells expect."""
    if reason.startswith("signal:"):
        signum = int(reason.split(":", 1)[1])
        import signal

        if signum == getattr(signal, "SIGHUP", -1):
            return 0
        return 128 + signum
    return 0


def _close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass

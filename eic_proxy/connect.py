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
    use_cache: bool = True
    pick: Optional[str] = None


def validate(opts: ConnectOptions) -> None:
    if not 1 <= opts.port <= 65535:
        raise UsageError(f"port {opts.port} is out of range 1..65535")
    if opts.max_tunnel_duration is not None and not 1 <= opts.max_tunnel_duration <= 3600:
        raise UsageError(f"--max-tunnel-duration {opts.max_tunnel_duration} is out of range 1..3600 seconds",
                         hint="the endpoint allows at most 3600 s per connection")


def run(opts: ConnectOptions, in_fd: int = 0, out_fd: int = 1) -> int:
    """Locate, push, presign, open and pump. Returns the exit code; raises EicProxyError on failure.

    A cached location that proves stale (instance gone, endpoint gone) is dropped and looked up
    again once, automatically.
    """
    validate(opts)
    from .aws import make_aws
    from .cache import Cache
    from .endpoint import dns_name_for
    from .errors import HandshakeError, HostNotFound, InstanceStateError
    from .locate import Locator
    from .resolve import parse_host
    from .signer import presign_url
    from .tunnel import open_websocket, pump

    spec = parse_host(opts.host)
    aws = make_aws(spec.profile or opts.profile, spec.region or opts.region)
    locator = Locator(aws, Cache() if opts.use_cache else None, opts.pick, opts.eice_id)
    located = locator.locate(spec)
    for attempt in (1, 2):
        cached = located.target_age is not None or located.endpoint_age is not None
        try:
            if opts.push:
                _push(aws, located.target.instance_id, opts.os_user)
            dns = dns_name_for(located.endpoint, aws.use_fips)
            url = presign_url(aws.frozen_credentials(), aws.region, dns, located.endpoint.endpoint_id, opts.port,
                              located.target.ip, opts.max_tunnel_duration)
            ws = open_websocket(url, aws.ca_bundle, max_duration_sent=opts.max_tunnel_duration is not None)
            break
        except (HostNotFound, InstanceStateError, HandshakeError) as exc:
            # Every handshake message names "endpoint"; only one naming our cached endpoint ID says it is gone.
            stale = not isinstance(exc, HandshakeError) or located.endpoint.endpoint_id in exc.message
            if attempt == 2 or not cached or not stale:
                raise
            locator.forget(spec, located)
            located = locator.locate(spec)
    log.debug("= tunnel open to %s (%s:%d) via %s", located.target.instance_id, located.target.ip, opts.port,
              located.endpoint.endpoint_id)
    result = pump(ws, in_fd, out_fd, float(opts.max_tunnel_duration or 3600),
                  on_close_out=lambda: _close_quietly(out_fd))
    if result.error is not None:
        raise result.error
    return exit_code_for(result.reason)


def _push(aws, instance_id: str, os_user: str) -> None:
    from .keys import ensure_key
    from .push import send_public_key

    send_public_key(aws, aws.client("ec2-instance-connect"), instance_id, os_user, ensure_key().public_line)


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

"""Options several sub-commands share, and the layering of flags over environment and config file.

Defaults come from one place: ``config.ConnectOptions`` (the argparse defaults below read it), and
values are checked in one place: ``config.validate`` and ``config._coerce``.
"""
from __future__ import annotations

import argparse
from typing import Any, Optional, cast

from eic_proxy.config import DEFAULT_OS_USER, ConnectOptions, Settings

DEFAULTS = ConnectOptions(host="")


def add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--region", help="AWS region (default: profile / AWS_REGION)")
    p.add_argument("--profile", help="AWS profile (default: AWS_PROFILE / default)")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more output on stderr (-vv: debug)")


def add_key_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--agent", action="store_const", const=True, default=None,
                   help="add the key to your ssh-agent (lifetime: the key's remaining life)")
    p.add_argument("--key-type", choices=["ed25519", "rsa-2048", "rsa-4096"], help="managed key type (default ed25519)")
    p.add_argument("--key-lifetime", metavar="DURATION", help="rotate the managed key after this long (default 4h)")


def add_host_keys(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host-keys", choices=["verify", "strict", "tofu"],
                   help="first contact: verify the host key against the console output, falling back to "
                        "first use with a warning (verify, default); refuse without it (strict); or trust the "
                        "first key seen without asking AWS (tofu)")


def add_ip_family(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ip-family", choices=["auto", "4", "6"],
                   help="reach the endpoint over IPv6 through its dual-stack name (6), IPv4 (4), or IPv6 only when "
                        "this machine has no IPv4 route (auto, default)")


def add_lookup(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-cache", dest="use_cache", action="store_false",
                   help="ignore and do not write the resolution cache")
    p.add_argument("--pick", choices=["newest", "oldest"],
                   help="when a name matches several instances, take the newest/oldest by launch time")


def connect_options(args: argparse.Namespace, host: str, port: int, os_user: Optional[str]) -> ConnectOptions:
    """ConnectOptions from the flags of connect / tunnel / doctor, layered with env and config."""
    typed = getattr(args, "typed", None)
    if typed and typed.lower() == host.lower():
        host = typed  # ssh lowercases %h; Name tags are case-sensitive
    s = settings(args, host, os_user=os_user)
    d = DEFAULTS
    return ConnectOptions(
        key_type=s.key_type or d.key_type, key_lifetime=s.key_lifetime, key_store=s.key_store,
        agent=bool(s.agent), identity=s.identity,
        max_connections=getattr(args, "endpoint_connections", d.max_connections),
        queue_timeout=getattr(args, "queue_timeout", d.queue_timeout), timeout=getattr(args, "timeout", d.timeout),
        keepalive=getattr(args, "keepalive", d.keepalive), expiry_warning=getattr(args, "expiry_warning", d.expiry_warning),
        banner_wait=getattr(args, "banner_wait", d.banner_wait), host_keys=s.host_keys or d.host_keys,
        ip_family=s.ip_family or d.ip_family,
        host=host, port=port, os_user=s.os_user or DEFAULT_OS_USER,
        region=s.region, profile=s.profile, eice_id=s.eice_id,
        max_tunnel_duration=s.max_tunnel_duration, push=getattr(args, "push", True) is not False,
        use_cache=getattr(args, "use_cache", d.use_cache), pick=getattr(args, "pick", d.pick),
        start=getattr(args, "start", d.start), start_timeout=getattr(args, "start_timeout", d.start_timeout),
        known_hosts_alias=args.host if typed else None,
    )


def settings(args: argparse.Namespace, host: str, os_user: Optional[str] = None) -> Settings:
    """Flags, host suffix, environment and config file, layered as config.py documents."""
    from eic_proxy.config import _coerce, effective
    from eic_proxy.control.resolve import parse_host

    lifetime: Any = getattr(args, "key_lifetime", None)
    if lifetime is not None:
        lifetime = cast(Optional[int], _coerce("key-lifetime", lifetime, "--key-lifetime"))
    flags = Settings(profile=args.profile, region=args.region, os_user=os_user, eice_id=getattr(args, "eice_id", None),
                     max_tunnel_duration=getattr(args, "max_tunnel_duration", None),
                     key_type=getattr(args, "key_type", None), key_lifetime=lifetime,
                     agent=getattr(args, "agent", None), identity=getattr(args, "identity", None),
                     host_keys=getattr(args, "host_keys", None), ip_family=getattr(args, "ip_family", None))
    if not host:
        return effective("", flags)
    spec = parse_host(host)
    return effective(spec.alias, flags, Settings(profile=spec.profile, region=spec.region))


def locate_host(args: argparse.Namespace) -> tuple[Any, Any, Any, Settings]:
    """(aws, located, host spec, settings) for the HOST of a command that looks without connecting
    (resolve, known-hosts): stopped instances included, the cache unless --no-cache."""
    from eic_proxy.aws.client import make_aws
    from eic_proxy.control.locate import Locator
    from eic_proxy.control.resolve import parse_host
    from eic_proxy.store.cache import Cache

    spec = parse_host(args.host)
    s = settings(args, args.host)
    aws = make_aws(s.profile, s.region)
    located = Locator(aws, Cache() if args.use_cache else None, args.pick, s.eice_id, allow_stopped=True).locate(spec)
    return aws, located, spec, s

"""The flags commands share, made from ``settings.TABLE``, and the layering of flags over environment and
config file into ``ConnectOptions``.

Defaults, flag spellings and help come from the table; values are checked in one place:
``config.validate`` and ``config._coerce``.
"""
from __future__ import annotations

import argparse
from typing import Any, Optional

from eic_proxy.config import ConnectOptions, Settings
from eic_proxy.settings import BY_NAME, LAYERED, add_common, add_flags

__all__ = ["add_common", "add_flags", "add_remote_port", "connect_options", "locate_host", "parse_connect", "settings"]

KEY_FLAGS = ("agent", "key_type", "key_lifetime")
LOOKUP_FLAGS = ("use_cache", "pick")
CONNECT_FLAGS = ("os_user", "eice_id", "max_tunnel_duration", "push", "start", "start_timeout", "identity",
                 "max_connections", "queue_timeout", "timeout", "keepalive", "banner_wait", "expiry_warning", "helper",
                 "host_keys", *KEY_FLAGS, *LOOKUP_FLAGS, "ip_family")


def add_remote_port(p: argparse.ArgumentParser, more: str = "") -> None:
    """The instance's port: ``--remote-port`` in every command that takes it as a flag (``connect`` takes
    ssh's ``%p`` as its PORT); ``--port``, doctor's name for it until 0.2, still works."""
    p.add_argument("--remote-port", type=int, default=22, metavar="PORT", help="instance port (default 22)" + more)
    p.add_argument("--port", dest="remote_port", type=int, help=argparse.SUPPRESS)


def add_connect_arguments(c: argparse.ArgumentParser) -> None:
    """``eic-proxy connect``'s arguments: for the CLI and for the helper's preparer, which parses the
    same command line without the CLI (``parse_connect``)."""
    c.add_argument("host", metavar="HOST", help="instance ID, Name tag (or glob), tag:KEY=VALUE, private IP or "
                                                 "DNS name; append --REGION[--PROFILE] to pick account and region")
    c.add_argument("port", metavar="PORT", nargs="?", type=int, default=22, help="remote port (default 22)")
    c.add_argument("user", metavar="USER", nargs="?", help="remote user from ssh's %%r (sets the OS user)")
    c.add_argument("--typed", metavar="NAME", help=argparse.SUPPRESS)  # ssh's %n: the host with its original case
    add_flags(c, *CONNECT_FLAGS, helps={"os_user": "OS user for the key push (default: USER, else ec2-user)"})
    add_common(c)


CONNECT_HELP = "tunnel stdin/stdout to HOST:PORT (use as ssh ProxyCommand)"
CONNECT_DESCRIPTION = ("Tunnel stdin/stdout to an instance through its VPC's EICE. "
                       "Meant for `ProxyCommand eic-proxy connect %%h %%p %%r`.")
_CONNECT_PARSER: list[argparse.ArgumentParser] = []


def connect_parser() -> argparse.ArgumentParser:
    """``eic-proxy`` with only its ``connect`` command, built once per process (the helper builds it
    before it forks, so a connection does not)."""
    if not _CONNECT_PARSER:
        from eic_proxy import __version__

        parser = argparse.ArgumentParser(prog="eic-proxy", description="OpenSSH ProxyCommand for private EC2 "
                                         "instances through EC2 Instance Connect Endpoints.")
        parser.add_argument("--version", action="version", version=f"eic-proxy {__version__}")
        sub = parser.add_subparsers(dest="command", metavar="COMMAND")
        sub.required = True
        add_connect_arguments(sub.add_parser("connect", help=CONNECT_HELP, description=CONNECT_DESCRIPTION))
        _CONNECT_PARSER.append(parser)
    return _CONNECT_PARSER[0]


def parse_connect(argv: list[str]) -> tuple[ConnectOptions, int]:
    """``connect``'s command line as options and a verbosity (argparse's SystemExit for --help or a bad one)."""
    args = connect_parser().parse_args(argv)
    return connect_options_of(args), args.verbose


def connect_options_of(args: argparse.Namespace) -> ConnectOptions:
    return connect_options(args, args.host, args.port, args.os_user or args.user)


def connect_options(args: argparse.Namespace, host: str, port: int, os_user: Optional[str]) -> ConnectOptions:
    """ConnectOptions from the flags of connect / tunnel / doctor, layered with env and config: every
    field a row of the table names, from the layered settings when the row is layered, else from its
    flag, else the table's default."""
    typed = getattr(args, "typed", None)
    if typed and typed.lower() == host.lower():
        host = typed  # ssh lowercases %h; Name tags are case-sensitive
    layered = settings(args, host, os_user=os_user)
    values: dict[str, Any] = {}
    for name in ConnectOptions.__dataclass_fields__:
        row = BY_NAME.get(name)
        if row is None:
            continue
        value = getattr(layered, name) if row.layered else getattr(args, name, None)
        values[name] = row.default if value is None else value
    return ConnectOptions(host=host, port=port, known_hosts_alias=args.host if typed else None, **values)


def settings(args: argparse.Namespace, host: str, os_user: Optional[str] = None) -> Settings:
    """Flags, host suffix, environment and config file, layered as config.py documents."""
    from eic_proxy.config import _coerce, effective
    from eic_proxy.control.resolve import parse_host

    flags: dict[str, Any] = {}
    for row in LAYERED:
        value = os_user if row.name == "os_user" else getattr(args, row.name, None)
        if value is not None and row.kind == "duration":
            value = _coerce(row.name.replace("_", "-"), value, row.flag or row.name)
        if row.kind == "off" and value is False:  # a --no-X flag given
            flags[row.name] = False
        elif row.kind != "off" and value is not None:
            flags[row.name] = value
    layer = Settings(**flags)
    if not host:
        return effective("", layer)
    spec = parse_host(host)
    return effective(spec.alias, layer, Settings(profile=spec.profile, region=spec.region))


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
    located = Locator(aws, Cache() if args.use_cache is not False else None, args.pick, s.eice_id,
                      allow_stopped=True).locate(spec)
    return aws, located, spec, s

"""Every setting of a connection in one table: its flag, environment variable, config key, type, default and help.

The command-line parsers (``add_flags``), the config file's and the environment's coercion
(``config.coerce``), ``ConnectOptions``' defaults, the helper's quick check (``helper/client.py``) and the
README's settings list (checked by ``tests/unit/test_settings_table.py``) are all made from ``TABLE``:
a setting is added, renamed or given a new default here and nowhere else.

A row with ``layered=True`` can also be set by ``EIC_PROXY_<NAME>`` and by ``name-with-dashes = value``
in the config file (precedence: ``config.py``); the others are flags only. ``aliases`` are older
spellings kept working (ssh configs have them) but no longer shown in ``--help``.

Imported by the thin ProxyCommand before anything else: plain Python only (no dataclasses, enum,
typing or argparse at import time).
"""
from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Optional

ENV_PREFIX = "EIC_PROXY_"
TRUTHY = ("1", "yes", "true", "on")
FALSY = ("0", "no", "false", "off")

KEY_TYPES = ("ed25519", "rsa-2048", "rsa-4096")
KEY_STORES = ("file", "keyring")
HOST_KEY_MODES = ("verify", "strict", "tofu")
IP_FAMILIES = ("auto", "4", "6")
PICKS = ("newest", "oldest")

MAX_TUNNEL_DURATION = 3600  # the service's cap per connection (docs/protocol.md §7)
MIN_KEY_LIFETIME = 300
MAX_KEY_LIFETIME = 30 * 86400
DEFAULT_OS_USER = "ec2-user"


class Setting:
    """One row: ``name`` is the attribute (``ConnectOptions``, ``config.Settings``, argparse's dest)."""

    __slots__ = ("name", "flag", "kind", "default", "help", "metavar", "choices", "layered", "aliases")

    def __init__(self, name: str, flag: Optional[str], kind: str, default: Any, help: str, *,
                 metavar: Optional[str] = None, choices: tuple[str, ...] = (), layered: bool = False,
                 aliases: tuple[str, ...] = ()) -> None:
        self.name = name
        self.flag = flag  # None: not a flag (set by position, or by the file and environment only)
        self.kind = kind  # text | int | float | choice | bool | duration | off (a --no-X flag) | on (an --X flag)
        self.default = default
        self.help = help
        self.metavar = metavar
        self.choices = choices
        self.layered = layered
        self.aliases = aliases

    @property
    def env(self) -> Optional[str]:
        return ENV_PREFIX + self.name.upper() if self.layered else None

    @property
    def key(self) -> Optional[str]:
        """The config file's key."""
        return self.name.replace("_", "-") if self.layered else None


S = Setting
TABLE: tuple[Setting, ...] = (
    # where and as whom
    S("profile", "--profile", "text", None, "AWS profile (default: AWS_PROFILE / default)", layered=True),
    S("region", "--region", "text", None, "AWS region (default: profile / AWS_REGION)", layered=True),
    S("os_user", "--os-user", "text", DEFAULT_OS_USER, "OS user for the key push (default: ssh's %%r, else ec2-user)",
      layered=True),
    S("eice_id", "--eice-id", "text", None, "use this EC2 Instance Connect Endpoint instead of discovering one",
      layered=True),
    S("max_tunnel_duration", "--max-tunnel-duration", "int", None,
      "ask the endpoint to cut the tunnel after SECONDS (1..3600); required by some IAM policies",
      metavar="SECONDS", layered=True),
    S("pick", "--pick", "choice", None, "when a name matches several instances (an Auto Scaling group: asg:*), "
      "take the newest/oldest by launch time", choices=PICKS),
    S("use_cache", "--no-cache", "off", True, "ignore and do not write the resolution cache"),
    S("ip_family", "--ip-family", "choice", "auto",
      "reach the endpoint over IPv6 through its dual-stack name (6), IPv4 (4), or IPv6 only when this machine "
      "has no IPv4 route (auto, default)", choices=IP_FAMILIES, layered=True),
    # the key
    S("push", "--no-push", "off", True, "do not push a key (you bring a key the instance already trusts)"),
    S("identity", "--identity", "text", None, "push the public half of this key of yours instead of ours",
      metavar="PATH", layered=True),
    S("agent", "--agent", "on", False, "add the key to your ssh-agent (lifetime: the key's remaining life)",
      layered=True),
    S("key_type", "--key-type", "choice", "ed25519", "managed key type (default ed25519)", choices=KEY_TYPES,
      layered=True),
    S("key_lifetime", "--key-lifetime", "duration", None, "rotate the managed key after this long (default 4h)",
      metavar="DURATION", layered=True),
    S("key_store", None, "choice", None, "where the managed key lives: file, or keyring (needs agent; the default "
      "in agent mode when a backend exists)", choices=KEY_STORES, layered=True),
    S("host_keys", "--host-keys", "choice", "verify",
      "first contact: verify the host key against the console output, falling back to first use with a warning "
      "(verify, default); refuse without it (strict); or trust the first key seen without asking AWS (tofu)",
      choices=HOST_KEY_MODES, layered=True),
    # the instance
    S("start", "--start", "on", False, "start the instance if it is stopped and wait until its port answers"),
    S("start_timeout", "--start-timeout", "float", 300.0, "how long --start waits for the instance and its port "
      "(default 300)", metavar="SECONDS"),
    # the endpoint
    S("max_connections", "--endpoint-connections", "int", 20,
      "tunnels open at once from this machine per endpoint before new ones queue (service limit: 20)",
      metavar="N", aliases=("--max-connections",)),
    S("queue_timeout", "--queue-timeout", "float", 300.0, "how long a queued tunnel waits for a free slot "
      "(default 300)", metavar="SECONDS"),
    S("timeout", "--timeout", "float", None, "timeout for AWS API calls and the WebSocket handshake "
      "(default 10 / 15)", metavar="SECONDS"),
    # the tunnel
    S("keepalive", "--keepalive", "float", 30.0, "WebSocket ping interval; 3 unanswered pings end the tunnel "
      "(0: off; default 30)", metavar="SECONDS"),
    S("banner_wait", "--banner-wait", "float", 5.0, "port 22: warn when the instance has sent nothing this long "
      "after the tunnel opened (default 5)", metavar="SECONDS"),
    S("expiry_warning", "--expiry-warning", "float", 60.0, "warn this long before the maximum tunnel duration is "
      "reached (default 60; 0: off)", metavar="SECONDS"),
    # this program
    S("helper", "--no-helper", "off", True, "run in this process instead of the per-user helper (also: "
      "EIC_PROXY_HELPER=no, helper = no in the config file)", layered=True),
)
del S

BY_NAME: dict[str, Setting] = {s.name: s for s in TABLE}
LAYERED: tuple[Setting, ...] = tuple(s for s in TABLE if s.layered)
BY_KEY: dict[str, Setting] = {s.name.replace("_", "-"): s for s in LAYERED}


def default(name: str) -> Any:
    return BY_NAME[name].default


def is_false(text: str) -> bool:
    return text.strip().lower() in FALSY


def environment_value(name: str) -> str:
    """``EIC_PROXY_<NAME>`` as set (empty when unset), for the quick checks that cannot parse."""
    return os.environ.get(ENV_PREFIX + name.upper(), "")


def config_file() -> Optional[str]:
    """The config file's path: ``$EIC_PROXY_CONFIG``, else ``config.ini`` in the user's config directory
    (platformdirs' rule, written out for Linux and macOS so the thin ProxyCommand need not import it;
    None on Windows, where ``config.config_path`` asks platformdirs)."""
    explicit = os.environ.get(ENV_PREFIX + "CONFIG")
    if explicit:
        return os.path.expanduser(explicit)
    if sys.platform == "win32":
        return None
    if sys.platform == "darwin":
        base = os.path.join(os.path.expanduser("~"), "Library", "Application Support")
    else:
        xdg = os.environ.get("XDG_CONFIG_HOME", "").strip()
        base = xdg if xdg and os.path.isabs(xdg) else os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "eic-proxy", "config.ini")


def add_flags(parser: Any, *names: str, helps: Optional[dict[str, str]] = None, aliases: bool = True) -> None:
    """The flags of these settings, as the table says (``helps``: a command's own wording of a help;
    ``aliases=False`` where a command gave an old spelling another meaning)."""
    import argparse

    for name in names:
        s = BY_NAME[name]
        text = (helps or {}).get(name, s.help)
        spellings = [s.flag] if s.flag else []
        kwargs: dict[str, Any] = {"dest": s.name}
        if s.kind == "off":
            kwargs.update(action="store_false", default=None)
        elif s.kind == "on":
            kwargs.update(action="store_const", const=True, default=None)
        else:
            kwargs.update(type=_PARSE_FLAG[s.kind], default=None, metavar=s.metavar)
            if s.choices:
                kwargs.update(choices=list(s.choices), metavar=None)
        parser.add_argument(*spellings, help=text, **kwargs)
        for alias in s.aliases if aliases else ():  # an older spelling: same destination, hidden from --help
            parser.add_argument(alias, **dict(kwargs, help=argparse.SUPPRESS))


def add_common(parser: Any) -> None:
    """``--region``, ``--profile`` and ``-v``: on every command."""
    add_flags(parser, "region", "profile")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more output on stderr (-vv: debug)")


_PARSE_FLAG: dict[str, Callable[[str], Any]] = {"text": str, "int": int, "float": float, "choice": str, "duration": str}


def settings_list() -> str:
    """The README's list of settings (its section "Settings"): made from the table, checked by a test."""
    lines = []
    for s in TABLE:
        where = ", ".join(x for x in (f"`{s.flag}`" if s.flag else "", f"`{s.env}`" if s.env else "",
                                      f"`{s.key}`" if s.key else "") if x)
        value = "/".join(s.choices) if s.choices else ("yes/no" if s.layered else "flag") if s.kind in ("off", "on") else s.kind
        shown = s.default if s.kind not in ("off", "on") else None
        lines.append(f"| {where} | {value} | {'' if shown is None else shown} | {s.help.replace('%%', '%')} |")
    return "\n".join(["| set by | value | default | what |", "|---|---|---|---|", *lines])

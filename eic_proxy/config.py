"""Per-host settings without a wrapper script: flags, environment, and an optional config file.

The file is INI (stdlib ``configparser``, no extra dependency), at ``<platformdirs config dir>/config.ini``
or ``$EIC_PROXY_CONFIG``::

    [defaults]
    region = eu-west-1

    [host db-* tag:Role=db]
    profile = prod
    os-user = ubuntu
    eice-id = eice-0123456789abcdef0
    max-tunnel-duration = 3600

Keys: profile, region, os-user, eice-id, max-tunnel-duration, agent, identity, key-type, key-lifetime,
key-store, host-keys, ip-family, helper. Host sections match the alias as typed (without any ``--REGION--PROFILE``
suffix) with shell globs, several patterns per section, ``!pattern`` to exclude. As in ssh_config, the first
section that matches and sets a key wins for that key.

Precedence, highest first (each setting decided on its own):
  1. ``ALIAS--REGION--PROFILE`` in the host name (region and profile only)
  2. command-line flags; for the OS user, ``--os-user`` then ssh's ``%r``
  3. environment: ``EIC_PROXY_PROFILE``, ``EIC_PROXY_REGION``, ``EIC_PROXY_OS_USER``,
     ``EIC_PROXY_EICE_ID``, ``EIC_PROXY_MAX_TUNNEL_DURATION`` (and ``EIC_PROXY_<KEY>`` for the rest)
  4. the first matching ``[host …]`` section of the config file
  5. its ``[defaults]`` section
  6. AWS's own chain (``AWS_PROFILE``, ``AWS_REGION``, the profile's region) and built-in defaults
"""
from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Mapping, Optional

from eic_proxy import settings as table
from eic_proxy.errors import ConfigError, UsageError
from eic_proxy.settings import ENV_PREFIX, MAX_KEY_LIFETIME, MAX_TUNNEL_DURATION, default


@dataclass(frozen=True)
class Settings:
    """One layer of settings; ``None`` means "not set here, ask the next layer". One field per row of
    ``settings.TABLE`` marked ``layered`` (a test holds them equal)."""

    profile: Optional[str] = None
    region: Optional[str] = None
    os_user: Optional[str] = None
    eice_id: Optional[str] = None
    max_tunnel_duration: Optional[int] = None
    ip_family: Optional[str] = None
    identity: Optional[str] = None
    agent: Optional[bool] = None
    key_type: Optional[str] = None
    key_lifetime: Optional[int] = None
    key_store: Optional[str] = None
    host_keys: Optional[str] = None
    helper: Optional[bool] = None

    def over(self, lower: "Settings") -> "Settings":
        """This layer on top of ``lower``: our values win, gaps are filled from below."""
        return replace(lower, **{f.name: getattr(self, f.name) for f in fields(self)
                                 if getattr(self, f.name) is not None})


KEYS = {key: s.name for key, s in table.BY_KEY.items()}

_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def check_max_tunnel_duration(seconds: int, what: str = "--max-tunnel-duration") -> None:
    """The one check of 1..3600, for flags, the config file and the policy generator."""
    if not 1 <= seconds <= MAX_TUNNEL_DURATION:
        raise ConfigError(f"{what} {seconds} is out of range 1..{MAX_TUNNEL_DURATION} seconds",
                          hint=f"the endpoint allows at most {MAX_TUNNEL_DURATION} s per connection")


def _duration(key: str, value: str, where: str) -> int:
    unit = _DURATION_UNITS.get(value[-1:].lower(), 0)
    try:
        n = int(float(value[:-1] if unit else value) * (unit or 1))
    except (ValueError, OverflowError):  # "abc", "nan", "inf", "-1e999"
        raise ConfigError(f"{where}: {key} must be a duration like 3600, 90m or 4h, not {value!r}") from None
    if n < table.MIN_KEY_LIFETIME:
        raise ConfigError(f"{where}: {key} {value} is too short; use at least 5 minutes")
    if n > MAX_KEY_LIFETIME:
        raise ConfigError(f"{where}: {key} {value} is too long; a short-lived key lives at most 30 days")
    return n


def _coerce(key: str, value: str, where: str) -> object:
    """The text of one layered setting (config file, environment, a flag's text) as the table's type."""
    value = value.strip()
    row = table.BY_KEY[key]
    if row.kind in ("on", "off", "bool"):
        lowered = value.lower()
        if lowered in table.TRUTHY:
            return True
        if lowered in table.FALSY:
            return False
        raise ConfigError(f"{where}: {key} must be yes or no, not {value!r}")
    if row.kind == "duration":
        return _duration(key, value, where)
    if row.choices and value not in row.choices:
        listed = ", ".join(row.choices[:-1]) + " or " + row.choices[-1]
        raise ConfigError(f"{where}: {key} must be {listed}, not {value!r}")
    if row.kind == "int":
        try:
            n = int(value)
        except ValueError:
            raise ConfigError(f"{where}: {key} must be a whole number of seconds, not {value!r}") from None
        if row.name == "max_tunnel_duration":
            check_max_tunnel_duration(n, f"{where}: {key}")
        return n
    if not value:
        raise ConfigError(f"{where}: {key} is empty")
    return value


def _layer(pairs: Mapping[str, str], where: str) -> Settings:
    values = {}
    for key, value in pairs.items():
        if key not in KEYS:
            raise ConfigError(f"{where}: unknown setting {key!r}",
                              hint=f"known settings: {', '.join(sorted(KEYS))}")
        values[KEYS[key]] = _coerce(key, value, where)
    return Settings(**values)  # type: ignore[arg-type]


def config_path() -> Path:
    known = table.config_file()
    if known is not None:
        return Path(known)
    from eic_proxy.store.files import config_dir

    return config_dir() / "config.ini"


def _matches(patterns: list[str], alias: str) -> bool:
    hit = False
    for pat in patterns:
        if pat.startswith("!"):
            if fnmatch.fnmatchcase(alias, pat[1:]):
                return False
        elif fnmatch.fnmatchcase(alias, pat):
            hit = True
    return hit


@dataclass(frozen=True)
class ConfigFile:
    path: Optional[Path]
    defaults: Settings
    hosts: tuple[tuple[tuple[str, ...], Settings], ...]

    def for_host(self, alias: str) -> Settings:
        result = self.defaults
        for patterns, layer in reversed(self.hosts):  # earlier sections go on top: first match wins
            if _matches(list(patterns), alias):
                result = layer.over(result)
        return result


def load(path: Optional[Path] = None) -> ConfigFile:
    """Read the config file; a missing file is an empty config, a broken one a one-line error."""
    import configparser

    path = path or config_path()
    parser = configparser.ConfigParser(interpolation=None, default_section="\x00none")
    try:
        with open(path, encoding="utf-8") as fh:
            parser.read_file(fh)
    except FileNotFoundError:
        if os.environ.get(ENV_PREFIX + "CONFIG"):
            raise ConfigError(f"config file {path} (from {ENV_PREFIX}CONFIG) does not exist") from None
        return ConfigFile(None, Settings(), ())
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    except configparser.Error as exc:
        first = str(exc).splitlines()[0]
        raise ConfigError(f"config file {path} is not valid INI: {first}",
                          hint="sections are [defaults] and [host PATTERN …]; lines are key = value") from None
    defaults = Settings()
    hosts = []
    for section in parser.sections():
        where = f"{path} [{section}]"
        if section == "defaults":
            defaults = _layer(parser[section], where)
        elif section.startswith("host ") and section[5:].split():
            hosts.append((tuple(section[5:].split()), _layer(parser[section], where)))
        else:
            raise ConfigError(f"{where}: unknown section", hint="use [defaults] or [host PATTERN …]")
    return ConfigFile(path, defaults, tuple(hosts))


def from_env(environ: Optional[Mapping[str, str]] = None) -> Settings:
    environ = os.environ if environ is None else environ
    pairs = {key: environ[ENV_PREFIX + name.upper()] for key, name in KEYS.items()
             if environ.get(ENV_PREFIX + name.upper())}
    return _layer(pairs, "environment")


def effective(alias: str, flags: Settings, suffix: Settings = Settings(),
              environ: Optional[Mapping[str, str]] = None, path: Optional[Path] = None) -> Settings:
    """The settings for one host, layered as the module docstring documents."""
    return suffix.over(flags.over(from_env(environ).over(load(path).for_host(alias))))


# ---- the options of one connection: defaults from settings.TABLE, one validation -------------------


@dataclass(frozen=True)
class ConnectOptions:
    host: str
    port: int = 22
    os_user: str = default("os_user")
    region: Optional[str] = default("region")
    profile: Optional[str] = default("profile")
    eice_id: Optional[str] = default("eice_id")
    max_tunnel_duration: Optional[int] = default("max_tunnel_duration")
    push: bool = default("push")
    use_cache: bool = default("use_cache")
    pick: Optional[str] = default("pick")
    start: bool = default("start")
    start_timeout: float = default("start_timeout")
    known_hosts_alias: Optional[str] = None  # ssh's %h: the name the generated block keys known_hosts on
    key_type: str = default("key_type")
    key_lifetime: Optional[float] = default("key_lifetime")
    key_store: Optional[str] = default("key_store")  # default: keyring in agent mode when a backend exists
    agent: bool = default("agent")
    identity: Optional[str] = default("identity")
    max_connections: int = default("max_connections")  # per endpoint, from this machine
    queue_timeout: float = default("queue_timeout")
    timeout: Optional[float] = default("timeout")  # API connect/read and WebSocket handshake, seconds
    keepalive: float = default("keepalive")
    expiry_warning: float = default("expiry_warning")
    host_keys: str = default("host_keys")
    ip_family: str = default("ip_family")
    banner_wait: float = default("banner_wait")


def validate(opts: ConnectOptions) -> None:
    if not 1 <= opts.port <= 65535:
        raise UsageError(f"port {opts.port} is out of range 1..65535")
    if opts.max_tunnel_duration is not None:
        check_max_tunnel_duration(opts.max_tunnel_duration)
    if opts.start_timeout <= 0:
        raise UsageError("--start-timeout must be positive")
    if opts.max_connections < 1:
        raise UsageError("--endpoint-connections must be at least 1")
    if opts.timeout is not None and opts.timeout <= 0:
        raise UsageError("--timeout must be positive")
    if opts.keepalive < 0 or opts.expiry_warning < 0:
        raise UsageError("--keepalive and --expiry-warning must not be negative")

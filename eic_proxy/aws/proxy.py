"""HTTP(S) proxies from the environment, with one NO_PROXY reading for the API calls and the WebSocket.

``https_proxy``/``HTTPS_PROXY`` for https and wss, ``http_proxy``/``HTTP_PROXY`` for plain http
(lowercase first, as curl does); basic auth from the URL's user:password. ``NO_PROXY``: comma- or
space-separated; ``*`` bypasses everything; ``example.com``, ``.example.com`` and ``*.example.com``
match that domain and everything below it on a label boundary; IP addresses and CIDR blocks match
addresses; an optional ``:port`` restricts an entry to one port. botocore (urllib) does not know
CIDR entries, so the API calls and the WebSocket both get their answer from here.
"""
from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from typing import Mapping, Optional, Union
from urllib.parse import unquote, urlsplit


@dataclass(frozen=True)
class Proxy:
    url: str
    host: str
    port: int
    auth: Optional[tuple[str, str]] = None


def _env(names: tuple[str, ...], environ: Mapping[str, str]) -> Optional[str]:
    for name in names:
        value = environ.get(name)
        if value and value.strip():
            return value.strip()
    return None


def _parse(value: str) -> Proxy:
    from eic_proxy.errors import UsageError

    if "://" not in value:
        value = "http://" + value
    try:
        parts = urlsplit(value)
        port = parts.port  # a port that is not a number raises here
    except ValueError as exc:  # "http://[bad", "http://proxy:port" (said without the password it may hold)
        raise UsageError(f"the proxy setting (HTTPS_PROXY / HTTP_PROXY) cannot be read as a URL: {exc}",
                         hint="give it as http://HOST:PORT (or http://user:pass@HOST:PORT), or unset it") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"unsupported proxy URL {parts.scheme}://{parts.hostname or ''}",
                         hint="use an http:// proxy (HTTP CONNECT), e.g. http://user:pass@proxy:3128")
    auth = (unquote(parts.username or ""), unquote(parts.password or "")) if parts.username else None
    return Proxy(value, parts.hostname, port or (443 if parts.scheme == "https" else 80), auth)


def _host_matches(host: str, port: Optional[int], entry: str) -> bool:
    entry = entry.strip().lower()
    if not entry:
        return False
    if entry == "*":
        return True
    entry_port = None
    if entry.startswith("["):  # [v6]:port
        addr, _, rest = entry[1:].partition("]")
        entry = addr
        if rest.startswith(":") and rest[1:].isdigit():
            entry_port = int(rest[1:])
    elif entry.count(":") == 1:
        name, _, p = entry.partition(":")
        if p.isdigit():
            entry, entry_port = name, int(p)
    if entry_port is not None and port is not None and entry_port != port:
        return False
    host = host.strip("[]").lower().rstrip(".")
    try:
        ip: Optional[Union[ipaddress.IPv4Address, ipaddress.IPv6Address]] = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    if ip is not None:
        try:
            return ip in ipaddress.ip_network(entry, strict=False)
        except ValueError:
            return False
    domain = entry.lstrip("*").lstrip(".").rstrip(".")
    return bool(domain) and (host == domain or host.endswith("." + domain))


def bypass(host: str, port: Optional[int] = None, environ: Optional[Mapping[str, str]] = None) -> bool:
    environ = os.environ if environ is None else environ
    value = _env(("no_proxy", "NO_PROXY"), environ) or ""
    return any(_host_matches(host, port, e) for e in value.replace(" ", ",").split(","))


def proxy_for(url: str, environ: Optional[Mapping[str, str]] = None) -> Optional[Proxy]:
    """The proxy to use for ``url`` (http, https, ws, wss), or None for a direct connection."""
    environ = os.environ if environ is None else environ
    parts = urlsplit(url)
    secure = parts.scheme in ("https", "wss")
    if not parts.hostname or bypass(parts.hostname, parts.port or (443 if secure else 80), environ):
        return None
    value = _env(("https_proxy", "HTTPS_PROXY") if secure else ("http_proxy", "HTTP_PROXY"), environ)
    return _parse(value) if value else None


def botocore_proxies(url: str) -> dict[str, str]:
    """The ``proxies`` mapping for a botocore Config, decided by ``proxy_for``."""
    p = proxy_for(url)
    if p is None:
        return {}
    return {urlsplit(url).scheme: p.url}

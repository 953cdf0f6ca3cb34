"""Opening the WebSocket: TLS (always verified) and the HTTP upgrade to the presigned URL, through a proxy if set.

The upgrade (RFC 6455 §4.1) and the proxy CONNECT are ours: a few lines, where websocket-client
cost 4 MiB of imports in every process and most of a tunnel's hand-shaking work. From then on the
socket belongs to ``pump.py`` and our own framing (``wsframes.py``). Every failure becomes one
EicProxyError.
"""
from __future__ import annotations

import base64
import hashlib
import logging
import os
import socket
import ssl
from typing import Optional

from eic_proxy import __version__
from eic_proxy.errors import HandshakeError, NetworkError, NetworkTimeout, ProtocolError, TlsError, UsageError
from eic_proxy.tunnel.endpoint_errors import clean_text, handshake_error

log = logging.getLogger(__name__)

DEFAULT_HANDSHAKE_TIMEOUT = 15.0


_CONTEXTS: dict[tuple[Optional[str], int, int], ssl.SSLContext] = {}


def botocore_bundle() -> Optional[str]:
    """The file botocore verifies with when no bundle is configured (``botocore.httpsession.where``):
    certifi's ``cacert.pem`` when certifi is installed, else botocore's own. Found without importing
    botocore, which a warm connection never loads."""
    from importlib.util import find_spec

    for package in ("certifi", "botocore"):
        try:
            spec = find_spec(package)
        except (ImportError, ValueError):
            continue
        if spec is not None and spec.origin:
            path = os.path.join(os.path.dirname(spec.origin), "cacert.pem")
            if os.path.isfile(path):
                return path
    return None


def tls_context(ca_bundle: Optional[str], host: str = "the endpoint") -> ssl.SSLContext:
    """A verifying client context (CERT_REQUIRED, hostname checked) on the trust store botocore's calls use:
    ``AWS_CA_BUNDLE`` (or the profile's ``ca_bundle``), else botocore's default bundle. Never OpenSSL's
    default paths, which python.org's macOS Python leaves empty until "Install Certificates.command" runs:
    the API calls would work and the tunnel fail.

    Kept per trust file (path, size, mtime): parsing the system store costs milliseconds, and the
    helper's forked connections inherit the context it loaded (README: "The helper"). A changed file
    gets a new context. With SSLKEYLOGFILE set (debugging), every connection gets its own.
    """
    ca_bundle = ca_bundle or botocore_bundle()
    path = ca_bundle or ssl.get_default_verify_paths().cafile
    try:
        st = os.stat(path) if path else None
    except OSError:
        st = None
    key = (ca_bundle, st.st_size if st else -1, st.st_mtime_ns if st else -1)
    keylog = os.environ.get("SSLKEYLOGFILE")
    ctx = None if keylog else _CONTEXTS.get(key)
    if ctx is not None:
        return ctx
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies certificate and hostname by default
    try:
        if ca_bundle:
            ctx.load_verify_locations(cafile=ca_bundle)
        else:
            ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    except (OSError, ssl.SSLError, ValueError) as exc:
        raise TlsError(f"cannot load the CA bundle {ca_bundle or 'of the system'} to verify {host}: {exc}",
                       hint="check AWS_CA_BUNDLE (or ca_bundle in the profile)") from exc
    if keylog:
        ctx.keylog_filename = keylog
    else:
        _CONTEXTS[key] = ctx
    return ctx


def open_websocket(url: str, ca_bundle: Optional[str] = None, timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
                   max_duration_sent: bool = False) -> socket.socket:
    """TLS + HTTP upgrade to the presigned URL; returns the connected (TLS) socket, ready for frames.

    TLS is always verified; ``ca_bundle`` (AWS_CA_BUNDLE / profile ca_bundle) only replaces the trust store.
    """
    from eic_proxy.aws.proxy import proxy_for

    host, port, target = _split(url)
    ctx = tls_context(ca_bundle, host)
    proxy = proxy_for(url)
    if proxy is not None and proxy.url.lower().startswith("https://"):
        # The CONNECT below is clear text: never send the proxy's credentials (and the endpoint's
        # name) unencrypted to a proxy the user declared as TLS.
        raise UsageError(f"the proxy {proxy.host}:{proxy.port} is an https:// proxy, which the tunnel cannot use yet",
                         hint="give the proxy as http://HOST:PORT (the tunnel inside it is TLS end to end), or "
                              "add the endpoint to NO_PROXY")
    raw: Optional[socket.socket] = None
    opened = False
    try:
        if proxy is not None:
            log.debug("= via proxy %s:%d", proxy.host, proxy.port)
            raw = socket.create_connection((proxy.host, proxy.port), timeout)
            _connect_through(raw, host, port, proxy.auth)
        else:
            raw = socket.create_connection((host, port), timeout)
        _tune(raw)
        sock = ctx.wrap_socket(raw, server_hostname=host)
        raw = sock
        key = base64.b64encode(os.urandom(16))
        sock.sendall(b"GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\nUser-Agent: eic-proxy/%s\r\n\r\n"
                     % (target.encode(), _host_header(host, port).encode(), key, __version__.encode()))
        status, headers = _read_head(sock)
        if status != 101:
            err = handshake_error(status, _read_body(sock, headers), max_duration_sent)
            if isinstance(err, HandshakeError):
                from eic_proxy.clock import http_date

                err.server_time = http_date(headers.get("date", ""))
            raise err
        _check_upgrade(headers, key)
        opened = True
        return sock
    except _ProxyRefused as exc:
        where = f"{proxy.host}:{proxy.port}" if proxy else "the proxy"
        raise NetworkError(f"the proxy {where} refused the tunnel to {host}: {exc}",
                           hint="check HTTPS_PROXY (and its user:password) and NO_PROXY") from exc
    except ssl.SSLCertVerificationError as exc:
        raise TlsError(f"TLS certificate of the endpoint {host} is not trusted: {exc.verify_message}",
                       hint="if you use a TLS-inspecting proxy or a test endpoint, set AWS_CA_BUNDLE to its CA") from exc
    except ssl.SSLError as exc:
        raise TlsError(f"TLS handshake with the endpoint {host} failed: {exc.reason or exc}",
                       hint="check proxies and AWS_CA_BUNDLE") from exc
    except socket.gaierror as exc:
        raise NetworkError(f"DNS lookup of the endpoint {host} failed: {exc.strerror}",
                           hint="check DNS and the network; the endpoint's DNS name must resolve") from exc
    except socket.timeout as exc:
        raise NetworkTimeout(f"timed out connecting to the endpoint {host}", hint="check the network and proxies") from exc
    except _BadHandshake as exc:
        raise ProtocolError(f"bad WebSocket handshake from the endpoint {host}: {exc}",
                            hint="a proxy may be interfering; retry with -v") from exc
    except (ConnectionError, OSError) as exc:
        if proxy is not None:
            raise NetworkError(f"cannot connect to the proxy {proxy.host}:{proxy.port}: {exc.strerror or exc}",
                               hint="check HTTPS_PROXY, or add the endpoint to NO_PROXY") from exc
        raise NetworkError(f"cannot connect to the endpoint {host}: {exc.strerror or exc}",
                           hint="check the network, proxies and firewall for outbound HTTPS (443)") from exc
    finally:
        if not opened and raw is not None:
            raw.close()


# RFC 6455 §1.3: the server proves it read our key by hashing it with this GUID.
_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_MAX_HEAD = 16 * 1024  # a response head longer than this is not an endpoint's
_MAX_BODY = 64 * 1024  # of a refusal's body, what we read (its JSON is a few hundred bytes)
BODY_WAIT = 2.0  # for a body of unknown length, how long the server may take to close


class _BadHandshake(Exception):
    """The peer answered, but not as a WebSocket server (or an HTTP proxy) does."""


class _ProxyRefused(Exception):
    """The proxy answered CONNECT with something other than 2xx."""


def _split(url: str) -> tuple[str, int, str]:
    """``wss://host[:port]/path?query`` → (host, port, "/path?query"); IPv6 literals without brackets."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme != "wss" or not parts.hostname:
        raise UsageError(f"not a wss:// URL: {url.split('?')[0]}")
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.hostname, parts.port or 443, target


def _host_header(host: str, port: int) -> str:
    name = f"[{host}]" if ":" in host else host
    return name if port == 443 else f"{name}:{port}"


def _tune(sock: socket.socket) -> None:
    """No Nagle delay for ssh's small packets; TCP keep-alive under the WebSocket's own."""
    for level, option, value in ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1), (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
                                 (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPIDLE", None), 30),
                                 (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPINTVL", None), 10),
                                 (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPCNT", None), 3)):
        if option is not None:
            try:
                sock.setsockopt(level, option, value)
            except OSError:
                pass


def _connect_through(sock: socket.socket, host: str, port: int, auth: Optional[tuple[str, str]]) -> None:
    """HTTP CONNECT to host:port over the proxy connection ``sock``."""
    authority = _host_header(host, port) if port != 443 else f"{_host_header(host, port)}:443"
    lines = [f"CONNECT {authority} HTTP/1.1", f"Host: {authority}"]
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        lines.append(f"Proxy-Authorization: Basic {token}")
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    status, _ = _read_head(sock, proxy=True)
    if not 200 <= status < 300:
        raise _ProxyRefused(f"HTTP {status}")


def _end_begun(head: bytearray) -> int:
    """How much of CRLF CRLF the head already ends with (the longest such beginning)."""
    for n in (3, 2, 1):
        if head.endswith(b"\r\n\r\n"[:n]):
            return n
    return 0


def _read_head(sock: socket.socket, proxy: bool = False) -> tuple[int, dict[str, str]]:
    """Status and headers (names lowercased), read never past the head's end: whatever follows (the
    first frames) stays in the socket for the framing layer. Each read asks for as many bytes as the
    end (CRLF CRLF) still needs at the least, a few at a time instead of one (~185 reads → ~50)."""
    head = bytearray()
    while not head.endswith(b"\r\n\r\n"):
        chunk = sock.recv(4 - _end_begun(head))
        if not chunk:
            raise (_ProxyRefused if proxy else _BadHandshake)("the connection closed during the handshake")
        head += chunk
        if len(head) > _MAX_HEAD:
            raise _BadHandshake("a response head of more than 16 KiB")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise (_ProxyRefused if proxy else _BadHandshake)(f"not an HTTP response: {clean_text(lines[0][:80])!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if colon:
            headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers


def _read_body(sock: socket.socket, headers: dict[str, str]) -> bytes:
    """A refusal's body, at most 64 KiB: by Content-Length, chunked, or else until the server closes
    (waiting at most BODY_WAIT for that: the body only words the error, it must not delay it)."""
    chunked = "chunked" in headers.get("transfer-encoding", "").lower()
    length = headers.get("content-length", "")
    want = min(int(length), _MAX_BODY) if length.isdigit() and not chunked else _MAX_BODY
    if chunked or not length.isdigit():
        sock.settimeout(min(sock.gettimeout() or BODY_WAIT, BODY_WAIT))
    raw = bytearray()
    try:
        while len(raw) < want and not (chunked and raw.endswith(b"0\r\n\r\n")):
            chunk = sock.recv(want - len(raw))
            if not chunk:
                break
            raw += chunk
    except OSError:
        pass
    return _dechunk(bytes(raw)) if chunked else bytes(raw)


def _dechunk(raw: bytes) -> bytes:
    """The payload of a chunked body (RFC 9112 §7.1), as far as it is well formed."""
    out, pos = bytearray(), 0
    while True:
        eol = raw.find(b"\r\n", pos)
        try:
            size = int(raw[pos:eol].split(b";")[0], 16) if eol >= 0 else 0
        except ValueError:
            size = 0
        if size <= 0:
            return bytes(out)
        out += raw[eol + 2:eol + 2 + size]
        pos = eol + 2 + size + 2


def _check_upgrade(headers: dict[str, str], key: bytes) -> None:
    if headers.get("upgrade", "").lower() != "websocket":
        raise _BadHandshake("no `Upgrade: websocket` in the 101 response")
    if "upgrade" not in [t.strip().lower() for t in headers.get("connection", "").split(",")]:
        raise _BadHandshake("no `Connection: upgrade` in the 101 response")
    expected = base64.b64encode(hashlib.sha1(key + _WS_GUID).digest()).decode()  # noqa: S324 - RFC 6455
    if headers.get("sec-websocket-accept") != expected:
        raise _BadHandshake("the Sec-WebSocket-Accept header does not match our key")
    if headers.get("sec-websocket-extensions") or headers.get("sec-websocket-protocol"):
        raise _BadHandshake("the endpoint chose an extension or subprotocol we did not offer")

"""Opening the WebSocket: TLS (always verified) and the HTTP upgrade to the presigned URL, through a proxy if set.

websocket-client does the upgrade and the proxy CONNECT; from then on its socket belongs to
``pump.py`` and our own framing (``wsframes.py``). Every failure becomes one EicProxyError.
"""
from __future__ import annotations

import logging
import os
import socket
import ssl
from typing import Any, Optional

from eic_proxy import __version__
from eic_proxy.errors import ExitCode, NetworkError, ProtocolError, UsageError
from eic_proxy.path.endpoint_errors import handshake_error

log = logging.getLogger(__name__)

DEFAULT_HANDSHAKE_TIMEOUT = 15.0


_CONTEXTS: dict[tuple[Optional[str], int, int], ssl.SSLContext] = {}


def tls_context(ca_bundle: Optional[str], host: str = "the endpoint") -> ssl.SSLContext:
    """A verifying client context (CERT_REQUIRED, hostname checked) on the trust store in use.

    Kept per trust file (path, size, mtime): parsing the system store costs milliseconds, and the
    helper's forked connections inherit the context it loaded (README: "The helper"). A changed file
    gets a new context. With SSLKEYLOGFILE set (debugging), every connection gets its own.
    """
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
        raise NetworkError(f"cannot load the CA bundle {ca_bundle or 'of the system'} to verify {host}: {exc}",
                           hint="check AWS_CA_BUNDLE (or ca_bundle in the profile)", exit_code=ExitCode.TLS) from exc
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
    import websocket

    host = url.split("/", 3)[2].split("?")[0]
    sslopt: dict[str, Any] = {"cert_reqs": ssl.CERT_REQUIRED, "check_hostname": True,
                              "context": tls_context(ca_bundle, host)}
    from eic_proxy.aws.proxy import proxy_for

    proxy = proxy_for(url)
    proxy_opts: dict[str, Any] = {"http_no_proxy": ["*"]}  # never let the library read the env on its own
    if proxy is not None and proxy.url.lower().startswith("https://"):
        # websocket-client speaks CONNECT in clear text only: never send the proxy's credentials (and the
        # endpoint's name) unencrypted to a proxy the user declared as TLS.
        raise UsageError(f"the proxy {proxy.host}:{proxy.port} is an https:// proxy, which the tunnel cannot use yet",
                         hint="give the proxy as http://HOST:PORT (the tunnel inside it is TLS end to end), or "
                              "add the endpoint to NO_PROXY")
    if proxy is not None:
        proxy_opts = {"http_proxy_host": proxy.host, "http_proxy_port": proxy.port, "proxy_type": "http",
                      "http_proxy_auth": proxy.auth}
        log.debug("= via proxy %s:%d", proxy.host, proxy.port)
    try:
        ws = websocket.create_connection(
            url,
            timeout=timeout,
            sslopt=sslopt,
            **proxy_opts,
            enable_multithread=True,
            skip_utf8_validation=True,
            suppress_origin=True,
            header=[f"User-Agent: eic-proxy/{__version__}"],
        )
    except websocket.WebSocketProxyException as exc:
        where = f"{proxy.host}:{proxy.port}" if proxy else "the proxy"
        raise NetworkError(f"the proxy {where} refused the tunnel to {host}: {exc}",
                           hint="check HTTPS_PROXY (and its user:password) and NO_PROXY") from exc
    except websocket.WebSocketBadStatusException as exc:
        # Never show str(exc): it carries the response headers. The JSON body has the Message.
        raise handshake_error(exc.status_code, exc.resp_body or b"", max_duration_sent) from exc
    except ssl.SSLCertVerificationError as exc:
        raise NetworkError(f"TLS certificate of the endpoint {host} is not trusted: {exc.verify_message}",
                           hint="if you use a TLS-inspecting proxy or a test endpoint, set AWS_CA_BUNDLE to its CA",
                           exit_code=ExitCode.TLS) from exc
    except ssl.SSLError as exc:
        raise NetworkError(f"TLS handshake with the endpoint {host} failed: {exc.reason or exc}",
                           hint="check proxies and AWS_CA_BUNDLE", exit_code=ExitCode.TLS) from exc
    except socket.gaierror as exc:
        raise NetworkError(f"DNS lookup of the endpoint {host} failed: {exc.strerror}",
                           hint="check DNS and the network; the endpoint's DNS name must resolve") from exc
    except (socket.timeout, websocket.WebSocketTimeoutException) as exc:
        raise NetworkError(f"timed out connecting to the endpoint {host}", hint="check the network and proxies",
                           exit_code=ExitCode.TIMEOUT) from exc
    except (ConnectionError, OSError) as exc:
        if proxy is not None:
            raise NetworkError(f"cannot connect to the proxy {proxy.host}:{proxy.port}: {exc.strerror or exc}",
                               hint="check HTTPS_PROXY, or add the endpoint to NO_PROXY") from exc
        raise NetworkError(f"cannot connect to the endpoint {host}: {exc.strerror or exc}",
                           hint="check the network, proxies and firewall for outbound HTTPS (443)") from exc
    except websocket.WebSocketException as exc:
        raise ProtocolError(f"bad WebSocket handshake from the endpoint {host}: {exc}",
                            hint="a proxy may be interfering; retry with -v") from exc
    sock: Optional[socket.socket] = ws.sock
    if sock is None:  # pragma: no cover - create_connection returns connected or raises
        raise NetworkError(f"the connection to the endpoint {host} closed during the handshake")
    return sock

"""Our WebSocket upgrade and proxy CONNECT (transport/handshake.py) against a scripted TLS server on loopback:
what a real endpoint answers, and what a broken or hostile one might."""
from __future__ import annotations

import base64
import hashlib
import socket
import ssl
import threading
import time
from pathlib import Path
from typing import Callable, Optional

import pytest

from eic_proxy.errors import ExitCode, HandshakeError, NetworkError, ProtocolError
from eic_proxy.transport.handshake import _split, open_websocket
from tests.testbed import ca as test_ca
from tests.unit.wsserver import server_frame

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def accept_for(request: bytes) -> bytes:
    key = next(line.split(b":", 1)[1].strip() for line in request.split(b"\r\n")
               if line.lower().startswith(b"sec-websocket-key:"))
    return base64.b64encode(hashlib.sha1(key + GUID).digest())


def upgrade(request: bytes, accept: Optional[bytes] = None, extra: bytes = b"") -> bytes:
    return (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + (accept if accept is not None else accept_for(request)) + b"\r\n" + extra + b"\r\n")


class Endpoint:
    """One TLS connection: reads the request head, answers with ``reply(request)``, then holds on."""

    def __init__(self, tmp: Path, reply: Callable[[bytes], bytes], close: bool = False) -> None:
        self.ca = test_ca.TestCA.create(tmp / "ca")
        cert, key = self.ca.issue(tmp / "ca", "endpoint", ["127.0.0.1"])
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert, key)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.reply = reply
        self.close_after = close
        self.request = b""
        self.conn: Optional[ssl.SSLSocket] = None
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        raw, _ = self.listener.accept()
        try:
            self.conn = self.ctx.wrap_socket(raw, server_side=True)
            while b"\r\n\r\n" not in self.request:
                chunk = self.conn.recv(4096)
                if not chunk:
                    return
                self.request += chunk
            answer = self.reply(self.request)
            if answer:
                self.conn.sendall(answer)
            if self.close_after:
                self.conn.close()
        except (OSError, ssl.SSLError):
            pass

    def url(self) -> str:
        return f"wss://127.0.0.1:{self.port}/openTunnel?instanceConnectEndpointId=eice-1&remotePort=22"

    def close(self) -> None:
        self.listener.close()
        if self.conn is not None:
            self.conn.close()


@pytest.fixture
def endpoint(tmp_path, monkeypatch):
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    made: list[Endpoint] = []

    def make(reply: Callable[[bytes], bytes], close: bool = False) -> Endpoint:
        made.append(Endpoint(tmp_path, reply, close))
        return made[-1]

    yield make
    for e in made:
        e.close()


def test_the_upgrade_leaves_the_first_frame_in_the_socket(endpoint):
    ep = endpoint(lambda req: upgrade(req) + server_frame(0x2, b"SSH-2.0-x\r\n"))
    sock = open_websocket(ep.url(), str(ep.ca.pem_path), timeout=5)
    try:
        got = b""
        while len(got) < 2 + 11:
            got += sock.recv(100)
        assert got == server_frame(0x2, b"SSH-2.0-x\r\n")
    finally:
        sock.close()
    head = ep.request.decode()
    assert head.startswith("GET /openTunnel?instanceConnectEndpointId=eice-1&remotePort=22 HTTP/1.1\r\n")
    lines = {line.split(":", 1)[0].lower(): line.split(":", 1)[1].strip() for line in head.split("\r\n")[1:] if ":" in line}
    assert lines["host"] == f"127.0.0.1:{ep.port}" and lines["upgrade"] == "websocket"
    assert lines["sec-websocket-version"] == "13" and lines["user-agent"].startswith("eic-proxy/")
    assert "origin" not in lines and "sec-websocket-extensions" not in lines


@pytest.mark.parametrize("reply, words", [
    (lambda req: upgrade(req, accept=b"bm90IHRoZSBhbnN3ZXI="), "Sec-WebSocket-Accept"),
    (lambda req: upgrade(req, extra=b"Sec-WebSocket-Extensions: permessage-deflate\r\n"), "extension"),
    (lambda req: b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n\r\n", "Upgrade: websocket"),
    (lambda req: b"SSH-2.0-OpenSSH_9.2\r\n\r\n", "not an HTTP response"),
    (lambda req: b"HTTP/1.1 101 OK\r\n" + b"X-Pad: " + b"a" * 20000 + b"\r\n\r\n", "16 KiB"),
    (lambda req: b"HTTP/1.1 101 Swi", "closed during the handshake"),
])
def test_a_broken_upgrade_is_one_protocol_error(endpoint, reply, words):
    ep = endpoint(reply, close=True)
    with pytest.raises(ProtocolError) as info:
        open_websocket(ep.url(), str(ep.ca.pem_path), timeout=5)
    assert words in info.value.message and "\n" not in info.value.message


def test_a_refusal_is_the_endpoint_error_of_its_json_body(endpoint):
    body = b'{"ErrorCode":"AccessDeniedException","Message":"not authorized to perform: ec2-instance-connect:OpenTunnel"}'
    ep = endpoint(lambda req: b"HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                  % (len(body), body))
    with pytest.raises(HandshakeError) as info:
        open_websocket(ep.url(), str(ep.ca.pem_path), timeout=5)
    assert info.value.status == 403 and info.value.error_code == "AccessDeniedException"
    assert "OpenTunnel" in info.value.message


def test_a_silent_endpoint_is_a_timeout(endpoint):
    ep = endpoint(lambda req: b"")
    with pytest.raises(NetworkError) as info:
        open_websocket(ep.url(), str(ep.ca.pem_path), timeout=0.5)
    assert info.value.exit_code == ExitCode.TIMEOUT


def test_a_certificate_from_another_ca_is_refused(endpoint, tmp_path):
    ep = endpoint(lambda req: upgrade(req))
    other = test_ca.TestCA.create(tmp_path / "other", cn="someone else")
    with pytest.raises(NetworkError) as info:
        open_websocket(ep.url(), str(other.pem_path), timeout=5)
    assert info.value.exit_code == ExitCode.TLS and "not trusted" in info.value.message


def test_a_proxy_that_refuses_connect_is_named(monkeypatch):
    proxy = socket.create_server(("127.0.0.1", 0))
    seen: list[bytes] = []

    def serve() -> None:
        conn, _ = proxy.accept()
        data = b""
        while b"\r\n\r\n" not in data:
            data += conn.recv(4096)
        seen.append(data)
        conn.sendall(b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n")
        conn.close()

    threading.Thread(target=serve, daemon=True).start()
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.setenv("HTTPS_PROXY", f"http://user:p%40ss@127.0.0.1:{proxy.getsockname()[1]}")
    monkeypatch.delenv("https_proxy", raising=False)
    try:
        with pytest.raises(NetworkError) as info:
            open_websocket("wss://eice.example.invalid/openTunnel?x=1", None, timeout=5)
    finally:
        proxy.close()
    assert "refused the tunnel" in info.value.message and "407" in info.value.message
    assert seen[0].startswith(b"CONNECT eice.example.invalid:443 HTTP/1.1\r\n")
    assert b"Proxy-Authorization: Basic " + base64.b64encode(b"user:p@ss") in seen[0]


@pytest.mark.parametrize("url, want", [
    ("wss://eice-1.ec2-instance-connect-endpoint.us-east-1.amazonaws.com/openTunnel?a=b",
     ("eice-1.ec2-instance-connect-endpoint.us-east-1.amazonaws.com", 443, "/openTunnel?a=b")),
    ("wss://127.0.0.1:8443/openTunnel", ("127.0.0.1", 8443, "/openTunnel")),
    ("wss://[::1]/openTunnel?x", ("::1", 443, "/openTunnel?x")),
    ("wss://[::1]:9443/o", ("::1", 9443, "/o")),
])
def test_urls_split_into_host_port_and_target(url, want):
    assert _split(url) == want


def test_a_chunked_refusal_is_read_and_one_of_unknown_length_does_not_delay_the_error(endpoint):
    body = b'{"ErrorCode":"AccessDeniedException","Message":"no OpenTunnel for you"}'
    chunked = b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (10, body[:10], len(body) - 10, body[10:])
    ep = endpoint(lambda req: b"HTTP/1.1 403 Forbidden\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked)
    with pytest.raises(HandshakeError) as info:
        open_websocket(ep.url(), str(ep.ca.pem_path), timeout=30)
    assert info.value.error_code == "AccessDeniedException" and "no OpenTunnel for you" in info.value.message
    # No length, and the connection stays open: the error comes after BODY_WAIT, not after the timeout.
    ep = endpoint(lambda req: b"HTTP/1.1 403 Forbidden\r\n\r\n" + body)
    started = time.monotonic()
    with pytest.raises(HandshakeError) as info:
        open_websocket(ep.url(), str(ep.ca.pem_path), timeout=30)
    assert time.monotonic() - started < 20 and info.value.error_code == "AccessDeniedException"


@pytest.mark.parametrize("head", [
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
    b"HTTP/1.1 101 OK\r\nX-A: \r\rb\r\n\rX-B: \r\n\r\n",  # CRs and CRLFs that are not the end
    b"HTTP/1.1 101 OK\r\n\r\n",
])
def test_the_head_is_read_to_its_end_and_not_a_byte_further(head):
    """What follows the 101 (the instance's SSH banner, often in the same TLS record) stays in the
    socket for the framing layer, however the head's bytes fall into reads."""
    from eic_proxy.transport.handshake import _read_head

    a, b = socket.socketpair()
    with a, b:
        a.sendall(head + b"\x82\x05SSH-2")
        status, headers = _read_head(b)
        assert status == 101 and b.recv(64) == b"\x82\x05SSH-2"

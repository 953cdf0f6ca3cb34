"""HTTPS_PROXY / HTTP_PROXY / NO_PROXY through a real CONNECT proxy (tinyproxy) on loopback."""
from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from eic_proxy.errors import ExitCode
from tests.conftest import assert_one_line_error
from tests.testbed.sshd import wait_listening

pytestmark = pytest.mark.e2e
TINYPROXY = shutil.which("tinyproxy") or "/usr/bin/tinyproxy"


@pytest.fixture(scope="module")
def tinyproxy(tmp_path_factory):
    if not Path(TINYPROXY).exists():
        import os

        if os.environ.get("CI"):
            pytest.fail("tinyproxy is not installed (scripts/bootstrap.sh installs it)")
        pytest.skip("tinyproxy is not installed")
    d = tmp_path_factory.mktemp("tinyproxy")
    d.chmod(0o777)  # tinyproxy may drop privileges before it opens its log
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    log = d / "log"
    (d / "conf").write_text(f"Port {port}\nListen 127.0.0.1\nTimeout 60\nLogFile \"{log}\"\nLogLevel Connect\n"
                            "MaxClients 100\nAllow 127.0.0.1\nConnectPort 443\nBasicAuth proxyuser s3cret\n")
    proc = subprocess.Popen([TINYPROXY, "-d", "-c", str(d / "conf")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    wait_listening("127.0.0.1", port, proc)
    yield port, log
    proc.terminate()
    proc.wait(5)


def _log_text(log: Path) -> str:
    try:
        return log.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def test_api_calls_and_websocket_go_through_the_proxy_with_basic_auth(client, world, tinyproxy):
    port, log = tinyproxy
    before = len(_log_text(log))
    url = f"http://proxyuser:s3cret@127.0.0.1:{port}"
    env = dict(client.env, HTTPS_PROXY=url, HTTP_PROXY=url)
    r = client.run(["ssh", "-F", str(client.config), "web-1", "echo proxied"], env=env)
    assert r.returncode == 0 and r.stdout == b"proxied\n", r.stderr
    seen = _log_text(log)[before:]
    endpoint = next(iter(client.bed.aws.endpoints.values()))["DnsName"]
    assert f"CONNECT {endpoint}:443" in seen            # the WebSocket, tunnelled by HTTP CONNECT
    assert f"{client.bed.aws.url}/" in seen              # the AWS API calls (plain http on the bed)


def test_no_proxy_cidr_bypasses_both(client, world, tinyproxy):
    port, log = tinyproxy
    url = f"http://proxyuser:s3cret@127.0.0.1:{port}"
    before = len(_log_text(log))
    env = dict(client.env, HTTPS_PROXY=url, HTTP_PROXY=url, NO_PROXY="example.com,127.0.0.0/8")
    r = client.run(["ssh", "-F", str(client.config), "web-1", "true"], env=env)
    assert r.returncode == 0, r.stderr
    assert "Request" not in _log_text(log)[before:] and "CONNECT 127" not in _log_text(log)[before:]


def test_wrong_proxy_password_is_a_clear_error(client, world, tinyproxy):
    port, _ = tinyproxy
    env = dict(client.env, HTTPS_PROXY=f"http://proxyuser:wrong@127.0.0.1:{port}", NO_PROXY="127.0.0.1")
    r = client.run([client.bed.eic_proxy_path(), "connect", "web-1"], env=env, timeout=60)
    assert_one_line_error(r, ExitCode.NETWORK, "proxy", "refused", "user:password")


def test_https_proxy_never_gets_the_tunnel_or_its_password_in_clear(client, world):
    """An https:// proxy: the tunnel refuses it (one line, exit 3) and sends it nothing at all."""
    import socket
    from urllib.parse import urlsplit

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    api_host = urlsplit(client.bed.aws.url).hostname
    env = dict(client.env, HTTPS_PROXY=f"https://proxyuser:s3cret@127.0.0.1:{listener.getsockname()[1]}",
               NO_PROXY=api_host)
    r = client.run([client.bed.eic_proxy_path(), "connect", "web-1"], input=b"", env=env, timeout=60)
    listener.setblocking(False)
    try:  # the proxy has ended: whatever it sent to the "proxy" is queued on this listener by now
        conn, _ = listener.accept()
        conn.settimeout(2)
        try:
            received = conn.recv(65536)
        except OSError:
            received = b""  # connected, sent nothing
        conn.close()
    except BlockingIOError:
        received = b""  # it never even connected
    listener.close()
    assert_one_line_error(r, ExitCode.CONFIG, "https:// proxy", "http://")
    assert b"s3cret" not in received and not received

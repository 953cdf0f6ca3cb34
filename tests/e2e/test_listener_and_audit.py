"""`eic-proxy tunnel` (listener mode) and `eic-proxy audit`."""
from __future__ import annotations

import json
import queue
import signal
import socket
import socketserver
import subprocess
import threading
import time

import pytest

from tests.conftest import wait_until

pytestmark = pytest.mark.e2e


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while True:
            data = self.request.recv(65536)
            if not data:
                return
            self.request.sendall(data)


@pytest.fixture(scope="module")
def rdp_echo(world):
    """A TCP echo service on the instance's port 3389, standing in for RDP."""
    server = socketserver.ThreadingTCPServer((world.web.ip, 3389), _Echo)
    server.daemon_threads = True
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield world.web
    server.shutdown()
    server.server_close()


class Listener:
    def __init__(self, client, *args: str, program: str = "", env=None) -> None:
        self.proc = subprocess.Popen([program or client.bed.eic_proxy_path(), "tunnel", *args], env=env or client.env,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True)
        self.lines: "queue.Queue[str]" = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        first = self.wait_for("listening on")
        self.port = int(first.split("127.0.0.1:", 1)[1].split()[0])
        assert f"[::1]:{self.port}" in first  # loopback only, both families

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.put(line.rstrip("\n"))

    def wait_for(self, text: str, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        for line in self.seen:
            if text in line:
                self.seen.remove(line)
                return line
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                break
            if text in line:
                return line
            self.seen.append(line)
        raise AssertionError(f"no {text!r} on stderr; saw {self.seen}; exit {self.proc.poll()}")

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(10)


def _echo_once(port: int, payload: bytes, host: str = "127.0.0.1") -> bytes:
    """Send, read the echo back, close. (No half-close: a WebSocket CLOSE ends both directions, §4.3.)"""
    with socket.create_connection((host, port), timeout=20) as s:
        s.sendall(payload)
        out = b""
        while len(out) < len(payload):
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:  # closed by the listener with our bytes unread
                break
            if not chunk:
                break
            out += chunk
        return out


def test_tunnel_carries_five_concurrent_connections_and_survives_a_failed_handshake(client, rdp_echo):
    lst = Listener(client, "web-1", "--local-port", "0", "--remote-port", "3389")
    try:
        payloads = [bytes([i]) * (200_000 + i) for i in range(5)]
        results: dict[int, bytes] = {}

        def one(i: int) -> None:
            results[i] = _echo_once(lst.port, payloads[i])

        threads = [threading.Thread(target=one, args=(i,)) for i in range(5)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert all(results.get(i) == payloads[i] for i in range(5))
        assert client.bed.eice.peak[next(iter(client.bed.aws.endpoints))] >= 2  # really concurrent tunnels
        for _ in range(5):
            lst.wait_for(": closed (eof")
        assert client.bed.aws.count("SendSSHPublicKey") == 0  # not port 22: no key push

        client.bed.eice.inject("status:403:AccessDeniedException")
        assert _echo_once(lst.port, b"refused") == b""  # that one connection is closed...
        line = lst.wait_for(": failed:")
        assert "403" in line or "denied" in line.lower()
        assert _echo_once(lst.port, b"still here", host="::1") == b"still here"  # ...the listener lives on
        assert lst.stop() == 0
        lst.wait_for("listener stopped")
    finally:
        if lst.proc.poll() is None:
            lst.proc.kill()


def test_tunnel_limits_connections_and_ends_them_on_ctrl_c(client, rdp_echo):
    lst = Listener(client, "web-1", "--local-port", "0", "--remote-port", "3389", "--max-connections", "1")
    try:
        a = socket.create_connection(("127.0.0.1", lst.port), timeout=20)
        a.sendall(b"first")
        assert a.recv(5) == b"first"
        b = socket.create_connection(("127.0.0.1", lst.port), timeout=20)
        lst.wait_for("waiting, 1 connections are open")
        b.sendall(b"second")
        a.close()  # frees the one slot
        assert b.recv(6) == b"second"
        t0 = time.monotonic()
        assert lst.stop() == 0  # SIGINT with a connection open: it is closed, the process exits 0
        assert time.monotonic() - t0 < 8
        b.settimeout(5)
        assert b.recv(10) == b""
        b.close()
    finally:
        if lst.proc.poll() is None:
            lst.proc.kill()


def test_tunnel_refuses_a_busy_port_in_one_line(client, world):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        r = client.proxy("tunnel", "web-1", "--local-port", str(s.getsockname()[1]))
    assert r.returncode != 0 and "cannot listen on 127.0.0.1" in r.stderr and "Traceback" not in r.stderr


def _audit(client, *args):
    r = client.proxy("audit", "--json", *args)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def _wait_for_disconnects(client, n: int, timeout: float = 15.0) -> None:
    """ssh does not wait for its ProxyCommand: the proxy writes its `disconnect` line just after."""
    log = client.home / ".local/state" / "eic-proxy" / "audit.jsonl"
    done = wait_until(lambda: log.exists() and log.read_text().count('"event":"disconnect"') >= n, timeout, 0.05)
    assert done, f"fewer than {n} disconnect entries in {log} after {timeout} s"


def test_connections_are_audited_at_start_and_end(client, world):
    assert client.ssh("web-1", "head -c 5000 /dev/zero").returncode == 0
    _wait_for_disconnects(client, 1)  # else the next connect may be logged before this end
    assert client.ssh("web-1", "true").returncode == 0
    _wait_for_disconnects(client, 2)
    doc = _audit(client, "--host", "web-1")
    events = [e["event"] for e in doc["local"]]
    assert events == ["push", "connect", "disconnect", "connect", "disconnect"]
    push, c1, d1 = doc["local"][:3]
    assert c1["id"] == d1["id"] and c1["instance_id"] == world.web.instance_id and c1["port"] == 22
    assert c1["push_request_id"] == push["request_id"] == client.bed.aws.pushes[0]["request_id"]
    assert doc["local"][3]["push_request_id"] == push["request_id"]  # reused push, still named
    assert d1["bytes_down"] > 5000 and d1["bytes_up"] > 0 and d1["exit_code"] == 0
    # ssh ends its ProxyCommand with SIGHUP, or we see its EOF first, or (a loaded machine) the endpoint's
    # normal close after sshd ended the session arrives before either: all three are a clean end
    assert d1["reason"] in ("eof", "signal:1", "closed")
    assert d1["duration"] > 0
    text = client.proxy("audit", "--host", "web-1").stdout.decode()
    assert "disconnect  web-1" in text and "exit 0" in text


def test_audit_filters_and_failed_connections(client, world):
    assert client.ssh("web-1", "true").returncode == 0
    assert client.ssh(world.no_endpoint.instance_id, "true").returncode == 255
    failed = [e for e in _audit(client)["local"] if e["event"] == "connect-failed"]
    assert len(failed) == 1 and failed[0]["host"] == world.no_endpoint.instance_id and failed[0]["exit_code"] == 7
    assert all(e.get("host") == "web-1" or e.get("instance_id") == world.web.instance_id
               for e in _audit(client, "--host", "web-*")["local"])
    # ssh does not wait for its ProxyCommand: the "disconnect" entry may land just after ssh exits
    assert wait_until(lambda: len(_audit(client, "--since", "1h")["local"]) >= 4, 5)
    assert _audit(client, "--since", "2999-01-01")["local"] == []
    assert len(_audit(client, "--limit", "2")["local"]) == 2
    bad = client.proxy("audit", "--since", "yesterday-ish")
    assert bad.returncode == 3 and "--since" in bad.stderr and bad.stderr.count("\n") == 1


def test_cloudtrail_events_line_up_with_local_entries(client, bed, world):
    assert client.ssh("web-1", "true").returncode == 0
    bed.aws.record_event("SendSSHPublicKey", "someone-elses-request",
                         {"instanceId": world.web.instance_id, "instanceOSUser": "ubuntu"})
    doc = _audit(client, "--host", "web-1", "--cloudtrail")
    trail = doc["cloudtrail"]
    names = sorted(e["name"] for e in trail)
    assert names == ["OpenTunnel", "SendSSHPublicKey", "SendSSHPublicKey"]
    ours = next(e for e in trail if e["name"] == "SendSSHPublicKey" and e["request_id"] != "someone-elses-request")
    push = next(e for e in doc["local"] if e["event"] == "push")
    assert ours["request_id"] == push["request_id"] and ours["matched"] == push["time"]
    tunnel = next(e for e in trail if e["name"] == "OpenTunnel")
    assert tunnel["matched"] and tunnel["private_ip"] == world.web.ip and tunnel["port"] == 22
    other = next(e for e in trail if e["request_id"] == "someone-elses-request")
    assert "matched" not in other
    text = client.proxy("audit", "--host", "web-1", "--cloudtrail").stdout.decode()
    assert "no local entry" in text and "= local" in text
    assert _audit(client, "--host", "web-1", "--cloudtrail", "--principal", "nobody")["cloudtrail"] == []
    bed.aws.inject("LookupEvents", "AccessDeniedException", status=400)
    denied = client.proxy("audit", "--cloudtrail")
    assert denied.returncode == 8 and "cloudtrail:LookupEvents" in denied.stderr

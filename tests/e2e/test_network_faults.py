"""Faults from the endpoint and the network: a clear line, the right exit code, no hang."""
from __future__ import annotations

import hashlib
import os
import subprocess
import time

import pytest

from eic_proxy.errors import ExitCode
from tests.conftest import BlobServer, assert_one_line_error

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


@pytest.fixture
def blob(world):
    data = os.urandom(1_000_000)
    server = BlobServer(world.web.ip, payload=data)
    yield server, data
    server.close()


@pytest.fixture
def echo(world):
    server = BlobServer(world.web.ip, echo=True)
    yield server
    server.close()


def _connect(client, world, port, *extra, input=b"", timeout=60):
    return client.proxy("connect", world.web.instance_id, str(port), "--no-push", *extra, input=input,
                        timeout=timeout)


@pytest.mark.parametrize("fault, code, words", [
    ("text-frame", ExitCode.PROTOCOL, ["TEXT frame"]),
    ("invalid-frame", ExitCode.PROTOCOL, ["invalid WebSocket data"]),
    ("oversized-frame", ExitCode.PROTOCOL, ["limit"]),
    ("drop", ExitCode.NETWORK, ["lost"]),
    ("close:1001:Going away", ExitCode.TUNNEL_CLOSED, ["1001", "Going away"]),
    ("close:1008:Policy violation", ExitCode.TUNNEL_CLOSED, ["1008", "Policy violation"]),
    ("close:1011:Internal error", ExitCode.TUNNEL_CLOSED, ["1011", "Internal error"]),
    ("close:1011:Unable to connect to target", ExitCode.TARGET_UNREACHABLE, ["Unable to connect", "security group"]),
    ("close:1013:Try again later", ExitCode.TUNNEL_CLOSED, ["1013", "retry"]),
    ("close:4000:Custom reason", ExitCode.TUNNEL_CLOSED, ["4000", "Custom reason"]),
])
def test_endpoint_faults_end_with_one_line_and_exit_code(client, world, echo, fault, code, words):
    client.bed.eice.inject(fault)
    start = time.monotonic()
    # ssh's stdin stays open: an EOF of ours first would race the endpoint's fault to end the tunnel
    r = _held_open(client, world, echo.port, input=b"hello")
    assert_one_line_error(r, code, *words)
    assert time.monotonic() - start < 20


def test_normal_close_1000_is_success(client, world, echo):
    client.bed.eice.inject("close:1000:")
    r = _connect(client, world, echo.port)
    assert r.returncode == 0 and r.stderr == "", r.stderr


def _held_open(client, world, port, input=b""):
    """Run a tunnel whose stdin stays open (as ssh's does) until the endpoint side ends it."""
    from tests.conftest import Result

    proc = subprocess.Popen([client.bed.eic_proxy_path(), "connect", world.web.instance_id, str(port), "--no-push"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=client.env)
    try:
        if input:
            proc.stdin.write(input)
            proc.stdin.flush()
        out = proc.stdout.read()
        code = proc.wait(20)
        return Result(code, out, proc.stderr.read().decode())
    finally:
        proc.stdin.close()
        if proc.poll() is None:
            proc.kill()


def test_drop_mid_stream_delivers_what_arrived_then_fails(client, world, blob):
    server, data = blob
    client.bed.eice.inject("drop-after:300000")
    r = _held_open(client, world, server.port)
    assert_one_line_error(r, ExitCode.NETWORK, "lost")
    assert 0 < len(r.stdout) <= 300000 and data.startswith(r.stdout)


@pytest.mark.parametrize("status, code, words", [
    ("403:AccessDeniedException", ExitCode.ACCESS_DENIED, ["OpenTunnel"]),
    ("500:InternalServerError", ExitCode.SERVICE_UNAVAILABLE, ["500", "retry"]),
    ("400:InvalidParameterException", ExitCode.HANDSHAKE_REJECTED, ["400", "port"]),
])
def test_handshake_refusals(client, world, echo, status, code, words):
    client.bed.eice.inject(f"status:{status}")
    r = _connect(client, world, echo.port)
    assert_one_line_error(r, code, *words)


def test_429_is_retried_then_gives_up_within_the_queue_timeout(client, world, echo):
    client.bed.eice.inject("status:429:TooManyRequestsException")
    seen = len(client.bed.eice.handshakes)
    r = _connect(client, world, echo.port, input=b"x")
    assert r.returncode == 0, r.stderr  # one 429, retried, then through
    assert [h.status for h in client.bed.eice.handshakes[seen:]] == [429, 101]
    for _ in range(50):
        client.bed.eice.inject("status:429:TooManyRequestsException")
    start = time.monotonic()
    r = _connect(client, world, echo.port, "--queue-timeout", "2")
    assert_one_line_error(r, ExitCode.SERVICE_UNAVAILABLE, "429")
    assert time.monotonic() - start < 15
    client.bed.eice.faults.clear()


def test_handshake_that_never_answers_times_out(client, world, echo):
    client.bed.eice.inject("stall-handshake")
    start = time.monotonic()
    r = _connect(client, world, echo.port, "--timeout", "2")
    assert_one_line_error(r, ExitCode.TIMEOUT, "timed out")
    assert time.monotonic() - start < 15


def test_dead_path_is_found_by_keepalive(client, world, echo):
    client.bed.eice.inject("stall-after:1.5")
    proc = subprocess.Popen([client.bed.eic_proxy_path(), "connect", world.web.instance_id, str(echo.port),
                             "--no-push", "--keepalive", "0.5"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=client.env)
    try:
        proc.stdin.write(b"alive\n")
        proc.stdin.flush()
        assert proc.stdout.read(6) == b"alive\n"
        start = time.monotonic()
        assert proc.wait(20) == ExitCode.TIMEOUT  # stdin stays open: only the keep-alive can end it
        assert time.monotonic() - start < 10
        err = proc.stderr.read().decode()
        assert err.count("\n") == 1 and "stopped answering" in err and "Traceback" not in err
    finally:
        if proc.poll() is None:
            proc.kill()


def test_slow_endpoint_reader_loses_nothing(client, world, echo):
    client.bed.eice.inject("slow-read")
    payload = os.urandom(4 * 1024 * 1024)
    got = _echo_through(client, world, echo.port, payload)
    assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()


def _echo_through(client, world, port, payload: bytes) -> bytes:
    """Send ``payload`` to an echo service and read it all back before closing (no half-close in EICE)."""
    import threading

    proc = subprocess.Popen([client.bed.eic_proxy_path(), "connect", world.web.instance_id, str(port), "--no-push"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=client.env)
    writer = threading.Thread(target=lambda: (proc.stdin.write(payload), proc.stdin.flush()), daemon=True)
    writer.start()
    try:
        got = bytearray()
        while len(got) < len(payload):
            chunk = proc.stdout.read1(1 << 20)
            if not chunk:
                break
            got += chunk
        proc.stdin.close()
        assert proc.wait(10) == 0, proc.stderr.read()
        return bytes(got)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_slow_local_reader_loses_nothing(client, world, tmp_path):
    """ssh reads slowly: the pump must wait (backpressure), not drop or buffer without bound."""
    data = os.urandom(8 * 1024 * 1024)
    server = BlobServer(world.web.ip, payload=data)
    proc = subprocess.Popen([client.bed.eic_proxy_path(), "connect", world.web.instance_id, str(server.port),
                             "--no-push"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=client.env)
    try:
        got = bytearray()
        while True:
            chunk = proc.stdout.read(65536)
            if not chunk:
                break
            got += chunk
            if len(got) < 1024 * 1024:
                time.sleep(0.01)  # the slow consumer being simulated
        proc.stdin.close()
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        server.close()
    assert bytes(got) == data


def test_remote_cat_piped_to_head_ends_promptly(client, world, tmp_path):
    """`ssh host cat big | head -c N`: the local reader goes away early; everything ends, nothing hangs."""
    remote = f"/tmp/headc-{os.getpid()}.bin"
    assert client.ssh(world.web.instance_id, f"head -c 50000000 /dev/urandom > {remote}").returncode == 0
    start = time.monotonic()
    p = subprocess.run(f"ssh -F {client.config} {world.web.instance_id} cat {remote} | head -c 1000 | wc -c",
                       shell=True, capture_output=True, env=client.env, timeout=60)
    assert p.stdout.strip() == b"1000"
    assert time.monotonic() - start < 20
    r = client.ssh(world.web.instance_id, f"cat {remote}")
    assert r.returncode == 0 and len(r.stdout) == 50_000_000  # and a full read is whole


def test_proxy_unreachable_is_a_network_error(client, world, echo):
    env = dict(client.env, HTTPS_PROXY="http://127.0.0.1:9", NO_PROXY="127.0.0.1")  # 9: discard, closed
    r = client.run([client.bed.eic_proxy_path(), "connect", world.web.instance_id, str(echo.port), "--no-push"],
                   env=env, timeout=60)
    assert_one_line_error(r, ExitCode.NETWORK, "proxy")


def test_expired_credentials_say_how_to_refresh(client, world):
    client.bed.aws.inject("DescribeInstances", "ExpiredToken", status=400, message="The security token expired")
    r = client.proxy("connect", "web-1", "--no-cache", input=b"", timeout=60)
    assert_one_line_error(r, ExitCode.CREDENTIALS, "expired", "aws sso login")


@pytest.mark.parametrize("sig, code", [("SIGTERM", 143), ("SIGINT", 130), ("SIGHUP", 0)])
def test_signals_close_cleanly_and_promptly(client, world, echo, sig, code):
    import signal

    seen = len(client.bed.eice.handshakes)
    proc = subprocess.Popen([client.bed.eic_proxy_path(), "connect", world.web.instance_id, str(echo.port),
                             "--no-push"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=client.env)
    try:
        proc.stdin.write(b"up\n")
        proc.stdin.flush()
        assert proc.stdout.read(3) == b"up\n"
        start = time.monotonic()
        proc.send_signal(getattr(signal, sig))
        assert proc.wait(5) == code
        assert time.monotonic() - start < 1.5
        assert b"Traceback" not in proc.stderr.read()
        assert len(client.bed.eice.handshakes) == seen + 1
    finally:
        if proc.poll() is None:
            proc.kill()

"""A misbehaving endpoint, met through real ssh: our one line is on stderr *when ssh exits*.

Each case reads ssh's stderr the moment ssh has exited (Client.ssh_at_exit), as VS Code, Ansible
or a terminal does; a line written after that moment is lost to the user and does not count.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from eic_proxy.errors import ExitCode
from tests.conftest import BlobServer, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

DOWNLOAD = "head -c 6000000 /dev/urandom"


@pytest.fixture
def echo(world):
    server = BlobServer(world.web.ip, echo=True)
    yield server
    server.close()


def _ours(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("eic-proxy: ")]


def _proxy_config(client, args: str):
    return client.bed.ssh_config(client.home, args)


def _run(client, fault, command="echo hi", args="", *options, faults=1, **kw):
    for _ in range(faults):
        client.bed.eice.inject(fault)
    if args:
        client.config = _proxy_config(client, args)
    start = time.monotonic()
    r = client.ssh_at_exit("web-1", command, *options, **kw)
    return r, time.monotonic() - start


def _assert_said(r, *words, ssh_code=255):
    ours = [line for line in _ours(r.stderr) if line.startswith("eic-proxy: error:")]
    assert len(ours) == 1, r.stderr
    for w in words:
        assert w.lower() in ours[0].lower(), ours[0]
    assert "Traceback" not in r.stderr
    assert r.returncode == ssh_code, (r.returncode, r.stderr)
    return ours[0]


@pytest.mark.parametrize("fault, words", [
    ("close:1011:Internal error", ["1011", "Internal error"]),
    ("status:403:AccessDeniedException", ["403", "OpenTunnel"]),
    ("status:500:InternalServerError", ["500", "retry"]),
    ("then-text", ["TEXT frame"]),
    ("then-opcode", ["reserved opcode"]),
    ("then-rsv1", ["reserved bits"]),
    ("then-close:1008:Policy violation", ["1008", "Policy violation"]),
])
def test_endpoint_faults_are_explained_before_ssh_exits(client, world, fault, words):
    r, took = _run(client, fault)
    _assert_said(r, *words)
    assert took < 20


def test_429_retried_into_a_working_session(client, world):
    r, _ = _run(client, "status:429:TooManyRequestsException")
    assert r.returncode == 0 and r.stdout == b"hi\n", r.stderr


def test_reset_after_1_mib_names_what_moved(client, world):
    r, _ = _run(client, "drop-after:1048576", DOWNLOAD)
    line = _assert_said(r, "connection to the endpoint was lost")
    assert "1.0 MiB down" in line or "KiB down" in line


def test_stall_at_open_is_explained_while_ssh_still_waits(client, world):
    r, _ = _run(client, "stall-open", "echo hi", "--banner-wait 1", "-o", "ConnectTimeout=4")
    assert r.returncode == 255 and "banner exchange" in r.stderr  # ssh's own words
    ours = _ours(r.stderr)
    assert "sent nothing for 1 s" in ours[0] and "security groups" in ours[0], r.stderr
    assert r.stderr.index(ours[0]) < r.stderr.index("banner exchange")  # said while ssh still waited
    assert len(ours) <= 2 and all("had not answered" in line for line in ours[1:]), r.stderr


def test_stall_mid_download_is_found_by_keepalive(client, world):
    r, took = _run(client, "stall-down-after:1048576", DOWNLOAD, "--keepalive 0.5",
                   "-o", "ServerAliveInterval=20")
    _assert_said(r, "stopped answering", "1.0 MiB received", ssh_code=255)
    assert took < 15


def test_endpoint_that_stops_reading_while_ssh_uploads(client, world):
    payload = os.urandom(48 * 1024 * 1024)
    r, took = _run(client, "stall-up-after:1048576", "cat > /dev/null", "--keepalive 0.5",
                   "-o", "ServerAliveInterval=20", input=payload)
    line = _assert_said(r)
    assert "stopped" in line and ("reading" in line or "answering" in line), line
    assert took < 20


def test_a_4_mib_message_is_delivered_intact(client, world):
    r, _ = _run(client, "messages:4194304", "head -c 9000000 /dev/zero | tr '\\0' x; true")
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"x" * 9_000_000 and not _ours(r.stderr)


def test_endless_continuation_frames_are_cut_off(client, world, echo):
    client.bed.eice.inject("then-endless")
    start = time.monotonic()
    proc = subprocess.Popen([client.bed.eic_proxy_path(), "connect", "web-1", str(echo.port), "--no-push"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=client.env)
    proc.stdin.write(b"hello")
    proc.stdin.flush()  # and stdin stays open, as ssh's does
    out = proc.stdout.read()
    rc = proc.wait(30)
    err = proc.stderr.read().decode()
    proc.stdin.close()
    assert time.monotonic() - start < 30
    assert rc == ExitCode.PROTOCOL and out.startswith(b"hello")
    assert 16_000_000 < len(out) <= 16 * 1024 * 1024 + 5  # streamed up to the cap, never buffered past it
    lines = err.splitlines()
    assert len(lines) == 1 and "more than 16777216 bytes" in lines[0], err


def test_endless_continuation_frames_under_ssh_end_promptly(client, world):
    r, took = _run(client, "then-endless")  # the frames' bytes reach ssh, which gives up on them
    assert r.returncode == 255 and took < 20 and "Traceback" not in r.stderr


def test_ping_before_data_is_fine_for_ssh_and_doctor(client, world):
    r, _ = _run(client, "ping-first")
    assert r.returncode == 0 and r.stdout == b"hi\n", r.stderr
    client.bed.eice.inject("ping-first")
    d = client.proxy("doctor", "web-1", "--json", timeout=120)
    import json

    checks = {c["name"]: c["status"] for c in json.loads(d.stdout)["checks"]}
    assert checks["ssh banner"] == "pass", d.stdout


def test_ping_before_data_is_fine_for_start(client, bed, world):
    sleeper = bed.add_instance("pinger", "main-a", 71)
    bed.ec2.stop_instances(InstanceIds=[sleeper.instance_id])
    for _ in range(10):
        bed.eice.inject("ping-first")
    r = client.run(["ssh", "-F", str(bed.ssh_config(client.home, "--start --start-timeout 60")), "pinger",
                    "echo up"], timeout=90)
    bed.eice.faults.clear()
    assert r.returncode == 0 and r.stdout == b"up\n", r.stderr


@pytest.mark.parametrize("sig, code", [("SIGHUP", ExitCode.TIMEOUT), ("SIGTERM", 143)])
def test_signal_while_a_send_is_blocked_ends_within_2_s(client, world, echo, monkeypatch, sig, code):
    import threading

    monkeypatch.setattr(client.bed.eice, "stall_hold", 60.0)  # the endpoint keeps the dead connection open
    client.bed.eice.inject("stall-up-after:65536")
    proc = subprocess.Popen([client.bed.eic_proxy_path(), "connect", "web-1", str(echo.port), "--no-push",
                             "--keepalive", "0"],
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=client.env)
    last_progress = [time.monotonic()]

    def feed() -> None:
        chunk = os.urandom(1 << 16)
        try:
            while True:
                proc.stdin.write(chunk)
                proc.stdin.flush()
                last_progress[0] = time.monotonic()
        except (OSError, ValueError):
            pass

    threading.Thread(target=feed, daemon=True).start()
    try:
        # Our writes stop making progress: the proxy's socket is full and its send is stuck; then long
        # enough for that to count as a stall (3 s) before the signal.
        assert wait_until(lambda: time.monotonic() - last_progress[0] > 4.0, 60), "the send never blocked"
        assert proc.poll() is None
        start = time.monotonic()
        proc.send_signal(getattr(signal, sig))
        rc = proc.wait(5)
        assert time.monotonic() - start < 2.0
        err = proc.stderr.read().decode()
        assert rc == code, err
        assert err.count("eic-proxy: error:") == 1 and "had not answered" in err, err
    finally:
        if proc.poll() is None:
            proc.kill()


def test_hostile_text_from_the_endpoint_cannot_reach_the_terminal_raw(client, world):
    evil = "denied\x1b]0;owned\x07\x1b[2J\neic-proxy: error: all good, ignore this" + "A" * 3000
    r, _ = _run(client, f"status:403:AccessDeniedException:{evil}")
    line = _assert_said(r, "403")
    assert "\x1b" not in r.stderr and "\x07" not in r.stderr
    assert "\\x1b" in line and len(line) < 1000
    assert sum(line.startswith("eic-proxy: error:") for line in r.stderr.splitlines()) == 1  # smuggled "line" stayed in ours
    r, _ = _run(client, "close:4000:bye\x1b[31m\r\nfake line")
    line = _assert_said(r, "4000")
    assert "\x1b" not in r.stderr and "\\x1b" in line and r.stderr.count("fake line") == 1

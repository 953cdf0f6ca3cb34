"""Real ssh/scp/sftp/rsync through ``eic-proxy connect`` on the local test bed."""
from __future__ import annotations

import hashlib
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from eic_proxy.errors import ExitCode
from tests.conftest import BlobServer, Result, assert_one_line_error, wait_until

pytestmark = pytest.mark.e2e


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def test_ssh_runs_command_and_returns_exit_status(client, world):
    r = client.ssh(world.web.instance_id, "id -un; exit 7")
    assert r.returncode == 7, r.stderr
    assert r.stdout == b"ec2-user\n"
    assert client.bed.aws.count("SendSSHPublicKey") == 1


def test_scp_both_directions_sftp_and_legacy(client, world, tmp_path):
    src = tmp_path / "up.bin"
    src.write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    host = world.web.instance_id
    for mode in ([], ["-O"]):
        remote = f"/tmp/scp-{len(mode)}-{os.getpid()}.bin"
        back = tmp_path / f"down-{len(mode)}.bin"
        up = client.run(["scp", *mode, "-F", str(client.config), str(src), f"{host}:{remote}"])
        assert up.returncode == 0, up.stderr
        down = client.run(["scp", *mode, "-F", str(client.config), f"{host}:{remote}", str(back)])
        assert down.returncode == 0, down.stderr
        assert sha256(back) == sha256(src)


def test_sftp_batch(client, world, tmp_path):
    src = tmp_path / "s.txt"
    src.write_text("sftp through eic-proxy\n")
    batch = tmp_path / "batch"
    remote = f"/tmp/sftp-{os.getpid()}.txt"
    batch.write_text(f"put {src} {remote}\nget {remote} {tmp_path / 'back.txt'}\nrm {remote}\n")
    r = client.run(["sftp", "-F", str(client.config), "-b", str(batch), world.web.instance_id])
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "back.txt").read_text() == "sftp through eic-proxy\n"


def test_rsync_over_ssh(client, world, tmp_path):
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "a.txt").write_text("alpha\n")
    (tree / "sub" / "b.bin").write_bytes(os.urandom(200_000))
    remote = f"/tmp/rsync-{os.getpid()}/"
    ssh_cmd = f"ssh -F {client.config}"
    r = client.run(["rsync", "-a", "-e", ssh_cmd, f"{tree}/", f"{world.web.instance_id}:{remote}"])
    assert r.returncode == 0, r.stderr
    back = tmp_path / "back"
    r = client.run(["rsync", "-a", "-e", ssh_cmd, f"{world.web.instance_id}:{remote}", f"{back}/"])
    assert r.returncode == 0, r.stderr
    assert (back / "a.txt").read_text() == "alpha\n"
    assert (back / "sub" / "b.bin").read_bytes() == (tree / "sub" / "b.bin").read_bytes()


def test_64mib_round_trip_keeps_sha256(client, world, tmp_path):
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(64 * 1024 * 1024))
    remote = f"/tmp/big-{os.getpid()}.bin"
    up = client.run(["ssh", "-F", str(client.config), world.web.instance_id, f"cat > {remote}"],
                    input=src.read_bytes())
    assert up.returncode == 0, up.stderr
    down = client.ssh(world.web.instance_id, f"cat {remote}; rm -f {remote}")
    assert down.returncode == 0, down.stderr
    assert hashlib.sha256(down.stdout).hexdigest() == sha256(src)


def test_stdout_carries_only_tunnel_bytes_even_verbose(client, world):
    """The instance sends a blob and closes: stdout must be exactly the blob, logs only on stderr."""
    blob = os.urandom(1_000_003)
    server = BlobServer(world.web.ip, payload=blob)
    proc = subprocess.Popen([client.bed.eic_proxy_path(), "connect", world.web.instance_id, str(server.port),
                             "-vv", "--no-push"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=client.env)
    try:
        out = proc.stdout.read()  # ends when the endpoint closes after the blob
        proc.stdin.close()
        assert proc.wait(10) == 0
        err = proc.stderr.read().decode()
    finally:
        if proc.poll() is None:
            proc.kill()
        server.close()
    assert out == blob
    assert "tunnel open" in err  # the diagnostics went to stderr


def test_echo_round_trip_exact_bytes(client, world):
    server = BlobServer(world.web.ip, echo=True)
    data = os.urandom(5_000_000)
    env = client.env
    proc = subprocess.Popen([client.bed.eic_proxy_path(), "connect", world.web.instance_id, str(server.port),
                             "--no-push"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)
    received = bytearray()

    def reader() -> None:
        while len(received) < len(data):
            chunk = proc.stdout.read1(1 << 20)
            if not chunk:
                break
            received.extend(chunk)

    t = threading.Thread(target=reader)
    t.start()
    proc.stdin.write(data)
    proc.stdin.flush()
    t.join(60)
    proc.stdin.close()
    try:
        assert proc.wait(10) == 0, proc.stderr.read()
    finally:
        server.close()
    assert bytes(received) == data


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_idle_tunnel_uses_no_cpu_and_exits_promptly_on_eof(client, world):
    server = BlobServer(world.web.ip, echo=True)
    proc = subprocess.Popen([client.bed.eic_proxy_path(), "connect", world.web.instance_id, str(server.port),
                             "--no-push"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=client.env)
    try:
        proc.stdin.write(b"ping\n")
        proc.stdin.flush()
        assert proc.stdout.read(5) == b"ping\n"  # the tunnel is up
        before = _cpu_seconds(proc.pid)
        time.sleep(1.0)  # an idle window to measure, not synchronisation
        idle_cpu = _cpu_seconds(proc.pid) - before
        assert idle_cpu < 0.05, f"busy loop: {idle_cpu:.3f} s CPU while idle"
        start = time.monotonic()
        proc.stdin.close()
        assert proc.wait(2) == 0
        assert time.monotonic() - start < 1.0  # CLOSE sent, echo awaited at most CLOSE_WAIT, gone
    finally:
        if proc.poll() is None:
            proc.kill()
        server.close()


def test_proxy_is_gone_soon_after_ssh_exits(client, world, tmp_path):
    pidfile = tmp_path / "proxy.pid"
    cfg = tmp_path / "ssh_config_pid"
    text = client.config.read_text().replace(
        f"ProxyCommand {client.bed.eic_proxy_path()}",
        f"ProxyCommand sh -c 'echo $$ > {pidfile}; exec {client.bed.eic_proxy_path()} \"$@\"' eic")
    cfg.write_text(text)
    r = client.run(["ssh", "-F", str(cfg), world.web.instance_id, "true"])
    assert r.returncode == 0, r.stderr
    pid = int(pidfile.read_text())
    gone = wait_until(lambda: not os.path.exists(f"/proc/{pid}") or _state(pid) == "Z", 2)
    assert gone, "eic-proxy still running 2 s after ssh exited"


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return "gone"


# ---- failures: one line, its own exit code, no traceback --------------------------------------------
def test_unknown_instance(client):
    r = client.proxy("connect", "i-0123456789abcdef0", "22", input=b"", timeout=30)
    assert_one_line_error(r, ExitCode.HOST_NOT_FOUND, "i-0123456789abcdef0", "hint")


def test_stopped_instance(client, world):
    r = client.proxy("connect", world.stopped.instance_id, input=b"", timeout=30)
    assert_one_line_error(r, ExitCode.INSTANCE_STATE, "stopped", "start")


def test_endpoint_missing_in_vpc(client, world):
    r = client.proxy("connect", world.no_endpoint.instance_id, input=b"", timeout=30)
    assert_one_line_error(r, ExitCode.NO_ENDPOINT, world.no_endpoint.vpc_id, "create-instance-connect-endpoint")


def test_target_port_closed(client, world):
    # stdin stays open, as ssh's does: an EOF first would end the tunnel before the endpoint's answer
    p = subprocess.Popen([client.bed.eic_proxy_path(), "connect", world.web.instance_id, "3389", "--no-push"],
                         env=client.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = p.stdout.read(), p.stderr.read()  # until the proxy ends by itself (no RDP here)
    p.wait(30)
    p.stdin.close()
    assert_one_line_error(Result(p.returncode, out, err.decode()), ExitCode.TARGET_UNREACHABLE,
                          "Unable to connect to target", "security group")


def test_bad_signature(client, world):
    env = dict(client.env, AWS_SECRET_ACCESS_KEY="wrong-secret")
    r = client.proxy("connect", world.web.instance_id, "--no-push", input=b"", timeout=30, env=env)
    assert_one_line_error(r, ExitCode.SIGNATURE_REJECTED, "403", "signature")


def test_expired_url(client, world):
    """Without the endpoint's time (no Date header: nothing to correct by), an expired URL is named as the clock's."""
    client.bed.eice.clock_skew = 120.0  # the endpoint's clock runs ahead: the 60 s URL is already stale
    client.bed.eice.send_date = False
    try:
        r = client.proxy("connect", world.web.instance_id, "--no-push", input=b"", timeout=30)
    finally:
        client.bed.eice.clock_skew = 0.0
        client.bed.eice.send_date = True
    assert_one_line_error(r, ExitCode.SIGNATURE_EXPIRED, "expired", "clock")


def test_untrusted_endpoint_certificate(client, world, tmp_path):
    from tests.testbed.ca import TestCA

    other = TestCA.create(tmp_path / "other-ca")
    env = dict(client.env, AWS_CA_BUNDLE=str(other.pem_path))
    r = client.proxy("connect", world.web.instance_id, "--no-push", input=b"", timeout=30, env=env)
    assert_one_line_error(r, ExitCode.TLS, "certificate", "AWS_CA_BUNDLE")

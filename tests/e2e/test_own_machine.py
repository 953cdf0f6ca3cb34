"""When the user's own machine misbehaves — a full disk, a read-only one — through real ssh on the bed:
what the connection can do without is one warning and the connection goes on; what it needs is one
line naming the path and the cause, exit 26, never "internal error"."""
from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import pytest

from eic_proxy.errors import ExitCode

pytestmark = pytest.mark.e2e


@pytest.fixture
def disk(tmp_path):
    """A small file system of its own (tmpfs) for eic-proxy's data, cache and state directories."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.decode().strip()}): needs root in a machine that allows it")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def _fill(mnt: Path) -> None:
    """Write until the file system says ENOSPC, then fill what small files could still take."""
    fd = os.open(mnt / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 65536)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)
    for n in range(10000):
        try:
            fd = os.open(mnt / f"f{n}", os.O_WRONLY | os.O_CREAT, 0o600)
        except OSError:
            break
        try:
            os.write(fd, b"x" * 512)
        except OSError:
            break
        finally:
            os.close(fd)


def _env(client, mnt: Path) -> dict:
    return dict(client.env, XDG_DATA_HOME=str(mnt / "data"), XDG_CACHE_HOME=str(mnt / "cache"),
                XDG_STATE_HOME=str(mnt / "state"))


def _install(client, env) -> str:
    r = client.run([client.bed.eic_proxy_path(), "ssh-config", "--install", "web-*", "i-*", "--user", "ec2-user"],
                   env=env)
    assert r.returncode == 0, r.stderr
    return str(client.home / ".ssh" / "config")


def _ours(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("eic-proxy:")]


def test_a_full_disk_with_the_key_in_place_warns_once_and_connects(client, world, disk):
    env = _env(client, disk)
    cfg = _install(client, env)
    assert client.run(["ssh", "-F", cfg, "web-1", "true"], env=env).returncode == 0
    _fill(disk)
    for helper in ("no", "yes"):  # a push record, the audit log, caches, the helper's socket: none is needed
        r = client.run(["ssh", "-F", cfg, "web-1", "echo still"], env=dict(env, EIC_PROXY_HELPER=helper))
        assert r.returncode == 0 and r.stdout == b"still\n", r.stderr
        lines = _ours(r.stderr)
        assert len(lines) <= 1 and all("warning: cannot write" in line and "no space left" in line for line in lines)
        assert "internal error" not in r.stderr and "Traceback" not in r.stderr


def test_a_full_disk_without_a_key_is_one_line_naming_the_key(client, world, disk):
    env = _env(client, disk)
    _install(client, env)
    for p in (disk / "data/eic-proxy/keys").iterdir():
        p.unlink()
    _fill(disk)
    r = client.run([client.bed.eic_proxy_path(), "connect", "web-1", "--no-helper"], input=b"", env=env)
    assert r.returncode == ExitCode.LOCAL_FILES, r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("eic-proxy: error: cannot write"), r.stderr
    assert "keys/id_ed25519" in lines[0] and "no space left on the device" in lines[0]
    r = client.run(["ssh", "-F", str(client.home / ".ssh/config"), "web-1", "true"], env=env)  # as the user meets it
    assert r.returncode == 255 and "eic-proxy: error: cannot write" in r.stderr and "internal error" not in r.stderr


def test_a_read_only_home_with_the_key_in_place_still_connects(client, world, disk):
    env = _env(client, disk)
    cfg = _install(client, env)
    assert client.run(["ssh", "-F", cfg, "web-1", "true"], env=env).returncode == 0
    subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
    r = client.run(["ssh", "-F", cfg, "web-1", "echo ro"], env=dict(env, EIC_PROXY_HELPER="no"))
    assert r.returncode == 0 and r.stdout == b"ro\n", r.stderr
    lines = _ours(r.stderr)
    assert len(lines) <= 1 and all("read-only" in line for line in lines), r.stderr
    # a name never reached before needs its known_hosts entry, which cannot be written: said in one line
    r = client.run([client.bed.eic_proxy_path(), "connect", "--typed", world.web.instance_id, "--no-helper",
                    world.web.instance_id], input=b"", env=env)
    assert r.returncode == ExitCode.LOCAL_FILES, r.stderr
    (line,) = [line for line in r.stderr.splitlines() if "error" in line]
    assert "known_hosts" in line and "read-only" in line, r.stderr


# ---- a credential source that never answers ---------------------------------------------------------------
def _slow_profile(client, marker: str) -> dict:
    """A profile whose credential_process waits forever (a login, a touch, a prompt nobody can see)."""
    import sys

    aws = client.home / ".aws"
    aws.mkdir(exist_ok=True)
    (aws / "config").write_text(f"[profile slow]\ncredential_process = {sys.executable} -c "
                                f"\"import time; time.sleep(600)  # {marker}\"\n")
    env = {k: v for k, v in client.env.items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    env["AWS_PROFILE"] = "slow"
    return env


def _with_marker(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


@pytest.mark.parametrize("helper", ["yes", "no"])
def test_a_credential_source_that_never_answers_is_said_then_given_up(client, world, tmp_path, helper):
    from tests.conftest import wait_until

    marker = f"eic-cred-wait-{os.urandom(6).hex()}-{helper}"
    env = dict(_slow_profile(client, marker), EIC_PROXY_CREDENTIALS_TIMEOUT="5", EIC_PROXY_HELPER=helper)
    r = client.run(["ssh", "-F", str(client.config), "web-1", "true"], env=env, timeout=60)
    assert r.returncode == 255
    ours = _ours(r.stderr)
    assert ours[0].startswith("eic-proxy: waiting for the AWS credentials of profile slow (credential_process); "
                              "giving up after 5 s"), r.stderr
    assert ours[-1].startswith("eic-proxy: error: the AWS credentials of profile slow (credential_process) did not "
                               "come within 5 s") and "aws sts get-caller-identity --profile slow" in ours[-1]
    assert len(ours) == 2 and "Traceback" not in r.stderr
    left = lambda: [Path(f"/proc/{p}/cmdline").read_bytes() for p in _with_marker(marker)]  # noqa: E731
    assert wait_until(lambda: not _with_marker(marker), 2.0), left()  # the credential process ended with us
    r = client.run([client.bed.eic_proxy_path(), "connect", "web-1"], input=b"", env=env, timeout=60)
    assert r.returncode == ExitCode.CREDENTIALS_WAIT, r.stderr


def test_ssh_hanging_up_during_the_wait_ends_the_credential_process_at_once(client, world, tmp_path):
    import signal

    from tests.conftest import wait_until
    from tests.testbed.processes import our_processes

    marker = f"eic-cred-hup-{os.urandom(6).hex()}"
    env = dict(_slow_profile(client, marker), EIC_PROXY_CREDENTIALS_TIMEOUT="120", EIC_PROXY_HELPER="no")
    p = subprocess.Popen([client.bed.eic_proxy_path(), "connect", "web-1"], env=env, stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert wait_until(lambda: _with_marker(marker), 20.0)
        p.send_signal(signal.SIGHUP)  # what ssh sends its ProxyCommand when it exits
        p.wait(5)
    finally:
        p.kill()
        p.wait()
    assert p.returncode == -signal.SIGHUP
    assert wait_until(lambda: not _with_marker(marker), 2.0)
    assert wait_until(lambda: not our_processes(str(client.home)), 2.0)


# ---- a wrong clock ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("skew, says", [(-600.0, "about 10 min ahead of"), (600.0, "about 10 min behind")])
def test_a_clock_ten_minutes_off_just_works_with_a_warning(client, world, skew, says):
    """The endpoint refuses a URL signed 10 minutes in its future ("Signature not yet current") or past
    ("Request has expired"); its Date header says its time: we sign again with it, once, and say so."""
    client.bed.eice.clock_skew = skew  # the endpoint's clock against ours: ours is off by -skew
    try:
        for helper in ("no", "yes"):
            r = client.ssh_at_exit("web-1", "echo on-time", env=dict(client.env, EIC_PROXY_HELPER=helper))
            assert r.returncode == 0 and r.stdout == b"on-time\n", r.stderr
            (line,) = _ours(r.stderr)
            assert line.startswith("eic-proxy: warning: this computer's clock is ") and says in line, line
    finally:
        client.bed.eice.clock_skew = 0.0


@pytest.mark.parametrize("skew, says", [(-600.0, "about 10 min ahead of"), (600.0, "about 10 min behind")])
def test_a_first_connection_with_a_clock_ten_minutes_off_just_works(client, world, skew, says):
    """AWS's API checks the signing time too: the first refused call (its Date says AWS's time) is signed
    again at that time, and the tunnel's URL is signed with it from the start — one warning in all."""
    client.bed.aws.clock_skew = client.bed.eice.clock_skew = skew
    try:
        for helper in ("no", "yes"):
            env = dict(client.env, EIC_PROXY_HELPER=helper)
            client.run([client.bed.eic_proxy_path(), "cache", "clear"], env=env)  # cold: lookups and a push
            before = client.bed.aws.count("DescribeInstances")
            r = client.ssh_at_exit("web-1", "echo on-time", env=env)
            assert r.returncode == 0 and r.stdout == b"on-time\n", r.stderr
            assert client.bed.aws.count("DescribeInstances") > before
            lines = _ours(r.stderr)
            assert lines and all(says in line for line in lines) and len(lines) <= (1 if helper == "no" else 2), lines
            assert lines[0].startswith("eic-proxy: warning: this computer's clock is ")
    finally:
        client.bed.aws.clock_skew = client.bed.eice.clock_skew = 0.0


def test_a_clock_refusal_the_endpoint_keeps_making_is_named_as_the_clock(client, world):
    client.bed.eice.clock_skew = -600.0
    client.bed.eice.send_date = False  # nothing to correct by: the line must still blame the clock, not IAM
    try:
        r = client.proxy("connect", world.web.instance_id, "--no-push", input=b"", timeout=30)
    finally:
        client.bed.eice.clock_skew = 0.0
        client.bed.eice.send_date = True
    assert r.returncode == ExitCode.SIGNATURE_EXPIRED, r.stderr
    (line,) = r.stderr.splitlines()
    assert "not yet current" in line and "clock" in line and "IAM" not in line and "maxTunnelDuration" not in line


def test_a_cache_directory_of_another_user_is_done_without(client, world):
    """A cache directory that is not ours (a restored backup, a shared HOME) is not trusted, and not
    needed: one warning, and the connection goes on."""
    assert client.ssh("web-1", "true").returncode == 0  # the key and the known_hosts entry exist
    cache = client.home / ".cache" / "eic-proxy"
    for p in [cache, *cache.rglob("*")]:
        os.chown(p, 65534, 65534)
    try:
        r = client.run(["ssh", "-F", str(client.config), "web-1", "echo theirs"],
                       env=dict(client.env, EIC_PROXY_HELPER="no"))
    finally:
        for p in [cache, *cache.rglob("*")]:
            os.chown(p, 0, 0)
    assert r.returncode == 0 and r.stdout == b"theirs\n", r.stderr
    (line,) = _ours(r.stderr)
    assert line.startswith("eic-proxy: warning: cannot write") and "belongs to another user" in line, line

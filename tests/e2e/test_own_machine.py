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

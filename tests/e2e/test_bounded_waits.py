"""Nothing waits without a bound: a lock held by a stopped process, a keyring that never answers."""
from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

import pytest

from eic_proxy.errors import ExitCode

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


def _hold(path) -> int:
    """Take the lock as a stopped eic-proxy would: and never let go (until the test ends)."""
    fd = os.open(str(path), os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


@pytest.mark.parametrize("which", ["push", "key"])
def test_a_held_lock_is_waited_for_with_a_line_then_a_clear_error(client, world, which):
    assert client.ssh("web-1", "true").returncode == 0  # the key, the push record and their locks exist
    if which == "push":
        (lock,) = (client.home / ".cache/eic-proxy/pushes").glob("*.lock")
        args = ["--no-cache"]
    else:
        lock = client.home / ".local/share/eic-proxy/keys/.lock"
        args = []
    fd = _hold(lock)
    try:
        env = dict(client.env, EIC_PROXY_LOCK_TIMEOUT="3")
        start = time.monotonic()
        r = client.run([client.bed.eic_proxy_path(), "connect", "web-1", *args], input=b"", env=env, timeout=60)
        took = time.monotonic() - start
    finally:
        os.close(fd)
    assert r.returncode == ExitCode.LOCKED, r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 2, r.stderr
    assert lines[0].startswith("eic-proxy: waiting for the " + ("push record" if which == "push" else "key lock"))
    assert lines[1].startswith("eic-proxy: error: another eic-proxy process has held") and "pgrep" in lines[1]
    assert 3 <= took < 10


def test_a_keyring_that_hangs_is_bounded(client, world, ssh_agent, tmp_path):
    env = dict(client.env, PYTHON_KEYRING_BACKEND="tests.testbed.keyring_backend.HangingKeyring",
               EIC_TEST_KEYRING_FILE=str(tmp_path / "kr.json"), EIC_PROXY_KEYRING_TIMEOUT="2",
               SSH_AUTH_SOCK=str(ssh_agent), PYTHONPATH=str(REPO))
    start = time.monotonic()
    r = client.run([client.bed.eic_proxy_path(), "connect", "web-1", "--agent", "--no-cache"], input=b"", env=env,
                   timeout=60)
    assert r.returncode == ExitCode.LOCKED, r.stderr
    assert r.stderr.count("\n") == 1 and "keyring did not answer within 2 s" in r.stderr
    assert time.monotonic() - start < 15

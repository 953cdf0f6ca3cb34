"""500 connect/transfer/disconnect cycles in one process: nothing leaks, every byte arrives."""
from __future__ import annotations

import hashlib
import os
import tempfile
import threading
import time

import pytest

from tests.conftest import BlobServer, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]
CYCLES = 500


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _settle(baseline: int, deadline: float) -> int:
    """Threads of a finished tunnel end once their blocking read returns: wait for that, bounded."""
    wait_until(lambda: threading.active_count() <= baseline, max(deadline - time.monotonic(), 0), 0.01)
    return threading.active_count()


def test_500_cycles_leak_nothing(client, world, monkeypatch):
    from eic_proxy.commands.connect import connect as run
    from eic_proxy.config import ConnectOptions

    for k, v in client.env.items():
        monkeypatch.setenv(k, v)
    payload = os.urandom(200_000)
    digest = hashlib.sha256(payload).hexdigest()
    server = BlobServer(world.web.ip, payload=payload)
    opts = ConnectOptions(host="web-1", port=server.port, keepalive=0)
    tmp_before = set(os.listdir(tempfile.gettempdir()))

    def cycle() -> None:
        in_r, in_w = os.pipe()
        out_r, out_w = os.pipe()
        got = bytearray()
        reader = threading.Thread(target=lambda: got.extend(_read_all(out_r)), daemon=True)
        reader.start()
        try:
            assert run(opts, in_r, out_w) == 0  # the instance side sends the blob and closes
        finally:
            os.close(out_w)  # run() parked /dev/null on it (the pipe's end is already closed)
            os.close(in_w)   # ssh goes away: the uplink's blocking read ends
            reader.join(10)
            os.close(in_r)
            os.close(out_r)
        assert hashlib.sha256(got).hexdigest() == digest

    try:
        for _ in range(5):  # warm-up: caches, lazily created clients, imports
            cycle()
        threads0 = _settle(threading.active_count(), time.monotonic() + 5)
        fds0 = _fds()
        for _ in range(CYCLES):
            cycle()
        threads1 = _settle(threads0, time.monotonic() + 10)
        fds1 = _fds()
    finally:
        server.close()
    assert threads1 <= threads0, f"threads grew from {threads0} to {threads1}"
    assert fds1 <= fds0 + 2, f"file descriptors grew from {fds0} to {fds1}"
    leftovers = set(os.listdir(tempfile.gettempdir())) - tmp_before
    assert not [n for n in leftovers if n.endswith(".tmp")], leftovers
    cache = client.home / ".cache/eic-proxy"
    assert not [p for p in cache.rglob("*.tmp")]
    assert client.bed.aws.count("SendSSHPublicKey") <= 1 + (CYCLES // 20)  # reuse held across cycles


def _read_all(fd: int) -> bytes:
    out = bytearray()
    while True:
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            return bytes(out)
        out += chunk

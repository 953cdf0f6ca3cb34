"""Connection slots: a slot released on purpose cools down briefly; one left by a crash is free at once."""
from __future__ import annotations

import os

import pytest

from eic_proxy.errors import EicProxyError
from eic_proxy.lifecycle import limiter


def test_a_released_slot_cools_down_then_is_free(tmp_path, monkeypatch):
    monkeypatch.setattr(limiter, "COOL_DOWN", 60.0)  # however slow this machine is right now
    slot = limiter.acquire("eice-0123456789abcdef0", limit=1, timeout=0, directory=tmp_path)
    slot.release()
    with pytest.raises(EicProxyError, match="no free connection"):
        limiter.acquire("eice-0123456789abcdef0", limit=1, timeout=0, directory=tmp_path)
    monkeypatch.setattr(limiter, "COOL_DOWN", 0.0)
    limiter.acquire("eice-0123456789abcdef0", limit=1, timeout=0, directory=tmp_path).release()


def test_a_slot_of_a_process_that_died_is_free_at_once(tmp_path):
    slot = limiter.acquire("eice-0123456789abcdef0", limit=1, timeout=0, directory=tmp_path)
    assert slot.fd is not None
    os.close(slot.fd)  # what the kernel does when the process ends without releasing
    slot.fd = None
    limiter.acquire("eice-0123456789abcdef0", limit=1, timeout=0, directory=tmp_path).release()


def test_a_held_slot_is_not_taken_and_garbage_in_a_slot_file_is_ignored(tmp_path):
    held = limiter.acquire("eice-0123456789abcdef0", limit=2, timeout=0, directory=tmp_path)
    other = limiter.acquire("eice-0123456789abcdef0", limit=2, timeout=0, directory=tmp_path)
    assert other.path != held.path
    with pytest.raises(EicProxyError):
        limiter.acquire("eice-0123456789abcdef0", limit=2, timeout=0, directory=tmp_path)
    os.close(other.fd)  # died
    other.fd = None
    other.path.write_bytes(b"not a time\n")
    limiter.acquire("eice-0123456789abcdef0", limit=2, timeout=0, directory=tmp_path).release()
    held.release()

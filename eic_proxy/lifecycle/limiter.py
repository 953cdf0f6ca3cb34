"""Cross-process connection slots per endpoint: the 21st tunnel waits instead of being refused.

The service allows 20 concurrent connections per endpoint (docs/protocol.md §7). Each tunnel holds
one of ``limit`` lock files ``<cache dir>/slots/<endpoint>/<n>.lock`` for its whole life; the
kernel releases it when the process ends, however it ends, so a crash never leaks a slot.

A slot released on purpose stays cool for ``COOL_DOWN`` seconds (the release time is written into
its file): the endpoint counts a tunnel until it has processed its end, and a new tunnel that came
in first would be refused with HTTP 429 and wait out a back-off instead.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Optional

from eic_proxy.errors import NoFreeSlot
from eic_proxy.store import files

log = logging.getLogger(__name__)

DEFAULT_LIMIT = 20
DEFAULT_QUEUE_TIMEOUT = 300.0
POLL = 0.1
COOL_DOWN = 0.5


class Slot:
    """A held slot; ``release()`` (or process exit) frees it."""

    def __init__(self, fd: Optional[int], path: Path) -> None:
        self.fd: Optional[int] = fd
        self.path = path

    def release(self) -> None:
        fd, self.fd = self.fd, None
        if fd is not None:
            try:
                os.lseek(fd, 0, os.SEEK_SET)
                os.write(fd, f"{time.time():17.3f}\n".encode())  # cool until the endpoint counted the end
            except OSError:
                pass
            os.close(fd)  # closing the descriptor drops the flock


def _slots_dir(endpoint_id: str, directory: Optional[Path]) -> Path:
    return files.ensure_private_dir((directory or files.cache_dir() / "slots") / endpoint_id)


def _first_free(base: Path, limit: int) -> Optional[Slot]:
    """The first slot free now, probing from a place of this process's own (so many waiters do not all
    hammer slot 0)."""
    start = os.getpid() % limit
    for i in range(limit):
        path = base / f"{(start + i) % limit}.lock"
        fd = _try(path)
        if fd is not None:
            return Slot(fd, path)
    return None


def _try(path: Path) -> Optional[int]:
    fd = os.open(str(path), os.O_RDWR | os.O_CREAT | files.O_NOFOLLOW, 0o600)
    try:
        if files.try_lock(fd):
            if not _cooling(fd):
                return fd
    except OSError:
        pass
    os.close(fd)
    return None


def _cooling(fd: int) -> bool:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        released = float(os.read(fd, 32).decode() or 0)
    except (OSError, ValueError):
        return False  # an empty or foreign file: free
    return abs(time.time() - released) < COOL_DOWN  # (written rounded: "just released" may read as a hair ahead)


def acquire(endpoint_id: str, limit: int = DEFAULT_LIMIT, timeout: float = DEFAULT_QUEUE_TIMEOUT,
            directory: Optional[Path] = None) -> Slot:
    """Take a free slot for ``endpoint_id``, waiting (with one line on stderr) while all are busy. Where the
    slots cannot be kept (a full or read-only cache directory) the connection goes on without one."""
    try:
        return _acquire(endpoint_id, limit, timeout, directory)
    except OSError as exc:
        files.done_without(exc, "the connection slots")
        return Slot(None, Path(os.devnull))


def try_acquire(endpoint_id: str, limit: int = DEFAULT_LIMIT, directory: Optional[Path] = None) -> Optional[Slot]:
    """A slot free right now, or None (all taken, or the slots cannot be kept): no waiting, no line."""
    try:
        return _first_free(_slots_dir(endpoint_id, directory), limit)
    except Exception:  # noqa: BLE001 - carry() then takes the slot itself, and says what is wrong
        pass
    return None


def _acquire(endpoint_id: str, limit: int, timeout: float, directory: Optional[Path]) -> Slot:
    base = _slots_dir(endpoint_id, directory)
    deadline = time.monotonic() + timeout
    said = False
    while True:
        slot = _first_free(base, limit)
        if slot is not None:
            if said:
                log.warning("got a connection slot on %s", endpoint_id)
            return slot
        if not said:
            log.warning("all %d connections of endpoint %s are in use by this user's tunnels; waiting "
                        "(up to %.0f s)", limit, endpoint_id, timeout)
            said = True
        if time.monotonic() >= deadline:
            raise NoFreeSlot(f"no free connection on endpoint {endpoint_id}: {limit} tunnels are open",
                             hint="the service allows 20 per endpoint; close some, use ControlMaster to share "
                                  "one, or raise --queue-timeout")
        time.sleep(POLL)

"""One process makes a network call, the others wait for its result — with no lock held across the call.

Fifty ssh processes started at once for one host (Ansible forks, parallel scp, VS Code's paired
connections) would each make the same Describe calls and push the same key; the API throttles. The
first one *claims* the call: under a short lock over local files only, it finds no result and no live
claim, and writes a marker (``<name>.pending``: its pid, thread and the time). It makes the call with
no lock held, stores the result, and removes the marker. The others, finding a live claim, let go of
the lock and poll for the result. A claim whose process (or thread) is gone, or older than the bound,
is not waited for: a killed or hung caller never holds the rest for long.
"""
from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Optional, TypeVar

from eic_proxy.store import files

T = TypeVar("T")
POLL = 0.02
SAY_AFTER = 2.0


def single_flight(name: Path, ready: Callable[[], Optional[T]], work: Callable[[], T], bound: float,
                  what: str, record: str) -> T:
    """``ready()`` when it has a result (checked under the lock), else ``work()`` by this caller or the
    result of another caller's ``work()`` in flight. ``what`` names the call, ``record`` its result, in
    the waiting lines."""
    marker = name.with_suffix(".pending")
    lock = name.with_suffix(".lock")
    start = time.monotonic()
    said = False
    while True:
        try:
            with files.FileLock(lock, what=record):
                found = ready()
                if found is not None:
                    return found
                if holder(marker, bound) is None:
                    with files.best_effort(f"the marker of the {what}"):
                        files.write_private_atomic(marker, json.dumps({**_me(), "at": time.time()}).encode(),
                                                   durable=False)
                    break
        except OSError as exc:  # the cache directory is full, read-only or not ours: no coordination then
            files.done_without(exc, f"the lock of the {what}")
            found = ready()
            return found if found is not None else work()
        if not said and time.monotonic() - start >= SAY_AFTER:
            said = True
            sys.stderr.write(f"eic-proxy: waiting for another eic-proxy process's {what}\n")
            sys.stderr.flush()
        time.sleep(POLL)
    try:
        return work()
    finally:
        _drop(marker)


def _me() -> dict[str, int]:
    """Who claims: the process, and the thread (a listener's connections share one process)."""
    return {"pid": os.getpid(), "tid": threading.get_ident()}


def holder(marker: Path, bound: float) -> Optional[int]:
    """The pid of another live process (or thread of this one) whose claim stands, if any."""
    try:
        doc = json.loads(marker.read_text())
        pid, tid, at = int(doc["pid"]), int(doc.get("tid", 0)), float(doc["at"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    if not 0 <= time.time() - at < bound:
        return None
    if pid == os.getpid():
        alive = tid != threading.get_ident() and any(t.ident == tid for t in threading.enumerate())
    else:
        alive = files.process_alive(pid)
    return pid if alive else None


def _drop(marker: Path) -> None:
    try:
        doc = json.loads(marker.read_text())
        if {"pid": doc.get("pid"), "tid": doc.get("tid")} == _me():
            marker.unlink()
    except (OSError, ValueError, TypeError, AttributeError):
        pass

"""E2E rules every test obeys: nothing of ours outlives the client that started it by more than 2 s.

The per-user helper is meant to outlive its clients (it leaves when idle): each test's helpers are
stopped after it, and only then is anything of ours still running a failure. The tunnels the helper
forked (``eicproxy-tunnel``) are held to the 2 s rule like any in-process ``connect``.
"""
from __future__ import annotations

import os

import pytest

from tests.conftest import wait_until
from tests.testbed.processes import HELPER, comm, our_processes, parent_of

LINGER = 2.0


def helpers(under: str = "") -> set[int]:
    """The helpers running (for one test, with ``under``). A process the helper has just forked for a
    connection carries the helper's name until it renames itself (``eicproxy-tunnel``): on a loaded
    machine that can outlast a client that gave up waiting for it (2 s) and connected in-process. It is
    the helper's child, not a helper."""
    named = {pid for pid in our_processes(under) if comm(pid) == HELPER}
    return {pid for pid in named if parent_of(pid) not in named}


def stop_helpers(pids: set[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, 15)
        except OSError:
            pass
    wait_until(lambda: not (pids & helpers()), 5.0, 0.02)


@pytest.fixture(autouse=True)
def nothing_of_ours_lingers(tmp_path):
    mine = str(tmp_path)
    before = set(our_processes(mine))
    yield
    stop_helpers(helpers(mine) - before)
    left: dict[int, str] = {}

    def none_left() -> bool:
        left.clear()
        left.update({pid: cmd for pid, cmd in our_processes(mine).items() if pid not in before})
        return not left

    wait_until(none_left, LINGER, 0.05)
    for pid in left:
        try:
            os.kill(pid, 9)
        except OSError:
            pass
    assert not left, f"still running {LINGER:.0f} s after the test's clients ended: {sorted(left.values())}"

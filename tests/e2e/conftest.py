"""E2E rules every test obeys: nothing of ours outlives the client that started it by more than 2 s.

The per-user helper is meant to outlive its clients (it leaves when idle): each test's helpers are
stopped after it, and only then is anything of ours still running a failure. The tunnels the helper
forked (``eicproxy-tunnel``) are held to the 2 s rule like any in-process ``connect``.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import wait_until

LINGER = 2.0


HELPER = "eicproxy-helper"


def comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def home_of(pid: int) -> str:
    """The HOME a process started with: every test runs its clients under its own tmp_path, so this
    tells whose a process is when several tests run at once (pytest -n)."""
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return ""
    return next((e[5:].decode(errors="replace") for e in env if e.startswith(b"HOME=")), "")


def helpers(under: str = "") -> set[int]:
    return {pid for pid in our_processes(under) if comm(pid) == HELPER}


def stop_helpers(pids: set[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, 15)
        except OSError:
            pass
    wait_until(lambda: not (pids & helpers()), 5.0, 0.02)


def our_processes(under: str = "") -> dict[int, str]:
    """eic-proxy processes on this machine (the bed runs none: its fakes live in the test process);
    with ``under``, only those whose HOME is below that directory (one test's)."""
    found = {}
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        text = " ".join(a.decode(errors="replace") for a in argv if a)
        if any(a.endswith(b"/eic-proxy") or a == b"eic_proxy" or a.startswith(b"eic_proxy.") for a in argv[:3]):
            try:
                state = next(line for line in (entry / "status").read_text().splitlines()
                             if line.startswith("State:"))
            except (OSError, StopIteration):
                continue
            if "zombie" not in state and (not under or home_of(int(entry.name)).startswith(under)):
                found[int(entry.name)] = text
    return found


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

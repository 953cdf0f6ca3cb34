"""Finding eic-proxy's processes on this machine: for the e2e rules (nothing of ours lingers) and the bench.

Ours are the ``eic-proxy`` executable and the launcher ssh-config writes (in-process connects, thin
clients and their /bin/sh waiters, which keep its path as argv[0]), ``python -m tests.platform_sim``
(eic-proxy under a simulated platform) and ``python -m eic_proxy.helper.server`` (the helper, the
tunnels it forks and the short-lived processes that
prepare them, told apart by their /proc/PID/comm names).
"""
from __future__ import annotations

import os
from pathlib import Path

from eic_proxy.helper.child import HELPER_NAME as HELPER
from eic_proxy.helper.child import PREPARE_NAME as PREPARE
from eic_proxy.helper.child import TUNNEL_NAME as TUNNEL

__all__ = ["HELPER", "PREPARE", "TUNNEL", "comm", "home_of", "our_processes"]


def comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def parent_of(pid: int) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    return next((int(line.split()[1]) for line in status.splitlines() if line.startswith("PPid:")), 0)


def home_of(pid: int) -> str:
    """The HOME a process started with: every test runs its clients under its own tmp_path, so this
    tells whose a process is when several tests run at once (pytest -n)."""
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return ""
    return next((e[5:].decode(errors="replace") for e in env if e.startswith(b"HOME=")), "")


def our_processes(under: str = "") -> dict[int, str]:
    """Live eic-proxy processes (pid → command line), this process excepted; with ``under``, only
    those whose HOME is below that directory (one test's)."""
    found = {}
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if not any(a.endswith((b"/eic-proxy", b"/eic_proxy_connect.py")) or a == b"eic_proxy" or a.startswith(b"eic_proxy.")
                   or a == b"tests.platform_sim" for a in argv[:3]):
            continue
        try:
            state = next(line for line in (entry / "status").read_text().splitlines() if line.startswith("State:"))
        except (OSError, StopIteration):
            continue
        if "zombie" not in state and (not under or home_of(int(entry.name)).startswith(under)):
            found[int(entry.name)] = " ".join(a.decode(errors="replace") for a in argv if a)
    return found

"""``eic-proxy helper status|stop``: see and stop this user's warm helpers (README: "The helper").

``connect`` starts a helper by itself when none runs; this command is for looking and for a clean
restart. Stopping a helper ends no tunnel: each runs in a process of its own.
"""
from __future__ import annotations

import argparse
import glob
import os
import sys
from typing import Any

from eic_proxy.helper import address
from eic_proxy.helper.client import ask
from eic_proxy.options import add_common


def add_parser(sub: Any) -> None:
    h = sub.add_parser("helper", help="show or stop the per-user helper that keeps connections warm",
                       description="The helper starts on the first `connect` and leaves when idle. "
                                   "`status` lists this user's helpers, `stop` stops them (tunnels keep running).")
    h.add_argument("action", choices=["status", "stop"])
    add_common(h)


def run(args: argparse.Namespace) -> int:
    directory = address.helper_dir()
    if directory is None:
        print("no helper on this platform: connections run in their own process", file=sys.stderr)
        return 0
    mine = address.socket_name(address.identity())
    found = 0
    for path in sorted(glob.glob(os.path.join(glob.escape(directory), "helper-*.sock"))):
        answer = ask(path, args.action)
        build = "this build" if os.path.basename(path) == mine else "another build"
        if answer is None:
            try:
                os.unlink(path)  # nothing listens: a helper that was killed left it
            except OSError:
                pass
            print(f"{path}: stale socket removed", file=sys.stderr)
            continue
        found += 1
        if args.action == "stop":
            print(f"stopped helper {answer.get('pid')} ({build}); its tunnels keep running", file=sys.stderr)
        else:
            if answer.get("cold_loaded"):
                loaded = "first connections ready"
            elif answer.get("cold_wanted"):
                loaded = "loads what first connections need at the next idle moment"
            else:
                loaded = "lean (loads what first connections need after one)"
            print(f"helper {answer.get('pid')} ({build}) at {path}: {answer.get('connections')} connections, "
                  f"up {answer.get('uptime', 0):.0f} s, {loaded}, leaves after {answer.get('idle', 0):.0f} s idle")
    if not found and args.action == "status":
        print(f"no helper running (it starts with the next `eic-proxy connect`; directory {directory})")
    return 0

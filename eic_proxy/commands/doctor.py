"""``eic-proxy doctor HOST``: the whole chain, one check per line, each failure with its fix.

The checks themselves live in ``eic_proxy/checks/``: ``probes`` (AWS, the endpoint, ssh) and
``rules`` (pure judgement of what they found).
"""
from __future__ import annotations

import argparse
import ipaddress
import json
import os
import sys
from typing import Any, Optional

from eic_proxy.checks.probes import Doctor
from eic_proxy.checks.rules import FAIL, PASS, Check
from eic_proxy.errors import ExitCode
from eic_proxy.options import KEY_FLAGS, add_common, add_flags, add_remote_port, connect_options
from eic_proxy.text import pad

MARKS = {"pass": "✔", "fail": "✘", "skip": "–"}
ASCII_MARKS = {"pass": "ok", "fail": "XX", "skip": "--"}  # for a console or file that cannot hold the marks
COLORS = {"pass": "32", "fail": "31", "skip": "33"}


def marks_fit(encoding: Optional[str]) -> bool:
    try:
        "".join(MARKS.values()).encode(encoding or "ascii")
        return True
    except (UnicodeEncodeError, LookupError):
        return False


def render(check: Check, color: bool = False, unicode: bool = True) -> str:
    mark = (MARKS if unicode else ASCII_MARKS)[check.status]
    if color:
        mark = f"\033[{COLORS[check.status]}m{mark}\033[0m"
    line = f"{mark} {pad(check.name, 17)} {check.detail}"
    if check.fix and check.status != PASS:
        line += f"\n  {'':<17} fix: {check.fix}"
    return line


def run_doctor(opts: Any, client_ip: Optional[str], as_json: bool) -> int:
    from eic_proxy.config import validate

    validate(opts)
    if client_ip is not None:
        try:
            client_ip = str(ipaddress.ip_address(client_ip))
        except ValueError:
            from eic_proxy.errors import UsageError

            raise UsageError(f"--client-ip {client_ip!r} is not an IP address") from None
    color = not as_json and sys.stdout.isatty() and not os.environ.get("NO_COLOR")
    unicode = marks_fit(getattr(sys.stdout, "encoding", None))
    emit = None if as_json else (lambda c: print(render(c, color, unicode), flush=True))
    doctor = Doctor(opts, client_ip, emit)
    ok = doctor.run()
    if as_json:
        print(json.dumps({"host": opts.host, "ok": ok, "checks": [c.to_dict() for c in doctor.checks]}, indent=2))
    else:
        failed = sum(c.status == FAIL for c in doctor.checks)
        print("all checks passed" if ok else f"{failed} check{'s' if failed != 1 else ''} failed")
    return 0 if ok else int(ExitCode.CHECKS_FAILED)


def add_parser(sub: Any) -> None:
    d = sub.add_parser("doctor", help="check the whole chain to HOST and say how to fix what fails",
                       description="Check credentials, instance, endpoint (state, PreserveClientIp, IP type), "
                                   "security groups, IAM (simulated when allowed), key push, handshake, the SSH "
                                   "banner and a real login, one line each; every failure names its fix. "
                                   "Read-only. Exit 0 only when every check passes.")
    d.add_argument("host", metavar="HOST", help="instance ID, Name tag, tag:KEY=VALUE, IP or DNS name")
    add_remote_port(d)
    d.add_argument("--client-ip", metavar="ADDRESS",
                   help="your public IP as AWS sees it (for endpoints that preserve client IPs; default: "
                        "asked of checkip.amazonaws.com)")
    d.add_argument("--json", action="store_true", help="machine-readable output")
    add_flags(d, "os_user", "eice_id", "max_tunnel_duration", "push", "timeout", *KEY_FLAGS, "pick", "ip_family",
              helps={"os_user": "OS user to check (default: config, else ec2-user)",
                     "eice_id": "check this endpoint instead of discovering one",
                     "max_tunnel_duration": "as you pass it to connect", "push": "skip the push and login checks",
                     "timeout": "API and handshake timeout", "pick": "when the name matches several instances"})
    add_common(d)

def run(args: argparse.Namespace) -> int:
    args.use_cache = False  # fresh lookups: the doctor checks what AWS says now
    return run_doctor(connect_options(args, args.host, args.remote_port, args.os_user), args.client_ip, args.json)

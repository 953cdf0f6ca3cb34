"""``eic-proxy ls``: the instances of a region and whether each can be reached through an endpoint.

Two API calls in all (DescribeInstances and DescribeInstanceConnectEndpoints, both paginated),
whatever the number of instances.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Optional

from eic_proxy.aws.client import api_errors, make_aws
from eic_proxy.aws.errors import translate
from eic_proxy.control.endpoint import choose_endpoint, describe_endpoints
from eic_proxy.control.resolve import ASG_TAG, describe_all, target_from_instance
from eic_proxy.options import add_common


def rows(aws: Any, ec2: Any, include_terminated: bool = False, asg: Optional[str] = None) -> list[dict[str, Any]]:
    query: dict[str, Any] = {"Filters": [{"Name": f"tag:{ASG_TAG}", "Values": [asg]}]} if asg else {}
    try:
        instances = describe_all(ec2, **query)
    except api_errors() as exc:
        raise translate(exc, "listing instances", aws.profile) from exc
    endpoints = describe_endpoints(aws, ec2)
    out: list[dict[str, Any]] = []
    for inst in instances:
        t = target_from_instance(inst)
        if t.state == "terminated" and not include_terminated:
            continue
        chosen = choose_endpoint(endpoints, t) if t.vpc_id else None
        out.append({
            "name": t.name, "instance_id": t.instance_id, "ip": t.ip or None, "state": t.state,
            "vpc_id": t.vpc_id or None, "subnet_id": t.subnet_id or None,
            "endpoint_id": chosen.endpoint_id if chosen else None,
            "reachable": bool(chosen and t.ip and t.state == "running"),
            "launch_time": t.launch_time,
        })
    out.sort(key=lambda r: ((r["name"] or "~").lower(), r["instance_id"]))
    from collections import Counter

    names = Counter(r["name"] for r in out if r["state"] == "running")  # what a name reaches: running ones
    for r in out:
        r["ssh"] = ssh_command(r["name"], r["instance_id"], unique=r["state"] == "running" and names[r["name"]] == 1)
    return out


# What a POSIX shell would take for syntax in a word (quoted when a name holds one), and what no name
# may hold to be reached by name: what ssh refuses in a host name (OpenSSH 9.6's valid_hostname,
# CVE-2023-51385) or cannot carry, and what eic-proxy reads as a glob (``web-*``).
_SHELL_SPECIAL = set(" \t'\"\\$`&;|<>()*?[]{}!#~=%^")
_NOT_BY_NAME = set("'\"\\$`&;|<>(){}*?[]") | {chr(c) for c in range(33)} | {chr(127)}


def ssh_command(name: Optional[str], instance_id: str, unique: bool = True) -> str:
    """The exact command that reaches this instance through the generated block: its Name when ssh can
    carry it (quoted for the shell when needed; the block passes ssh's %n, so the case is kept), else
    its instance ID (no name, a name several instances share, one ssh refuses or that reads as a glob)."""
    from eic_proxy.store.knownhosts import usable_name

    if not name or not unique or name.startswith("-") or set(name) & _NOT_BY_NAME or not usable_name(name):
        return f"ssh {instance_id}"
    if set(name) & _SHELL_SPECIAL:
        import shlex

        return f"ssh {shlex.quote(name)}"
    return f"ssh {name}"


def run_ls(profile: Optional[str], region: Optional[str], as_json: bool, include_terminated: bool,
           asg: Optional[str] = None) -> int:
    aws = make_aws(profile, region)
    table = rows(aws, aws.client("ec2"), include_terminated, asg)
    if as_json:
        print(json.dumps(table, indent=2))
        return 0
    from eic_proxy.text import table as aligned

    headers = ["NAME", "INSTANCE", "PRIVATE IP", "STATE", "VPC", "ENDPOINT", "SSH"]
    lines = [[r["name"] or "-", r["instance_id"], r["ip"] or "-", r["state"], r["vpc_id"] or "-",
              r["endpoint_id"] or "none (create one)", r["ssh"]] for r in table]
    for line in aligned(headers, lines):
        sys.stdout.write(line + "\n")
    if not table:
        print(f"no instances{' in the Auto Scaling group ' + asg if asg else ''} in {aws.region}"
              + (f" (profile {aws.profile})" if aws.profile else ""), file=sys.stderr)
    elif asg:
        print(f"connect to one with `ssh asg:{asg}` and --pick newest / oldest (ssh-config pattern: asg:*)",
              file=sys.stderr)
    return 0


def add_parser(sub: Any) -> None:
    ls = sub.add_parser("ls", help="list instances and whether their VPC has a usable endpoint",
                        description="List instances in the region: name, ID, private IP, state, VPC, endpoint.")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    ls.add_argument("--all", action="store_true", help="include terminated instances")
    ls.add_argument("--asg", metavar="NAME", help="only the instances of this Auto Scaling group")
    add_common(ls)


def run(args: argparse.Namespace) -> int:
    return run_ls(args.profile, args.region, args.json, args.all, args.asg)

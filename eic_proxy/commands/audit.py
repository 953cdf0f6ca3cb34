"""``eic-proxy audit``: the local audit log, filtered, optionally beside CloudTrail's record."""
from __future__ import annotations

import argparse
import datetime as dt
import fnmatch
import json
import re
import sys
from typing import Any, Optional

from eic_proxy.errors import UsageError
from eic_proxy.options import add_common
from eic_proxy.store import audit
from eic_proxy.text import pad

_DURATION_RE = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(value: str, now: Optional[dt.datetime] = None) -> dt.datetime:
    """``90m``, ``2h``, ``7d``, ``1w`` ago, or an ISO 8601 date/time (UTC when no zone is given)."""
    now = now or dt.datetime.now(dt.timezone.utc)
    m = _DURATION_RE.match(value.strip())
    if m:
        return now - dt.timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2)])
    try:
        when = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"--since {value!r} is neither a duration nor a date",
                         hint="use e.g. 30m, 2h, 7d, or 2026-11-23T08:00") from None
    return when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)


def _when(entry: dict[str, Any]) -> Optional[dt.datetime]:
    try:
        return dt.datetime.fromisoformat(str(entry.get("time", "")).replace("Z", "+00:00"))
    except ValueError:
        return None


def local_entries(entries: list[dict[str, Any]], host: Optional[str],
                  since: Optional[dt.datetime]) -> list[dict[str, Any]]:
    """Entries since ``since`` about ``host``: matched by alias or instance ID, and pushes (which know
    only the instance) by the instance IDs the matching aliases resolved to."""
    ids: set[str] = set()
    if host:
        ids = {str(e["instance_id"]) for e in entries if e.get("instance_id")
               and any(fnmatch.fnmatchcase(str(e.get(k) or ""), host) for k in ("host", "instance_id"))}
    out = []
    for entry in entries:
        when = _when(entry)
        if since is not None and (when is None or when < since):
            continue
        if host and not (entry.get("instance_id") in ids or fnmatch.fnmatchcase(str(entry.get("host") or ""), host)):
            continue
        out.append(entry)
    return out


def _size(n: Any) -> str:
    from eic_proxy.tunnel.effects import format_bytes

    return format_bytes(n) if isinstance(n, int) else "?"


def describe(entry: dict[str, Any]) -> str:
    """One human line per event."""
    e = entry.get("event")
    who = entry.get("host") or entry.get("instance_id") or "?"
    if entry.get("host") and entry.get("instance_id") and entry["host"] != entry["instance_id"]:
        who = f"{entry['host']} ({entry['instance_id']})"
    if e == "push":
        return (f"push        {entry.get('instance_id')} as {entry.get('os_user')}  key {entry.get('fingerprint')}"
                f"  request {entry.get('request_id')}")
    if e == "connect":
        return (f"connect     {who} {entry.get('ip')}:{entry.get('port')} via {entry.get('endpoint_id')}"
                + (f"  push {entry['push_request_id']}" if entry.get("push_request_id") else "")
                + {"open": "  (still open)", "not recorded": "  (its end was not recorded: the process was "
                   "ended before it could write it)"}.get(str(entry.get("end")), ""))
    if e == "disconnect":
        return (f"disconnect  {who}  up {_size(entry.get('bytes_up'))}, down {_size(entry.get('bytes_down'))}, "
                f"{entry.get('duration', 0):.1f} s, {entry.get('reason')}, exit {entry.get('exit_code')}"
                + (f": {entry['error']}" if entry.get("error") else ""))
    if e == "connect-failed":
        return f"failed      {who}: {entry.get('error')} (exit {entry.get('exit_code')})"
    rest = {k: v for k, v in entry.items() if k not in ("time", "event")}
    return f"{pad(str(e), 11)} {json.dumps(rest, separators=(',', ':'))}"


def annotate_ends(log: list[dict[str, Any]]) -> None:
    """Mark each ``connect`` that has no ``disconnect``: ``end`` is "open" while its process runs, else
    "not recorded" (Windows' ssh ends its ProxyCommand with TerminateProcess: nothing runs at the end)."""
    from eic_proxy.store.files import process_alive

    ended = {e.get("id") for e in log if e.get("event") == "disconnect"}
    for entry in log:
        if entry.get("event") == "connect" and entry.get("id") and entry["id"] not in ended:
            pid = entry.get("pid")
            entry["end"] = "open" if isinstance(pid, int) and process_alive(pid) else "not recorded"


def run_audit(args: Any) -> int:
    since = parse_since(args.since) if args.since else None
    log = list(audit.read())
    annotate_ends(log)
    entries = local_entries(log, args.host, since)
    if args.limit:
        entries = entries[-args.limit:]
    if args.log_group:
        return run_log_group(args, entries, log, since)
    trail = None
    if args.cloudtrail:
        trail = _cloudtrail(args, entries, log, since)
    if args.json:
        doc: dict[str, Any] = {"log": str(audit.log_path()), "local": entries}
        if trail is not None:
            doc["cloudtrail"] = [t.to_dict() for t in trail]
        print(json.dumps(doc, indent=2))
        return 0
    if not entries:
        print(f"no local audit entries{' for ' + args.host if args.host else ''}"
              f"{' since ' + since.isoformat(timespec='seconds') if since else ''} in {audit.log_path()}",
              file=sys.stderr)
    for entry in entries:
        print(f"{pad(str(entry.get('time', '?')), 25)} {describe(entry)}")
    if trail is not None:
        print(f"\nCloudTrail ({len(trail)} EC2 Instance Connect events):")
        print_trail(trail, entries)
    return 0


def print_trail(trail: list, entries: list[dict[str, Any]]) -> None:
    """CloudTrail's records, one line each, marked with the local entry each one records."""
    for t in trail:
        what = (f"{t.instance_id} as {t.os_user}" if t.name == "SendSSHPublicKey"
                else f"{t.private_ip}:{t.port} via {t.endpoint_id}")
        mark = f"= local {t.matched}" if t.matched else "no local entry (another machine, user or tool)"
        err = f" DENIED {t.error}" + (f": {t.error_message}" if t.error_message else "") if t.error else ""
        src = f" from {t.source_ip}" if t.source_ip else ""
        print(f"{pad(t.time, 25)} {pad(t.name, 17)} {what}  by {t.principal}{src}  request {t.request_id or '-'}{err}  [{mark}]")
    matched = {t.matched for t in trail if t.matched}
    missing = [e for e in entries if e.get("event") in ("push", "connect") and e.get("time") not in matched]
    if missing:
        print(f"{len(missing)} local push/connect entries have no CloudTrail event yet "
              "(CloudTrail delivers within about 15 minutes)")


def run_log_group(args: Any, entries: list[dict[str, Any]], log: list[dict[str, Any]],
                  since: Optional[dt.datetime]) -> int:
    """``--log-group``: a trail's EC2 Instance Connect records from CloudWatch Logs, for the whole team."""
    from eic_proxy.aws.client import make_aws
    from eic_proxy.aws.cloudtrail import line_up, log_group_events, select

    start = since or dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=1)
    aws = make_aws(args.profile, args.region)
    ids, ips = _host_filter(args, entries, aws)
    tty = sys.stderr.isatty()

    def progress(pages: int, found: int) -> None:
        if tty:
            sys.stderr.write(f"\r  reading {args.log_group}: page {pages}, {found} EC2 Instance Connect events")
            sys.stderr.flush()

    events = log_group_events(aws, args.log_group, start, principal=args.principal, progress=progress)
    if tty:
        sys.stderr.write("\r\033[K")
    events = select(events, ids, ips, args.principal)
    line_up(events, with_reused_pushes(entries, log))
    if args.json:
        print(json.dumps([dict(t.to_dict(), denied=bool(t.error)) for t in events], indent=2))
        return 0
    print(f"{len(events)} EC2 Instance Connect events in {args.log_group} since {start.isoformat(timespec='seconds')}:")
    print_trail(events, [e for e in entries if e.get("event") in ("push", "connect")])
    return 0


def _host_filter(args: Any, entries: list[dict[str, Any]], aws: Any) -> tuple[set[str], set[str]]:
    """--host as instance IDs and addresses: from the local log, else asked of AWS (others' connections
    to it are not in our log)."""
    from eic_proxy.control.resolve import is_instance_id

    if not args.host:
        return set(), set()
    if is_instance_id(args.host):
        return {args.host}, set()
    ids = {e["instance_id"] for e in entries if e.get("instance_id")}
    ips = {e["ip"] for e in entries if e.get("ip")}
    if ids:
        return ids, ips
    from eic_proxy.control.locate import Locator
    from eic_proxy.control.resolve import parse_host
    from eic_proxy.store.cache import Cache

    target = Locator(aws, Cache(), "newest", None, allow_stopped=True).locate(parse_host(args.host)).target
    return {target.instance_id}, {target.ip} if target.ip else set()


def _cloudtrail(args: Any, entries: list[dict[str, Any]], log: list[dict[str, Any]],
                since: Optional[dt.datetime]) -> list:
    from eic_proxy.aws.client import make_aws
    from eic_proxy.aws.cloudtrail import line_up, lookup, select
    from eic_proxy.control.resolve import is_instance_id

    start = since or dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=1)
    ids = {e["instance_id"] for e in entries if e.get("instance_id")}
    ips = {e["ip"] for e in entries if e.get("ip")}
    if args.host and is_instance_id(args.host):
        ids.add(args.host)
    if args.host and not ids:
        raise UsageError(f"no local entries name {args.host!r}, so its instance is unknown",
                         hint="pass the instance ID as --host, or widen --since")
    aws = make_aws(args.profile, args.region)
    events = select(lookup(aws, start), ids if args.host else set(), ips if args.host else set(), args.principal)
    line_up(events, with_reused_pushes(entries, log))
    return events


def with_reused_pushes(entries: list[dict[str, Any]], log: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``entries`` plus the pushes they reused: older than the window, they still match by RequestId."""
    wanted = {e.get("push_request_id") for e in entries if e.get("push_request_id")}
    extra = [e for e in log if e.get("event") == "push" and e.get("request_id") in wanted
             and e not in entries]
    return entries + extra


def add_parser(sub: Any) -> None:
    au = sub.add_parser("audit", help="show the local audit log (pushes, connections), optionally with CloudTrail",
                        description="Show the local audit log: key pushes and connections (start, end, bytes each "
                                    "way, duration, exit reason, RequestIds). --cloudtrail adds the matching "
                                    "SendSSHPublicKey/OpenTunnel events from CloudTrail LookupEvents.")
    au.add_argument("--host", metavar="PATTERN", help="only entries for this alias or instance ID (glob)")
    au.add_argument("--since", metavar="WHEN", help="30m, 2h, 7d, or an ISO date/time")
    au.add_argument("--limit", type=int, metavar="N", help="only the last N local entries")
    au.add_argument("--cloudtrail", action="store_true", help="also look up CloudTrail events and line them up")
    au.add_argument("--log-group", metavar="NAME",
                    help="read the EC2 Instance Connect records of a CloudTrail trail delivered to this CloudWatch "
                         "Logs group (FilterLogEvents): every user, every account the trail covers")
    au.add_argument("--principal", metavar="ARN",
                    help="with --cloudtrail / --log-group: only events by this principal (substring)")
    au.add_argument("--json", action="store_true", help="machine-readable output")
    add_common(au)


def run(args: argparse.Namespace) -> int:
    return run_audit(args)

"""CloudTrail's side of the audit: SendSSHPublicKey and OpenTunnel events, lined up with local entries.

LookupEvents takes one lookup attribute per call, so we ask for the EC2 Instance Connect event
source over the time window and filter by instance and principal here. CloudTrail delivers events
minutes after the call; a local entry without its CloudTrail twin is normal for the last ~15 min.
"""
from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional

from eic_proxy.aws.client import Aws, api_errors
from eic_proxy.aws.errors import translate
from eic_proxy.errors import AccessDenied

EVENT_SOURCE = "ec2-instance-connect.amazonaws.com"
EVENT_NAMES = ("SendSSHPublicKey", "OpenTunnel")
MAX_EVENTS = 2000  # a bound on pages; LookupEvents allows 2 calls/s per account
MAX_LOG_EVENTS = 100_000  # a log group of an organisation trail can hold far more; --since narrows it


@dataclass
class TrailEvent:
    time: str
    name: str
    principal: str
    request_id: str
    instance_id: Optional[str] = None
    os_user: Optional[str] = None
    endpoint_id: Optional[str] = None
    private_ip: Optional[str] = None
    port: Optional[int] = None
    error: Optional[str] = None
    error_message: Optional[str] = None
    source_ip: Optional[str] = None
    matched: Optional[str] = None  # time of the local entry it corresponds to
    raw: dict = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "raw" and v is not None}


def parse_record(record: dict[str, Any], lookup: Optional[dict[str, Any]] = None) -> Optional[TrailEvent]:
    """One CloudTrail record (as delivered to CloudWatch Logs, or inside a LookupEvents event) → TrailEvent;
    None for anything but EC2 Instance Connect's pushes and tunnels."""
    from eic_proxy.tunnel.endpoint_errors import clean_text

    lookup = lookup or {}
    name = record.get("eventName") or lookup.get("EventName")
    source = record.get("eventSource") or lookup.get("EventSource") or EVENT_SOURCE
    if name not in EVENT_NAMES or source != EVENT_SOURCE:
        return None
    params = record.get("requestParameters") or {}
    if not isinstance(params, dict):
        params = {}
    when = lookup.get("EventTime")
    stamp = when.astimezone(dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z") \
        if isinstance(when, dt.datetime) else str(record.get("eventTime") or when or "")
    instance_id = params.get("instanceId")
    for res in lookup.get("Resources") or record.get("resources") or []:
        res_name = str(res.get("ResourceName") or res.get("ARN") or "").rsplit("/", 1)[-1]
        if instance_id is None and res_name.startswith("i-"):
            instance_id = res_name
    port = params.get("remotePort")
    message = record.get("errorMessage")
    return TrailEvent(
        time=stamp, name=str(name), principal=clean_text(str((record.get("userIdentity") or {}).get("arn")
                                                          or lookup.get("Username") or ""), 200),
        request_id=str(record.get("requestID") or ""),
        instance_id=instance_id, os_user=params.get("instanceOSUser"),
        endpoint_id=params.get("instanceConnectEndpointId"), private_ip=params.get("privateIpAddress"),
        port=int(str(port)) if str(port or "").isdigit() else None,
        error=clean_text(str(record["errorCode"]), 80) if record.get("errorCode") else None,
        error_message=clean_text(str(message)) if message else None,
        source_ip=clean_text(str(record["sourceIPAddress"]), 80) if record.get("sourceIPAddress") else None,
        raw=lookup or record,
    )


def _parse(event: dict[str, Any]) -> Optional[TrailEvent]:
    try:
        detail = json.loads(event.get("CloudTrailEvent") or "{}")
    except ValueError:
        detail = {}
    return parse_record(detail if isinstance(detail, dict) else {}, event)


def lookup(aws: Aws, start: dt.datetime, end: Optional[dt.datetime] = None) -> list[TrailEvent]:
    """Every EC2 Instance Connect event in the window, oldest first."""
    trail = aws.client("cloudtrail")
    kwargs: dict[str, Any] = {
        "LookupAttributes": [{"AttributeKey": "EventSource", "AttributeValue": EVENT_SOURCE}],
        "StartTime": start, "EndTime": end or dt.datetime.now(dt.timezone.utc), "MaxResults": 50,
    }
    out: list[TrailEvent] = []
    try:
        while len(out) < MAX_EVENTS:
            resp = trail.lookup_events(**kwargs)
            out.extend(e for e in map(_parse, resp.get("Events") or []) if e is not None)
            token = resp.get("NextToken")
            if not token:
                break
            kwargs["NextToken"] = token
    except api_errors() as exc:
        err = translate(exc, "looking up CloudTrail events", aws.profile)
        if isinstance(err, AccessDenied):
            err.hint = "--cloudtrail needs cloudtrail:LookupEvents"
        raise err from exc
    return sorted(out, key=lambda e: e.time)


# Server-side: only EC2 Instance Connect's two events leave the log group (CloudWatch Logs filter pattern).
LOG_FILTER = ('{ ($.eventSource = "ec2-instance-connect.amazonaws.com") && '
              '(($.eventName = "SendSSHPublicKey") || ($.eventName = "OpenTunnel")) }')


def log_group_events(aws: Aws, group: str, start: dt.datetime, end: Optional[dt.datetime] = None,
                     principal: Optional[str] = None, progress: Any = None) -> list[TrailEvent]:
    """The EC2 Instance Connect records of a CloudTrail trail delivered to a CloudWatch Logs group
    (``FilterLogEvents``, paginated, every region and account the trail covers), oldest first."""
    logs = aws.client("logs")
    pattern = LOG_FILTER
    if principal and principal.startswith("arn:") and '"' not in principal:
        pattern = LOG_FILTER[:-2] + f' && ($.userIdentity.arn = "{principal}") }}'
    kwargs: dict[str, Any] = {"logGroupName": group, "filterPattern": pattern,
                              "startTime": int(start.timestamp() * 1000)}
    if end is not None:
        kwargs["endTime"] = int(end.timestamp() * 1000)
    out: list[TrailEvent] = []
    pages = 0
    try:
        while len(out) < MAX_LOG_EVENTS:
            resp = logs.filter_log_events(**kwargs)
            pages += 1
            for item in resp.get("events") or []:
                try:
                    record = json.loads(item.get("message") or "")
                except ValueError:
                    continue
                event = parse_record(record) if isinstance(record, dict) else None
                if event is not None:
                    out.append(event)
            if progress is not None:
                progress(pages, len(out))
            token = resp.get("nextToken")
            if not token:
                break
            kwargs["nextToken"] = token
    except api_errors() as exc:
        err = translate(exc, f"reading the log group {group}", aws.profile)
        if isinstance(err, AccessDenied):
            err.hint = f"--log-group needs logs:FilterLogEvents on {group} (`eic-proxy policy --audit`)"
        elif "ResourceNotFound" in err.message:
            err.hint = "check the log group name and the region (--region): `aws logs describe-log-groups`"
        raise err from exc
    return sorted(out, key=lambda e: e.time)


def select(events: Iterable[TrailEvent], instance_ids: set[str], ips: set[str],
           principal: Optional[str] = None) -> list[TrailEvent]:
    """Events about these instances (pushes by ID, tunnels by target address), by this principal."""
    chosen = []
    for e in events:
        if principal and principal not in e.principal:
            continue
        if instance_ids or ips:
            if not ((e.instance_id and e.instance_id in instance_ids) or (e.private_ip and e.private_ip in ips)):
                continue
        chosen.append(e)
    return chosen


def line_up(events: list[TrailEvent], local: list[dict[str, Any]], window: float = 120.0) -> None:
    """Mark each CloudTrail event with the local entry it records: pushes by RequestId, tunnels by
    endpoint, address and port within ``window`` seconds (the WebSocket returns no RequestId)."""
    pushes = {e.get("request_id"): e for e in local if e.get("event") == "push" and e.get("request_id")}
    tunnels = [e for e in local if e.get("event") in ("connect", "connect-failed")]
    for ev in events:
        if ev.name == "SendSSHPublicKey" and ev.request_id in pushes:
            ev.matched = pushes[ev.request_id]["time"]
        elif ev.name == "OpenTunnel":
            at = _seconds(ev.time)
            for entry in tunnels:
                if (entry.get("endpoint_id") in (None, ev.endpoint_id) and entry.get("ip") in (None, ev.private_ip)
                        and entry.get("port") in (None, ev.port) and at is not None
                        and abs((_seconds(entry.get("time", "")) or 0) - at) <= window):
                    ev.matched = entry["time"]
                    break


def _seconds(stamp: str) -> Optional[float]:
    try:
        return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None

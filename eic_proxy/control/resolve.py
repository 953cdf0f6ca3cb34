"""Host alias → Target, through DescribeInstances (docs/protocol.md §2.1)."""
from __future__ import annotations

import fnmatch
import ipaddress
import logging
import re
from dataclasses import dataclass
from enum import Enum
from typing import Any, Optional, Sequence

from eic_proxy.aws.client import api_errors
from eic_proxy.aws.errors import translate
from eic_proxy.aws.seams import AwsApi
from eic_proxy.errors import AmbiguousHost, HostNotFound, InstanceStateError, UsageError
from eic_proxy.model import Target

log = logging.getLogger(__name__)

INSTANCE_ID_RE = re.compile(r"^i-[0-9a-f]{8,17}$")
REGION_RE = re.compile(r"^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-\d+$")
PRIVATE_DNS_RE = re.compile(r"^ip-(\d+)-(\d+)-(\d+)-(\d+)\.(ec2\.internal|[a-z0-9-]+\.compute\.internal)$")
SEPARATOR = "--"
ASG_TAG = "aws:autoscaling:groupName"  # EC2 Auto Scaling tags every instance it launches with its group


class HostKind(str, Enum):
    """What kind of alias the user typed (README: "Which instance")."""

    ID = "id"
    NAME = "name"
    GLOB = "glob"
    TAG = "tag"
    ASG = "asg"
    IPV4 = "ipv4"
    IPV6 = "ipv6"
    DNS = "dns"

    def __str__(self) -> str:  # the word itself in messages and JSON, on every Python version
        return self.value


@dataclass(frozen=True)
class HostSpec:
    """What the user typed, parsed: the kind of alias, its value, and an attached region/profile.

    Syntax (documented in the README): ``ALIAS[--REGION[--PROFILE]]``. A region has a strict shape
    (``eu-west-1``), so ``web--1`` stays a name while ``web-1--eu-west-1--prod`` carries both.
    """

    kind: HostKind
    value: str
    tag_key: Optional[str] = None
    region: Optional[str] = None
    profile: Optional[str] = None
    alias: str = ""  # the host as typed, without the region/profile suffix (config patterns match it)


def parse_host(text: str) -> HostSpec:
    from dataclasses import replace

    spec = _parse(text)
    host = text.strip()
    if spec.region:
        host = host[: -len(SEPARATOR + spec.region + (SEPARATOR + spec.profile if spec.profile else ""))]
    return replace(spec, alias=host)


def _parse(text: str) -> HostSpec:
    host = text.strip()
    if not host:
        raise UsageError("empty host name")
    region = profile = None
    parts = host.split(SEPARATOR)
    if len(parts) >= 3 and REGION_RE.match(parts[-2]) and parts[-1]:
        host, region, profile = SEPARATOR.join(parts[:-2]), parts[-2], parts[-1]
    elif len(parts) >= 2 and REGION_RE.match(parts[-1]):
        host, region = SEPARATOR.join(parts[:-1]), parts[-1]
    if not host:
        raise UsageError(f"no host before the region in {text!r}")
    if host.startswith("asg:"):
        if not host[4:]:
            raise UsageError(f"{text!r}: an Auto Scaling group alias is asg:NAME")
        return HostSpec(HostKind.ASG, host[4:], ASG_TAG, region, profile)
    if host.startswith("tag:"):
        key, eq, value = host[4:].partition("=")
        if not key or not eq:
            raise UsageError(f"{text!r}: a tag alias is tag:KEY=VALUE")
        return HostSpec(HostKind.TAG, value, key, region, profile)
    if INSTANCE_ID_RE.match(host):
        return HostSpec(HostKind.ID, host, None, region, profile)
    literal = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ip = ipaddress.ip_address(literal)
        return HostSpec(HostKind.IPV6 if ip.version == 6 else HostKind.IPV4, str(ip), None, region, profile)
    except ValueError:
        pass
    if PRIVATE_DNS_RE.match(host.lower()):
        return HostSpec(HostKind.DNS, host.lower(), None, region, profile)
    if any(c in host for c in "*?["):
        return HostSpec(HostKind.GLOB, host, None, region, profile)
    return HostSpec(HostKind.NAME, host, None, region, profile)




def describe_all(ec2: Any, **kwargs: Any) -> list[dict[str, Any]]:
    """Every instance record DescribeInstances returns for ``kwargs``, across all pages."""
    out: list[dict[str, Any]] = []
    while True:
        resp = ec2.describe_instances(**kwargs)
        out.extend(i for r in resp.get("Reservations", []) for i in r.get("Instances", []))
        token = resp.get("NextToken")
        if not token:
            return out
        kwargs["NextToken"] = token


def _query(spec: HostSpec) -> dict[str, Any]:
    running = {"Name": "instance-state-name", "Values": ["running"]}
    alive = {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]}
    if spec.kind == "id":
        return {"InstanceIds": [spec.value]}
    if spec.kind == "name":
        return {"Filters": [{"Name": "tag:Name", "Values": [spec.value]}, running]}
    if spec.kind == "glob":
        return {"Filters": [{"Name": "tag-key", "Values": ["Name"]}, running]}
    if spec.kind in ("tag", "asg"):
        return {"Filters": [{"Name": f"tag:{spec.tag_key}", "Values": [spec.value]}, running]}
    if spec.kind == "ipv4":
        return {"Filters": [{"Name": "private-ip-address", "Values": [spec.value]}, alive]}
    if spec.kind == "dns":
        return {"Filters": [{"Name": "private-dns-name", "Values": [spec.value]}, alive]}
    return {"Filters": [alive]}  # ipv6: matched below, the filter name varies across implementations


def _keep(spec: HostSpec, inst: dict[str, Any]) -> bool:
    if spec.kind == "glob":
        name = next((t["Value"] for t in inst.get("Tags") or [] if t.get("Key") == "Name"), "")
        return fnmatch.fnmatchcase(name, spec.value)
    if spec.kind == "ipv6":
        t = target_from_instance(inst)
        addrs = {a.get("Ipv6Address") for e in inst.get("NetworkInterfaces") or [] for a in e.get("Ipv6Addresses") or []}
        addrs.add(t.ipv6)
        return any(a and ipaddress.ip_address(a) == ipaddress.ip_address(spec.value) for a in addrs)
    return True


def find_instances(aws: AwsApi, ec2: Any, spec: HostSpec, states: Optional[Sequence[str]] = None) -> list[Target]:
    """Every instance the alias matches (names: running ones only, unless ``states`` says otherwise)."""
    query = _query(spec)
    if states is not None and "Filters" in query:
        query["Filters"] = [f for f in query["Filters"] if f["Name"] != "instance-state-name"]
        query["Filters"].append({"Name": "instance-state-name", "Values": list(states)})
    try:
        found = describe_all(ec2, **query)
    except api_errors() as exc:
        err = translate(exc, f"looking up {spec.value}", aws.profile)
        if isinstance(err, HostNotFound):
            return []
        raise err from exc
    return [target_from_instance(i) for i in found if _keep(spec, i)]


def pick(spec: HostSpec, matches: list[Target], how: Optional[str], where: str) -> Target:
    """One target from the matches, or an error that lists the candidates."""
    if not matches:
        what = {"id": "instance", "name": "running instance named", "glob": "running instance matching",
                "tag": f"running instance with tag {spec.tag_key} =", "asg": "running instance in the Auto Scaling group",
                "ipv4": "instance with private IP",
                "ipv6": "instance with IPv6 address", "dns": "instance with private DNS name"}[spec.kind]
        raise HostNotFound(f"no {what} {spec.value} in {where}",
                           hint="check the name, --region and --profile; `eic-proxy ls` lists instances")
    if len(matches) == 1:
        return matches[0]
    if how in ("newest", "oldest"):
        ordered = sorted(matches, key=lambda t: t.launch_time or "")
        return ordered[-1] if how == "newest" else ordered[0]
    listing = "; ".join(f"{t.instance_id} {t.name or '-'} {t.ip} launched {t.launch_time or '?'}"
                        for t in sorted(matches, key=lambda t: t.launch_time or ""))
    hint = ("a group's instances are alike: --pick newest / --pick oldest (ssh-config --pick puts it in the "
            "block), or an instance ID" if spec.kind == "asg" else
            "use an instance ID, a narrower name, or --pick newest / --pick oldest")
    raise AmbiguousHost(f"{spec.value} matches {len(matches)} instances: {listing}", hint=hint)


STARTABLE = ("pending", "stopping", "stopped")


def resolve(aws: AwsApi, ec2: Any, spec: HostSpec, how: Optional[str] = None, allow_stopped: bool = False) -> Target:
    """The one instance ``spec`` names, running (or startable, with ``allow_stopped``).

    Names match running instances only; when none runs, a second lookup finds a stopped one so the
    error can say "stopped, use --start" instead of "not found".
    """
    where = aws.region + (f" (profile {aws.profile})" if aws.profile else "")
    matches = find_instances(aws, ec2, spec)
    if not matches and spec.kind in ("name", "glob", "tag", "asg"):
        matches = [t for t in find_instances(aws, ec2, spec, states=STARTABLE)]
    target = pick(spec, matches, how, where)
    if not (allow_stopped and target.state in STARTABLE):
        check_usable(target)
    return target


def is_instance_id(host: str) -> bool:
    return bool(INSTANCE_ID_RE.match(host))


def target_from_instance(inst: dict[str, Any]) -> Target:
    """Build a Target from one DescribeInstances record; private IPv4 first, else IPv6."""
    name = next((t["Value"] for t in inst.get("Tags") or [] if t.get("Key") == "Name"), None)
    ipv6 = inst.get("Ipv6Address") or _first_ipv6(inst)
    ip = inst.get("PrivateIpAddress") or ipv6
    launch = inst.get("LaunchTime")
    return Target(
        instance_id=inst["InstanceId"],
        ip=ip or "",
        vpc_id=inst.get("VpcId") or "",
        subnet_id=inst.get("SubnetId") or "",
        state=(inst.get("State") or {}).get("Name", "unknown"),
        name=name,
        launch_time=launch.isoformat() if launch is not None and hasattr(launch, "isoformat") else launch,
        availability_zone=(inst.get("Placement") or {}).get("AvailabilityZone"),
        ipv6=ipv6,
    )


def _first_ipv6(inst: dict[str, Any]) -> Optional[str]:
    for eni in inst.get("NetworkInterfaces") or []:
        for addr in eni.get("Ipv6Addresses") or []:
            if addr.get("Ipv6Address"):
                return addr["Ipv6Address"]
    return None


def check_usable(target: Target) -> None:
    if target.state != "running":
        hint = (f"add --start to `eic-proxy connect` to start it on demand, "
                f"or run `aws ec2 start-instances --instance-ids {target.instance_id}`")
        if target.state in ("terminated", "shutting-down"):
            hint = "the instance is gone; pick another one"
        raise InstanceStateError(f"instance {target.instance_id} is {target.state}, not running", hint=hint)
    if not target.ip:
        raise HostNotFound(f"instance {target.instance_id} has no private IPv4 or IPv6 address to connect to",
                           hint="the endpoint reaches instances by private address; attach one")


def partition_for(region: str) -> str:
    """The ARN partition a region belongs to (aws, aws-cn, aws-us-gov, …)."""
    if region.startswith("cn-"):
        return "aws-cn"
    if region.startswith("us-gov-"):
        return "aws-us-gov"
    if region.startswith("us-iso-"):
        return "aws-iso"
    if region.startswith("us-isob-"):
        return "aws-iso-b"
    return "aws"

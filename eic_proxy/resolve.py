"""Host alias → Target, through DescribeInstances (eice-protocol.md §2.1)."""
from __future__ import annotations

import logging
import re
from typing import Any, Optional

from .aws import Aws, translate
from .errors import HostNotFound, InstanceStateError
from .target import Target

log = logging.getLogger(__name__)

INSTANCE_ID_RE = re.compile(r"^i-[0-9a-f]{8,17}$")


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
        launch_time=launch.isoformat() if hasattr(launch, "isoformat") else launch,
        availability_zone=(inst.get("Placement") or {}).get("AvailabilityZone"),
        ipv6=ipv6,
    )


def _first_ipv6(inst: dict[str, Any]) -> Optional[str]:
    for eni in inst.get("NetworkInterfaces") or []:
        for addr in eni.get("Ipv6Addresses") or []:
            if addr.get("Ipv6Address"):
                return addr["Ipv6Address"]
    return None


def describe_instance(aws: Aws, ec2: Any, instance_id: str) -> Target:
    """Look one instance up by ID; a missing or non-running instance is a clear error."""
    try:
        resp = ec2.describe_instances(InstanceIds=[instance_id])
    except Exception as exc:
        err = translate(exc, f"looking up {instance_id}", aws.profile)
        if isinstance(err, HostNotFound):
            err = HostNotFound(f"no instance {instance_id} in {aws.region}"
                               + (f" (profile {aws.profile})" if aws.profile else ""),
                               hint="check the instance ID, --region and --profile")
        raise err from exc
    instances = [i for r in resp.get("Reservations", []) for i in r.get("Instances", [])]
    if not instances:
        raise HostNotFound(f"no instance {instance_id} in {aws.region}",
                           hint="check the instance ID, --region and --profile")
    target = target_from_instance(instances[0])
    check_usable(target)
    return target


def check_usable(target: Target) -> None:
    if target.state != "running":
        hint = "start it first: `aws ec2 start-instances --instance-ids {0}`".format(target.instance_id)
        if target.state in ("terminated", "shutting-down"):
            hint = "the instance is gone; pick another one"
        raise InstanceStateError(f"instance {target.instance_id} is {target.state}, not running", hint=hint)
    if not target.ip:
        raise HostNotFound(f"instance {target.instance_id} has no private IPv4 or IPv6 address to connect to",
                           hint="the endpoint reaches instances by private address; attach one")

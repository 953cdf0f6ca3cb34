"""doctor's pure rules: the check records, what a security-group rule lets through, whose IAM policy
to simulate. Data in, answers out; tested without AWS (tests/unit/test_doctor_rules.py)."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Optional


class Status(str, Enum):
    """A check's result."""

    PASS = "pass"
    FAIL = "fail"
    SKIP = "skip"

    def __str__(self) -> str:  # the word itself in tables and JSON, on every Python version
        return self.value


PASS, FAIL, SKIP = Status.PASS, Status.FAIL, Status.SKIP


@dataclass
class Check:
    name: str
    status: Status
    detail: str
    fix: Optional[str] = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass
class Facts:
    """What earlier checks learned and later ones need."""

    aws: Any = None
    caller: Optional[str] = None
    target: Any = None
    instance: dict = field(default_factory=dict)
    endpoint: Any = None
    plan: Any = None  # lifecycle.connection.Plan, once the push check prepared it
    client_ip: Optional[str] = None
    endpoint_groups: Optional[list[str]] = None


def rule_allows(perm: dict, port: int, ip: Optional[str], groups: set[str], covers: Optional[str] = None) -> bool:
    """Whether one security-group rule lets tcp/``port`` through to/from ``ip``, ``groups`` or a
    CIDR that ``covers`` (a rule CIDR containing the whole subnet the endpoint lives in)."""
    proto = str(perm.get("IpProtocol", ""))
    if proto not in ("-1", "tcp", "6"):
        return False
    if proto != "-1":
        lo, hi = perm.get("FromPort"), perm.get("ToPort")
        if lo is None or hi is None or not (int(lo) <= port <= int(hi) or int(lo) == -1):
            return False
    if groups and any(p.get("GroupId") in groups for p in perm.get("UserIdGroupPairs") or []):
        return True
    nets = [r.get("CidrIp") for r in perm.get("IpRanges") or []] + [r.get("CidrIpv6") for r in perm.get("Ipv6Ranges") or []]
    for cidr in filter(None, nets):
        try:
            net = ipaddress.ip_network(cidr, strict=False)
            if ip is not None and ipaddress.ip_address(ip) in net:
                return True
            if covers is not None:
                sub = ipaddress.ip_network(covers, strict=False)
                if sub.version == net.version and sub.subnet_of(net):  # type: ignore[arg-type]
                    return True
        except (ValueError, TypeError):
            continue
    return False


def iam_principal(caller: str) -> Optional[str]:
    """The IAM ARN to simulate for an STS caller ARN: users as they are, assumed roles as their role."""
    if ":assumed-role/" in caller:
        head, _, rest = caller.partition(":assumed-role/")
        return head.replace(":sts:", ":iam:") + ":role/" + rest.split("/")[0]
    if ":iam:" in caller and (":user/" in caller or ":role/" in caller):
        return caller
    return None


Ask = tuple[str, str, list[dict[str, Any]]]


def simulation_asks(partition: str, region: str, account: str, endpoint_id: str, instance_id: str, ip: str,
                    port: int, os_user: Optional[str], max_tunnel_duration: Optional[int]) -> list[Ask]:
    """The (action, resource ARN, context) triples a connection needs, as SimulatePrincipalPolicy takes
    them: the push (when ``os_user`` is given), the tunnel with its condition keys, the Describe calls."""
    endpoint_arn = f"arn:{partition}:ec2:{region}:{account}:instance-connect-endpoint/{endpoint_id}"
    instance_arn = f"arn:{partition}:ec2:{region}:{account}:instance/{instance_id}"
    tunnel_ctx = [
        {"ContextKeyName": "ec2-instance-connect:remotePort", "ContextKeyValues": [str(port)],
         "ContextKeyType": "numeric"},
        {"ContextKeyName": "ec2-instance-connect:privateIpAddress", "ContextKeyValues": [ip],
         "ContextKeyType": "ip"},
    ]
    if max_tunnel_duration is not None:
        tunnel_ctx.append({"ContextKeyName": "ec2-instance-connect:maxTunnelDuration",
                           "ContextKeyValues": [str(max_tunnel_duration)], "ContextKeyType": "numeric"})
    asks: list[Ask] = [("ec2-instance-connect:OpenTunnel", endpoint_arn, tunnel_ctx),
                       ("ec2:DescribeInstances", "*", []), ("ec2:DescribeInstanceConnectEndpoints", "*", [])]
    if os_user is not None:
        asks.insert(0, ("ec2-instance-connect:SendSSHPublicKey", instance_arn,
                        [{"ContextKeyName": "ec2:osuser", "ContextKeyValues": [os_user], "ContextKeyType": "string"}]))
    return asks


def records_management_events(selectors: dict[str, Any]) -> bool:
    """Whether a trail's event selectors (classic or advanced) include management events; a trail with
    none set records them (CloudTrail's default)."""
    classic = selectors.get("EventSelectors")
    advanced = selectors.get("AdvancedEventSelectors")
    if not classic and not advanced:
        return True
    if any(s.get("IncludeManagementEvents", True) and s.get("ReadWriteType", "All") in ("All", "WriteOnly")
           for s in classic or []):
        return True
    for s in advanced or []:
        for f in s.get("FieldSelectors") or []:
            if f.get("Field") == "eventCategory" and "Management" in (f.get("Equals") or []):
                return True
    return False

"""The frozen records passed between steps: what we connect to and through which endpoint.

Both check their identifiers when built, from the API or from the cache alike: an instance ID becomes
a file name (known_hosts), an endpoint ID a directory (connection slots), the DNS name and address
parts of a URL. A value of the wrong shape raises ``InvalidRecord`` (for the cache: a miss).
"""
from __future__ import annotations

import re
import socket
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

from eic_proxy.errors import InvalidRecord

INSTANCE_ID = re.compile(r"^i-[0-9a-f]{8,17}$")
ENDPOINT_ID = re.compile(r"^eice-[0-9a-f]{8,17}$")
AWS_ID = re.compile(r"^(vpc|subnet)-[0-9a-zA-Z]{1,32}$")  # only ever API filter values: a safe charset
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
DNS_NAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*\.?$")




def is_ip(value: str) -> bool:
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, value)
            return True
        except (OSError, ValueError):
            continue
    return False


def _check(what: str, value: Optional[str], ok: bool) -> None:
    if not ok:
        raise InvalidRecord(f"the AWS API returned an {what} of an unexpected form: {str(value)[:80]!r}",
                            hint="check AWS_ENDPOINT_URL and proxies: is it AWS that answers?")


def _check_host(what: str, value: Optional[str], required: bool = False) -> None:
    if value or required:
        _check(what, value, isinstance(value, str) and (bool(DNS_NAME.match(value)) or is_ip(value)))


@dataclass(frozen=True)
class Target:
    """A resolved instance: everything the connect path needs, nothing from boto3 dicts."""

    instance_id: str
    ip: str  # the address the endpoint dials: private IPv4, else IPv6 (docs/protocol.md §2.1)
    vpc_id: str
    subnet_id: str
    state: str = "running"
    name: Optional[str] = None
    launch_time: Optional[str] = None
    availability_zone: Optional[str] = None
    ipv6: Optional[str] = None

    def __post_init__(self) -> None:
        _check("instance ID", self.instance_id, isinstance(self.instance_id, str)
               and bool(INSTANCE_ID.match(self.instance_id)))
        _check("instance address", self.ip, isinstance(self.ip, str) and (self.ip == "" or is_ip(self.ip)))
        _check("IPv6 address", self.ipv6, self.ipv6 is None or (isinstance(self.ipv6, str) and is_ip(self.ipv6)))
        for what, value in (("VPC ID", self.vpc_id), ("subnet ID", self.subnet_id)):
            _check(what, value, isinstance(value, str) and (value == "" or bool(AWS_ID.match(value))))

    @property
    def is_ipv6(self) -> bool:
        return ":" in self.ip

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Endpoint:
    """An EC2 Instance Connect Endpoint, reduced to the fields the tool uses."""

    endpoint_id: str
    dns_name: str
    vpc_id: str
    subnet_id: str
    state: str
    fips_dns_name: Optional[str] = None
    ip_address_type: Optional[str] = None
    preserve_client_ip: bool = False
    security_group_ids: tuple[str, ...] = field(default_factory=tuple)
    # PublicDnsNames.Dualstack: names with AAAA records too (the plain names resolve to IPv4 only)
    dualstack_dns_name: Optional[str] = None
    dualstack_fips_dns_name: Optional[str] = None

    def __post_init__(self) -> None:
        _check("endpoint ID", self.endpoint_id, isinstance(self.endpoint_id, str)
               and bool(ENDPOINT_ID.match(self.endpoint_id)))
        _check_host("endpoint DNS name", self.dns_name)
        _check_host("endpoint FIPS DNS name", self.fips_dns_name)
        _check_host("endpoint dual-stack DNS name", self.dualstack_dns_name)
        _check_host("endpoint dual-stack FIPS DNS name", self.dualstack_fips_dns_name)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["security_group_ids"] = list(self.security_group_ids)
        return d

    @classmethod
    def from_api(cls, item: dict[str, Any]) -> "Endpoint":
        dual = (item.get("PublicDnsNames") or {}).get("Dualstack") or {}
        return cls(
            endpoint_id=item["InstanceConnectEndpointId"],
            dns_name=item.get("DnsName") or "",
            vpc_id=item.get("VpcId") or "",
            subnet_id=item.get("SubnetId") or "",
            state=item.get("State") or "",
            fips_dns_name=item.get("FipsDnsName") or None,
            ip_address_type=item.get("IpAddressType") or None,
            preserve_client_ip=bool(item.get("PreserveClientIp")),
            security_group_ids=tuple(item.get("SecurityGroupIds") or ()),
            dualstack_dns_name=dual.get("DnsName") or None,
            dualstack_fips_dns_name=dual.get("FipsDnsName") or None,
        )

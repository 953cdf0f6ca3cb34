"""The frozen records passed between steps: what we connect to and through which endpoint."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Optional


@dataclass(frozen=True)
class Target:
    """A resolved instance: everything the connect path needs, nothing from boto3 dicts."""

    instance_id: str
    ip: str  # the address the endpoint dials: private IPv4, else IPv6 (eice-protocol.md §2.1)
    vpc_id: str
    subnet_id: str
    state: str = "running"
    name: Optional[str] = None
    launch_time: Optional[str] = None
    availability_zone: Optional[str] = None
    ipv6: Optional[str] = None

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

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["security_group_ids"] = list(self.security_group_ids)
        return d

    @classmethod
    def from_api(cls, item: dict[str, Any]) -> "Endpoint":
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
        )

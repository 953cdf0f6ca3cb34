"""EICE discovery and choice for a target (docs/protocol.md §2.2 and §7)."""
from __future__ import annotations

import logging
from typing import Any, Iterable, Optional

from eic_proxy.aws.client import api_errors
from eic_proxy.aws.errors import translate
from eic_proxy.aws.seams import AwsApi
from eic_proxy.errors import NoEndpoint, UsageError
from eic_proxy.model import Endpoint, Target

log = logging.getLogger(__name__)

# An endpoint keeps serving with its old configuration while it is being modified (§2.2).
USABLE_STATES = ("create-complete", "update-in-progress", "update-complete", "update-failed")


def family_ok(endpoint: Endpoint, target: Target) -> bool:
    """Whether the endpoint's IpAddressType can carry the target's address family (§7)."""
    kind = endpoint.ip_address_type
    if not kind or kind == "dualstack":
        return True
    return (kind == "ipv6") == target.is_ipv6


def choose_endpoint(candidates: Iterable[Endpoint], target: Target) -> Optional[Endpoint]:
    """Pick the endpoint for ``target``: usable state, same VPC, matching family, same subnet first."""
    usable = [e for e in candidates
              if e.state in USABLE_STATES and e.vpc_id == target.vpc_id and family_ok(e, target)]
    for e in usable:
        if e.subnet_id == target.subnet_id:
            return e
    return usable[0] if usable else None


def has_ipv4_route() -> bool:
    """Whether this machine can send IPv4 anywhere: a UDP "connect" to a documentation address sends
    nothing, but fails at once without a route (an IPv6-only network)."""
    import socket

    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect(("192.0.2.1", 443))
        return True
    except OSError:
        return False
    finally:
        s.close()


def dns_name_for(endpoint: Endpoint, use_fips: bool, family: str = "auto",
                 ipv4_route: Any = has_ipv4_route) -> str:
    """The endpoint name to connect to (and sign for): IPv4 ``DnsName``, or the dual-stack name when
    asked for (``family`` 6) or when the client has no IPv4 route (``auto``); FIPS variants with FIPS."""
    dual = endpoint.dualstack_fips_dns_name if use_fips else endpoint.dualstack_dns_name
    if endpoint.ip_address_type not in ("dualstack", "ipv6"):
        dual = None  # an IPv4 endpoint answers on IPv4 whatever its names say
    if family == "6":
        if not dual:
            raise NoEndpoint(f"endpoint {endpoint.endpoint_id} has no dual-stack DNS name (its IpAddressType is "
                             f"{endpoint.ip_address_type or 'ipv4'})",
                             hint="make it dual-stack (`aws ec2 modify-instance-connect-endpoint --ip-address-type "
                                  "dualstack`), or connect over IPv4 (--ip-family 4)")
        return dual
    if family == "auto" and dual and not ipv4_route():
        log.debug("no IPv4 route here: using the dual-stack name %s", dual)
        return dual
    if use_fips:
        if not endpoint.fips_dns_name:
            raise UsageError(f"endpoint {endpoint.endpoint_id} has no FIPS DNS name",
                             hint="unset AWS_USE_FIPS_ENDPOINT / use_fips_endpoint, or use a FIPS region")
        return endpoint.fips_dns_name
    if not endpoint.dns_name:
        raise NoEndpoint(f"endpoint {endpoint.endpoint_id} has no DNS name yet (state {endpoint.state})")
    return endpoint.dns_name


def describe_endpoints(aws: AwsApi, ec2: Any, *, vpc_id: Optional[str] = None, endpoint_id: Optional[str] = None,
                       states: Optional[Iterable[str]] = USABLE_STATES) -> list[Endpoint]:
    """The endpoints of a VPC (or the one with ``endpoint_id``) in ``states`` (None: any), in API order."""
    filters = [] if states is None else [{"Name": "state", "Values": list(states)}]
    kwargs: dict[str, Any] = {}
    if endpoint_id:
        kwargs["InstanceConnectEndpointIds"] = [endpoint_id]
    if vpc_id:
        filters.append({"Name": "vpc-id", "Values": [vpc_id]})
    out: list[Endpoint] = []
    try:
        while True:
            resp = ec2.describe_instance_connect_endpoints(Filters=filters, **kwargs)
            out.extend(Endpoint.from_api(i) for i in resp.get("InstanceConnectEndpoints", []))
            token = resp.get("NextToken")
            if not token:
                return out
            kwargs["NextToken"] = token
    except api_errors() as exc:
        raise translate(exc, "listing EC2 Instance Connect Endpoints", aws.profile) from exc


def find_endpoint(aws: AwsApi, ec2: Any, target: Target, endpoint_id: Optional[str] = None) -> Endpoint:
    """Discover the endpoint for ``target``, or fail saying which VPC lacks one and how to create it."""
    found = describe_endpoints(aws, ec2, vpc_id=None if endpoint_id else target.vpc_id, endpoint_id=endpoint_id)
    if endpoint_id:
        if not found:
            raise NoEndpoint(f"endpoint {endpoint_id} does not exist or is not available in {aws.region}",
                             hint="check --eice-id; usable states are " + ", ".join(USABLE_STATES))
        return found[0]
    chosen = choose_endpoint(found, target)
    if chosen is None:
        family = " for IPv6 targets" if target.is_ipv6 and found else ""
        raise NoEndpoint(
            f"no usable EC2 Instance Connect Endpoint{family} in {target.vpc_id} ({aws.region})",
            hint=f"create one: `aws ec2 create-instance-connect-endpoint --subnet-id {target.subnet_id}"
                 f" [--preserve-client-ip]`" + (" --ip-address-type dualstack" if family else ""),
        )
    log.debug("= endpoint %s in %s", chosen.endpoint_id, chosen.subnet_id)
    return chosen

"""Endpoint choice and DNS name selection (docs/protocol.md §2.2, §7)."""
import pytest

from eic_proxy.control.endpoint import USABLE_STATES, choose_endpoint, dns_name_for
from eic_proxy.errors import UsageError
from eic_proxy.model import Endpoint, Target

T4 = Target("i-0123456789abcdef0", "10.0.1.5", "vpc-1", "subnet-b")
T6 = Target("i-0123456789abcdef0", "2600:1f10::5", "vpc-1", "subnet-b")


def E(short):
    """A well-formed endpoint ID from a short test name ("e1" → "eice-0000000000000000e1")."""
    return "eice-" + short.rjust(17, "0")


def ep(eid, subnet="subnet-a", state="create-complete", vpc="vpc-1", kind="ipv4", fips="fips.example"):
    return Endpoint(E(eid), f"{eid}.example", vpc, subnet, state, fips, kind)


def test_prefers_same_subnet_else_first_in_vpc():
    assert choose_endpoint([ep("e1"), ep("e2", "subnet-b")], T4).endpoint_id == E("e2")
    assert choose_endpoint([ep("e1"), ep("e3", "subnet-c")], T4).endpoint_id == E("e1")


@pytest.mark.parametrize("state", USABLE_STATES)
def test_all_four_usable_states(state):
    assert choose_endpoint([ep("e1", state=state)], T4) is not None


@pytest.mark.parametrize("state", ["create-in-progress", "create-failed", "delete-in-progress", "delete-complete"])
def test_unusable_states_are_skipped(state):
    assert choose_endpoint([ep("e1", state=state)], T4) is None


def test_other_vpc_never_chosen():
    assert choose_endpoint([ep("e1", vpc="vpc-2")], T4) is None


def test_address_family_must_match():
    assert choose_endpoint([ep("e1", kind="ipv4")], T6) is None
    assert choose_endpoint([ep("e1", kind="dualstack")], T6) is not None
    assert choose_endpoint([ep("e1", kind="ipv6")], T6) is not None
    assert choose_endpoint([ep("e1", kind="ipv6")], T4) is None


def test_fips_name():
    assert dns_name_for(ep("e1"), False) == "e1.example"
    assert dns_name_for(ep("e1"), True) == "fips.example"
    with pytest.raises(UsageError):
        dns_name_for(ep("e1", fips=None), True)


def _dual(kind="dualstack"):
    return Endpoint(E("e9"), "e9.example", "vpc-1", "subnet-a", "create-complete", "fips.example", kind,
                    dualstack_dns_name="e9.dualstack.example", dualstack_fips_dns_name="e9.fips.dualstack.example")


def test_ip_family_chooses_the_name():
    from eic_proxy.errors import NoEndpoint

    ep_ = _dual()
    assert dns_name_for(ep_, False, "4", ipv4_route=lambda: False) == "e9.example"
    assert dns_name_for(ep_, False, "6") == "e9.dualstack.example"
    assert dns_name_for(ep_, True, "6") == "e9.fips.dualstack.example"
    assert dns_name_for(ep_, False, "auto", ipv4_route=lambda: True) == "e9.example"
    assert dns_name_for(ep_, False, "auto", ipv4_route=lambda: False) == "e9.dualstack.example"  # IPv6-only client
    assert dns_name_for(_dual("ipv4"), False, "auto", ipv4_route=lambda: False) == "e9.example"
    with pytest.raises(NoEndpoint):
        dns_name_for(_dual("ipv4"), False, "6")


def test_dual_stack_names_come_from_the_api():
    item = {"InstanceConnectEndpointId": E("e8"), "DnsName": "a.example", "IpAddressType": "dualstack",
            "PublicDnsNames": {"Ipv4": {"DnsName": "a.example"},
                               "Dualstack": {"DnsName": "a.dualstack.example", "FipsDnsName": "a.fips.dualstack.example"}}}
    got = Endpoint.from_api(item)
    assert (got.dualstack_dns_name, got.dualstack_fips_dns_name) == ("a.dualstack.example", "a.fips.dualstack.example")

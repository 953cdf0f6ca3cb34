"""DescribeInstances records → Target, and the checks on it."""
import datetime

import pytest

from eic_proxy.control.resolve import check_usable, is_instance_id, target_from_instance
from eic_proxy.errors import HostNotFound, InstanceStateError
from eic_proxy.model import Endpoint, InvalidRecord, Target


def inst(**kw):
    base = {"InstanceId": "i-0123456789abcdef0", "PrivateIpAddress": "10.0.1.5", "VpcId": "vpc-1",
            "SubnetId": "subnet-1", "State": {"Name": "running"}, "Tags": [{"Key": "Name", "Value": "web-1"}],
            "LaunchTime": datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)}
    base.update(kw)
    return base


def test_private_ipv4_first():
    t = target_from_instance(inst(Ipv6Address="2600::1"))
    assert t.ip == "10.0.1.5" and t.name == "web-1" and t.ipv6 == "2600::1"


def test_ipv6_fallback_from_field_or_eni():
    assert target_from_instance(inst(PrivateIpAddress=None, Ipv6Address="2600::1")).ip == "2600::1"
    eni = [{"Ipv6Addresses": [{"Ipv6Address": "2600::2"}]}]
    assert target_from_instance(inst(PrivateIpAddress=None, NetworkInterfaces=eni)).ip == "2600::2"


def test_not_running_and_no_address_are_errors():
    with pytest.raises(InstanceStateError, match="stopped"):
        check_usable(target_from_instance(inst(State={"Name": "stopped"})))
    with pytest.raises(HostNotFound, match="no private IPv4 or IPv6"):
        check_usable(target_from_instance(inst(PrivateIpAddress=None)))


def test_instance_id_shape():
    assert is_instance_id("i-0123456789abcdef0") and is_instance_id("i-01234567")
    assert not is_instance_id("web-1") and not is_instance_id("i-xyz")



@pytest.mark.parametrize("field, value", [
    ("instance_id", "../../etc/passwd"), ("instance_id", "i-0123/../x"), ("instance_id", "i-XYZ01234"),
    ("ip", "10.0.0.1&remotePort=3389"), ("ip", "evil.example.com"), ("vpc_id", "vpc-../x"),
    ("subnet_id", "subnet-1 2"), ("ipv6", "::1/../"),
])
def test_targets_refuse_identifiers_that_could_become_paths_or_urls(field, value):
    good = dict(instance_id="i-0123456789abcdef0", ip="10.0.0.1", vpc_id="vpc-01234567", subnet_id="subnet-01234567")
    Target(**good)
    with pytest.raises(InvalidRecord):
        Target(**dict(good, **{field: value}))


@pytest.mark.parametrize("field, value", [
    ("endpoint_id", "eice-../../slots"), ("endpoint_id", "eice-0123456789abcdef0/x"),
    ("dns_name", "evil.com/openTunnel?x="), ("dns_name", "a..b"), ("fips_dns_name", "x y"),
])
def test_endpoints_refuse_identifiers_that_could_become_paths_or_urls(field, value):
    good = dict(endpoint_id="eice-0123456789abcdef0", dns_name="eice-0123456789abcdef0.abc.ec2-instance-connect-"
                "endpoint.us-east-1.amazonaws.com", vpc_id="vpc-01234567", subnet_id="subnet-01234567",
                state="create-complete")
    Endpoint(**good)
    Endpoint(**dict(good, dns_name="127.0.0.5"))
    with pytest.raises(InvalidRecord):
        Endpoint(**dict(good, **{field: value}))


def test_a_crafted_cache_entry_is_a_miss(isolated_env):
    from eic_proxy.control.locate import Locator
    from eic_proxy.store.cache import Cache

    cache = Cache()
    cache.put("t", {"instance_id": "../../../../tmp/evil", "ip": "10.0.0.1", "vpc_id": "", "subnet_id": ""})
    cache.put("e", {"endpoint_id": "eice-../../x", "dns_name": "a", "vpc_id": "", "subnet_id": "", "state": "x"})
    cache.put("w", {"unknown_field_from_another_version": 1})
    loc = Locator.__new__(Locator)
    loc.cache = cache
    assert loc._cached_target("t") == (None, None)
    assert loc._cached_target("w") == (None, None)
    assert loc._cached_endpoint("e") == (None, None)
    assert loc._cached_endpoint("w") == (None, None)

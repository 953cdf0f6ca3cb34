"""DescribeInstances records → Target, and the checks on it."""
import datetime

import pytest

from eic_proxy.errors import HostNotFound, InstanceStateError
from eic_proxy.resolve import check_usable, is_instance_id, target_from_instance


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

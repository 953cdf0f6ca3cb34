"""doctor's pure rules, with data only."""
from __future__ import annotations

import pytest

from eic_proxy.checks.rules import iam_principal, rule_allows, simulation_asks


@pytest.mark.parametrize("perm, port, ip, groups, covers, ok", [
    ({"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "10.0.0.0/16"}]}, 22, "10.0.1.5",
     set(), None, True),
    ({"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "10.0.0.0/16"}]}, 3389, "10.0.1.5",
     set(), None, False),
    ({"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": "sg-1"}]}, 22, None, {"sg-1"}, None, True),
    ({"IpProtocol": "udp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}, 22, "1.2.3.4",
     set(), None, False),
    ({"IpProtocol": "tcp", "FromPort": 0, "ToPort": 65535, "IpRanges": [{"CidrIp": "10.0.0.0/8"}]}, 22, None,
     set(), "10.0.1.0/24", True),
    ({"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "Ipv6Ranges": [{"CidrIpv6": "::/0"}]}, 22, "10.0.0.1",
     set(), None, False),
])
def test_rule_allows(perm, port, ip, groups, covers, ok):
    assert rule_allows(perm, port, ip, groups, covers) is ok


def test_iam_principal():
    assert iam_principal("arn:aws:sts::1:assumed-role/Dev/me") == "arn:aws:iam::1:role/Dev"
    assert iam_principal("arn:aws:iam::1:user/me") == "arn:aws:iam::1:user/me"
    assert iam_principal("arn:aws:sts::1:federated-user/x") is None


def test_simulation_asks_follow_the_connection():
    asks = simulation_asks("aws", "eu-west-1", "1", "eice-0123456789abcdef0", "i-0123456789abcdef0", "10.0.0.5", 22,
                           "ec2-user", 600)
    actions = [a for a, _, _ in asks]
    assert actions[0] == "ec2-instance-connect:SendSSHPublicKey" and "ec2-instance-connect:OpenTunnel" in actions
    tunnel = next(ctx for a, _, ctx in asks if a.endswith("OpenTunnel"))
    assert {c["ContextKeyName"] for c in tunnel} == {"ec2-instance-connect:remotePort",
                                                      "ec2-instance-connect:privateIpAddress",
                                                      "ec2-instance-connect:maxTunnelDuration"}
    assert "SendSSHPublicKey" not in str(simulation_asks("aws", "r", "1", "eice-0123456789abcdef0",
                                                         "i-0123456789abcdef0", "10.0.0.5", 22, None, None))


@pytest.mark.parametrize("selectors, records", [
    ({}, True),
    ({"EventSelectors": [{"ReadWriteType": "All", "IncludeManagementEvents": True}]}, True),
    ({"EventSelectors": [{"ReadWriteType": "ReadOnly", "IncludeManagementEvents": True}]}, False),
    ({"EventSelectors": [{"ReadWriteType": "All", "IncludeManagementEvents": False}]}, False),
    ({"AdvancedEventSelectors": [{"FieldSelectors": [{"Field": "eventCategory", "Equals": ["Management"]}]}]}, True),
    ({"AdvancedEventSelectors": [{"FieldSelectors": [{"Field": "eventCategory", "Equals": ["Data"]}]}]}, False),
])
def test_records_management_events(selectors, records):
    from eic_proxy.checks.rules import records_management_events

    assert records_management_events(selectors) is records

"""examples/terraform/audit.tf parses as HCL, and its metric filters catch what they say on real-shaped
CloudTrail records (and nothing else), with the test bed's evaluator of CloudWatch filter patterns."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from eic_proxy.aws.cloudtrail import LOG_FILTER
from tests.testbed.logs_pattern import compile_pattern, matches
from tests.unit.test_policy import parse_hcl

TF = Path(__file__).resolve().parents[2] / "examples" / "terraform" / "audit.tf"


def record(name="SendSSHPublicKey", source="ec2-instance-connect.amazonaws.com", user="ec2-user", error=None):
    doc = {"eventVersion": "1.08", "eventTime": "2026-12-01T10:00:00Z", "eventSource": source, "eventName": name,
           "awsRegion": "eu-west-1", "sourceIPAddress": "203.0.113.7",
           "userIdentity": {"type": "AssumedRole", "arn": "arn:aws:sts::111122223333:assumed-role/Dev/alice"},
           "requestParameters": ({"instanceId": "i-0123456789abcdef0", "instanceOSUser": user,
                                  "sSHPublicKey": "ssh-ed25519 AAAA"} if name == "SendSSHPublicKey" else
                                 {"instanceConnectEndpointId": "eice-0123456789abcdef0", "remotePort": "22",
                                  "privateIpAddress": "10.0.1.5"}),
           "requestID": "b1f4c1d6-0000-4000-8000-000000000001", "eventType": "AwsApiCall",
           "managementEvent": True, "eventCategory": "Management"}
    if error:
        doc["errorCode"], doc["errorMessage"] = error, "User is not authorized to perform this operation"
    return json.dumps(doc)


@pytest.fixture(scope="module")
def patterns():
    doc = parse_hcl(TF.read_text())
    local = {k: v for block in doc["locals"] for k, v in block.items()}
    filters = {name: body for block in doc["resource"] for kind, items in block.items()
               if kind == "aws_cloudwatch_log_metric_filter" for name, body in items.items()}
    assert set(filters) == {"denied", "unexpected_os_user"}
    assert {f["pattern"] for f in filters.values()} == {"${local.denied_pattern}", "${local.unexpected_os_user_pattern}"}
    return {"denied": local["denied_pattern"], "unexpected_os_user": local["unexpected_os_user_pattern"]}


def test_the_example_has_trail_group_role_filters_alarms_and_topic():
    doc = parse_hcl(TF.read_text())
    kinds = {kind for block in doc["resource"] for kind in block}
    assert {"aws_cloudtrail", "aws_cloudwatch_log_group", "aws_iam_role", "aws_cloudwatch_log_metric_filter",
            "aws_cloudwatch_metric_alarm", "aws_sns_topic"} <= kinds
    trail = next(items["eic"] for block in doc["resource"] for kind, items in block.items() if kind == "aws_cloudtrail")
    selector = trail["event_selector"][0] if isinstance(trail["event_selector"], list) else trail["event_selector"]
    assert selector["include_management_events"] is True and "cloud_watch_logs_group_arn" in trail


@pytest.mark.parametrize("rec, denied, odd_user", [
    (record(), False, False),
    (record(user="ubuntu"), False, False),
    (record(user="root"), False, True),
    (record(error="AccessDenied"), True, False),
    (record(name="OpenTunnel"), False, False),
    (record(name="OpenTunnel", error="AccessDeniedException"), True, False),
    (record(name="RunInstances", source="ec2.amazonaws.com", error="UnauthorizedOperation"), False, False),
    (record(source="ec2.amazonaws.com", user="root"), False, False),
])
def test_metric_filters_catch_what_they_say(patterns, rec, denied, odd_user):
    assert matches(patterns["denied"], rec) is denied
    assert matches(patterns["unexpected_os_user"], rec) is odd_user


def test_the_audit_commands_server_side_filter():
    assert matches(LOG_FILTER, record()) and matches(LOG_FILTER, record(name="OpenTunnel"))
    assert not matches(LOG_FILTER, record(name="RunInstances", source="ec2.amazonaws.com"))
    assert not matches(LOG_FILTER, record(name="SendSerialConsoleSSHPublicKey"))


def test_the_evaluator_reads_the_grammar_it_claims():
    p = compile_pattern('{ ($.a = "x*") && (($.b = 1) || ($.c.d != "y")) }')
    assert p({"a": "xyz", "b": 1}) and p({"a": "x", "c": {"d": "z"}})
    assert not p({"a": "y", "b": 1}) and not p({"a": "x", "c": {"d": "y"}}) and not p({"a": "x"})
    with pytest.raises(ValueError):
        compile_pattern("$.a = 1")

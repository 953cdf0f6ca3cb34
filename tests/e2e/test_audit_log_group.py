"""`eic-proxy audit --log-group`: a trail's EC2 Instance Connect records from CloudWatch Logs, for the team."""
from __future__ import annotations

import json
import time
import uuid

import pytest

from eic_proxy.errors import ExitCode
from tests.conftest import assert_one_line_error

pytestmark = pytest.mark.e2e

ALICE = "arn:aws:sts::123456789012:assumed-role/Dev/alice"
BOB = "arn:aws:sts::123456789012:assumed-role/Ops/bob"


def _record(name, who=ALICE, source="ec2-instance-connect.amazonaws.com", error=None, message=None,
            request_id=None, **params):
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())  # as CloudTrail stamps the call it records
    doc = {"eventVersion": "1.08", "eventTime": now, "eventSource": source, "eventName": name,
           "awsRegion": "us-east-1", "sourceIPAddress": "198.51.100.7", "userIdentity": {"arn": who},
           "requestParameters": params, "requestID": request_id or str(uuid.uuid4()), "eventType": "AwsApiCall",
           "managementEvent": True}
    if error:
        doc.update(errorCode=error, errorMessage=message or "denied")
    return doc


@pytest.fixture
def group(client, world):
    """A log group the trail delivers to, with this test's records: pushes, tunnels, a denial, other services."""
    name = f"/aws/cloudtrail/test-{uuid.uuid4().hex[:8]}"
    client.bed.client("logs").create_log_group(logGroupName=name)
    web = world.web
    assert client.ssh("web-1", "true").returncode == 0  # a real push and tunnel of ours, in the local log
    push = client.bed.aws.pushes[-1]
    endpoint = next(iter(client.bed.aws.endpoints))
    records = [
        _record("SendSSHPublicKey", request_id=push["request_id"], instanceId=web.instance_id,
                instanceOSUser="ec2-user"),
        _record("OpenTunnel", instanceConnectEndpointId=endpoint, remotePort="22", privateIpAddress=web.ip),
        _record("SendSSHPublicKey", who=BOB, error="AccessDenied", instanceId=web.instance_id, instanceOSUser="root",
                message="User bob is not authorized\x1b[31m to perform SendSSHPublicKey\nfake line"),
        _record("RunInstances", source="ec2.amazonaws.com", error="UnauthorizedOperation"),
        _record("GetObject", source="s3.amazonaws.com"),
    ] + [_record("OpenTunnel", who=BOB, instanceConnectEndpointId=endpoint, remotePort="22",
                 privateIpAddress="127.9.9.9") for _ in range(6)]
    client.bed.put_trail_records(name, records)
    client.bed.aws.logs_page_size = 3  # several pages for a handful of records
    return name


def test_log_group_records_are_read_paged_filtered_and_joined(client, world, group):
    before = client.bed.aws.count("FilterLogEvents")
    r = client.proxy("audit", "--log-group", group, "--json")
    assert r.returncode == 0, r.stderr
    events = json.loads(r.stdout)
    assert isinstance(events, list) and len(events) == 9  # the two other services' records are not there
    assert {e["name"] for e in events} == {"SendSSHPublicKey", "OpenTunnel"}
    calls = [c for c in client.bed.aws.calls[before:] if c.action == "FilterLogEvents"]
    assert len(calls) >= 3  # paged
    assert "ec2-instance-connect.amazonaws.com" in calls[0].params["filterPattern"]  # filtered server-side
    ours = next(e for e in events if e["name"] == "SendSSHPublicKey" and not e["denied"])
    assert ours.get("matched") and ours["principal"] == ALICE and ours["source_ip"] == "198.51.100.7"
    tunnel = next(e for e in events if e["name"] == "OpenTunnel" and e["private_ip"] == world.web.ip)
    assert tunnel.get("matched") and tunnel["port"] == 22
    denied = next(e for e in events if e["denied"])
    assert denied["error"] == "AccessDenied" and denied["os_user"] == "root" and denied["principal"] == BOB
    assert "\x1b" not in denied["error_message"] and "\n" not in denied["error_message"]
    assert not any(e.get("matched") for e in events if e["principal"] == BOB)  # others' calls: no local entry


def test_principal_and_host_narrow_the_records(client, world, group):
    before = client.bed.aws.count("FilterLogEvents")
    r = client.proxy("audit", "--log-group", group, "--principal", BOB, "--json")
    events = json.loads(r.stdout)
    assert len(events) == 7 and all(e["principal"] == BOB for e in events)
    call = next(c for c in client.bed.aws.calls[before:] if c.action == "FilterLogEvents")
    assert BOB in call.params["filterPattern"]
    r = client.proxy("audit", "--log-group", group, "--host", "web-1", "--json")
    events = json.loads(r.stdout)
    assert len(events) == 3 and all(e.get("instance_id") == world.web.instance_id
                                    or e.get("private_ip") == world.web.ip for e in events)


def test_human_output_names_denials(client, world, group):
    r = client.proxy("audit", "--log-group", group)
    assert r.returncode == 0, r.stderr
    text = r.stdout.decode()
    assert "9 EC2 Instance Connect events" in text and "DENIED AccessDenied" in text and "\x1b" not in text
    assert "= local" in text and "from 198.51.100.7" in text


def test_unknown_log_group_is_one_line(client, world):
    r = client.proxy("audit", "--log-group", "/no/such/group")
    assert_one_line_error(r, ExitCode.AWS_API, "/no/such/group")

"""`eic-proxy policy`: exact statements for three scenarios, the IAM grammar, the same meaning in
Terraform (parsed with an HCL parser), and what the policy allows and denies when evaluated."""
from __future__ import annotations

import json
import subprocess
import sys

import hcl2
import pytest

from eic_proxy.commands.policy import PolicySpec, build, to_terraform
from eic_proxy.errors import ExitCode, UsageError
from tests.iam_grammar import check_policy
from tests.testbed.iam_eval import evaluate


def parse_hcl(text: str):
    """hcl2.loads, with the quotes some python-hcl2 versions keep around labels and strings removed."""
    def clean(v):
        if isinstance(v, dict):
            return {clean(k): clean(x) for k, x in v.items() if k != "__is_block__"}
        if isinstance(v, list):
            return [clean(x) for x in v]
        if isinstance(v, str) and len(v) >= 2 and v[0] == v[-1] == '"':
            return json.loads(v)
        return v
    return clean(hcl2.loads(text))


DESCRIBE = {"Sid": "EicProxyDescribe", "Effect": "Allow",
            "Action": ["ec2:DescribeInstances", "ec2:DescribeInstanceConnectEndpoints"], "Resource": "*"}

SCENARIOS = {
    "one instance, one user": (
        PolicySpec(instances=("i-0123456789abcdef0",), os_users=("ec2-user",), region="eu-west-1",
                   account="111122223333"),
        [DESCRIBE,
         {"Sid": "EicProxySendSSHPublicKey", "Effect": "Allow", "Action": "ec2-instance-connect:SendSSHPublicKey",
          "Resource": "arn:aws:ec2:eu-west-1:111122223333:instance/i-0123456789abcdef0",
          "Condition": {"StringEquals": {"ec2:osuser": "ec2-user"}}},
         {"Sid": "EicProxyOpenTunnel", "Effect": "Allow", "Action": "ec2-instance-connect:OpenTunnel",
          "Resource": "arn:aws:ec2:eu-west-1:111122223333:instance-connect-endpoint/*",
          "Condition": {"NumericEquals": {"ec2-instance-connect:remotePort": "22"}}},
         {"Sid": "EicProxyHostKeys", "Effect": "Allow", "Action": "ec2:GetConsoleOutput",
          "Resource": "arn:aws:ec2:eu-west-1:111122223333:instance/i-0123456789abcdef0"}]),
    "tagged fleet, RDP too, pinned endpoint and network": (
        PolicySpec(tags=("Team=web",), os_users=("ec2-user", "ubuntu"), endpoints=("eice-0123456789abcdef0",),
                   ports=(22, 3389), private_ips=("10.0.0.0/16",), max_tunnel_duration=900,
                   source_ips=("203.0.113.0/24",), region="us-east-1", account="111122223333"),
        [dict(DESCRIBE, Condition={"IpAddress": {"aws:SourceIp": ["203.0.113.0/24"]}}),
         {"Sid": "EicProxySendSSHPublicKey", "Effect": "Allow", "Action": "ec2-instance-connect:SendSSHPublicKey",
          "Resource": "arn:aws:ec2:us-east-1:111122223333:instance/*",
          "Condition": {"StringEquals": {"ec2:ResourceTag/Team": "web", "ec2:osuser": ["ec2-user", "ubuntu"]},
                        "IpAddress": {"aws:SourceIp": ["203.0.113.0/24"]}}},
         {"Sid": "EicProxyOpenTunnel", "Effect": "Allow", "Action": "ec2-instance-connect:OpenTunnel",
          "Resource": "arn:aws:ec2:us-east-1:111122223333:instance-connect-endpoint/eice-0123456789abcdef0",
          "Condition": {"NumericEquals": {"ec2-instance-connect:remotePort": ["22", "3389"]},
                        "IpAddress": {"ec2-instance-connect:privateIpAddress": "10.0.0.0/16",
                                      "aws:SourceIp": ["203.0.113.0/24"]},
                        "NumericLessThanEquals": {"ec2-instance-connect:maxTunnelDuration": "900"}}},
         {"Sid": "EicProxyHostKeys", "Effect": "Allow", "Action": "ec2:GetConsoleOutput",
          "Resource": "arn:aws:ec2:us-east-1:111122223333:instance/*",
          "Condition": {"StringEquals": {"ec2:ResourceTag/Team": "web"},
                        "IpAddress": {"aws:SourceIp": ["203.0.113.0/24"]}}}]),
    "ARNs in China, with --start": (
        PolicySpec(instances=("arn:aws-cn:ec2:cn-north-1:111122223333:instance/i-0aaaaaaaaaaaaaaaa",),
                   endpoints=("arn:aws-cn:ec2:cn-north-1:111122223333:instance-connect-endpoint/eice-0bbbbbbbbbbbbbbbb",),
                   os_users=("admin",), region="cn-north-1", allow_start=True),
        [DESCRIBE,
         {"Sid": "EicProxySendSSHPublicKey", "Effect": "Allow", "Action": "ec2-instance-connect:SendSSHPublicKey",
          "Resource": "arn:aws-cn:ec2:cn-north-1:111122223333:instance/i-0aaaaaaaaaaaaaaaa",
          "Condition": {"StringEquals": {"ec2:osuser": "admin"}}},
         {"Sid": "EicProxyOpenTunnel", "Effect": "Allow", "Action": "ec2-instance-connect:OpenTunnel",
          "Resource": "arn:aws-cn:ec2:cn-north-1:111122223333:instance-connect-endpoint/eice-0bbbbbbbbbbbbbbbb",
          "Condition": {"NumericEquals": {"ec2-instance-connect:remotePort": "22"}}},
         {"Sid": "EicProxyHostKeys", "Effect": "Allow", "Action": "ec2:GetConsoleOutput",
          "Resource": "arn:aws-cn:ec2:cn-north-1:111122223333:instance/i-0aaaaaaaaaaaaaaaa"},
         {"Sid": "EicProxyStartInstances", "Effect": "Allow", "Action": "ec2:StartInstances",
          "Resource": "arn:aws-cn:ec2:cn-north-1:111122223333:instance/i-0aaaaaaaaaaaaaaaa"}]),
}


@pytest.mark.parametrize("name", SCENARIOS)
def test_scenario_statements(name):
    spec, expected = SCENARIOS[name]
    doc = build(spec)
    check_policy(doc)
    assert doc == {"Version": "2012-10-17", "Statement": expected}


@pytest.mark.parametrize("name", SCENARIOS)
def test_terraform_is_hcl_with_the_same_statements(name):
    spec, _ = SCENARIOS[name]
    doc = build(spec)
    parsed = parse_hcl(to_terraform(doc, "eic_proxy"))
    blocks = parsed["data"][0]["aws_iam_policy_document"]["eic_proxy"]["statement"]
    assert len(blocks) == len(doc["Statement"])

    def unq(v):
        return v

    def as_list(v):
        return v if isinstance(v, list) else [v]

    for block, st in zip(blocks, doc["Statement"]):
        assert unq(block["sid"]) == st["Sid"] and unq(block["effect"]) == "Allow"
        assert [unq(a) for a in block["actions"]] == as_list(st["Action"])
        assert [unq(r) for r in block["resources"]] == as_list(st["Resource"])
        conds = {(unq(c["test"]), unq(c["variable"])): [unq(v) for v in c["values"]] for c in block.get("condition", [])}
        want = {(op, k): as_list(v) for op, pairs in st.get("Condition", {}).items() for k, v in pairs.items()}
        assert conds == want
    policy = parsed["resource"][0]["aws_iam_policy"]["eic_proxy"]
    assert "data.aws_iam_policy_document.eic_proxy.json" in str(policy["policy"])


def test_evaluated_policy_allows_exactly_what_was_asked():
    doc = build(SCENARIOS["tagged fleet, RDP too, pinned endpoint and network"][0])
    inst = "arn:aws:ec2:us-east-1:111122223333:instance/i-0123456789abcdef0"
    eice = "arn:aws:ec2:us-east-1:111122223333:instance-connect-endpoint/eice-0123456789abcdef0"
    src = {"aws:SourceIp": ["203.0.113.9"]}
    push = "ec2-instance-connect:SendSSHPublicKey"
    tunnel = "ec2-instance-connect:OpenTunnel"
    ok_push = dict(src, **{"ec2:osuser": ["ubuntu"], "ec2:ResourceTag/Team": ["web"]})
    assert evaluate([doc], push, inst, ok_push) == "allowed"
    assert evaluate([doc], push, inst, dict(ok_push, **{"ec2:osuser": ["root"]})) == "implicitDeny"
    assert evaluate([doc], push, inst, dict(ok_push, **{"ec2:ResourceTag/Team": ["db"]})) == "implicitDeny"
    assert evaluate([doc], push, inst, dict(ok_push, **{"aws:SourceIp": ["198.51.100.1"]})) == "implicitDeny"
    ok_tunnel = dict(src, **{"ec2-instance-connect:remotePort": ["3389"],
                             "ec2-instance-connect:privateIpAddress": ["10.0.3.4"],
                             "ec2-instance-connect:maxTunnelDuration": ["600"]})
    assert evaluate([doc], tunnel, eice, ok_tunnel) == "allowed"
    for bad in ({"ec2-instance-connect:remotePort": ["5432"]},
                {"ec2-instance-connect:privateIpAddress": ["10.1.0.1"]},
                {"ec2-instance-connect:maxTunnelDuration": ["3600"]}):
        assert evaluate([doc], tunnel, eice, dict(ok_tunnel, **bad)) == "implicitDeny", bad
    no_duration = {k: v for k, v in ok_tunnel.items() if k != "ec2-instance-connect:maxTunnelDuration"}
    assert evaluate([doc], tunnel, eice, no_duration) == "implicitDeny"  # why connect must send it
    other = eice.replace("eice-0123456789abcdef0", "eice-0fffffffffffffff0")
    assert evaluate([doc], tunnel, other, ok_tunnel) == "implicitDeny"
    assert evaluate([doc], "ec2:DescribeInstances", "*", src) == "allowed"
    assert evaluate([doc], "ec2:TerminateInstances", "*", src) == "implicitDeny"


@pytest.mark.parametrize("spec", [
    PolicySpec(instances=("web-1",)), PolicySpec(os_users=("bad user",)), PolicySpec(ports=(0,)),
    PolicySpec(private_ips=("10.0.0.300",)), PolicySpec(tags=("novalue",)), PolicySpec(max_tunnel_duration=7200),
    PolicySpec(account="12345"), PolicySpec(endpoints=("arn:aws:ec2:us-east-1:111122223333:instance/i-01234567",)),
])
def test_bad_input_is_a_usage_error(spec):
    with pytest.raises(UsageError):
        build(spec)


def test_cli_prints_json_and_notes_and_fails_in_one_line():
    run = [sys.executable, "-m", "eic_proxy", "policy"]
    p = subprocess.run(run + ["--instance", "i-0123456789abcdef0", "--os-user", "ec2-user",
                              "--max-tunnel-duration", "600"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    check_policy(json.loads(p.stdout))
    assert "--max-tunnel-duration 600" in p.stderr  # the note on what connect must then send
    p = subprocess.run(run + ["--instance", "web-1"], capture_output=True, text=True)
    assert p.returncode == ExitCode.CONFIG
    assert p.stderr.count("\n") == 1 and "not an instance ID" in p.stderr and "Traceback" not in p.stderr
    p = subprocess.run(run + ["--format", "terraform", "--os-user", "ec2-user"], capture_output=True, text=True)
    assert p.returncode == 0 and parse_hcl(p.stdout)["data"]


def test_audit_policy_is_read_only_and_names_the_log_group():
    from eic_proxy.commands.policy import build_audit

    doc = build_audit("eu-west-1", "111122223333", "/aws/cloudtrail/org")
    check_policy(doc)
    actions = [a for s in doc["Statement"] for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])]
    assert "logs:FilterLogEvents" in actions and "cloudtrail:LookupEvents" in actions
    assert all(a.split(":")[1].startswith(("Filter", "Lookup", "Describe", "Get")) for a in actions)
    group = next(s for s in doc["Statement"] if s["Action"] == "logs:FilterLogEvents")
    assert group["Resource"] == "arn:aws:logs:eu-west-1:111122223333:log-group:/aws/cloudtrail/org:*"
    assert evaluate([doc], "logs:FilterLogEvents", group["Resource"], {}) == "allowed"

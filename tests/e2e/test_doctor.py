"""`eic-proxy doctor`: healthy → all ✔, exit 0; each known failure found and its fix named."""
from __future__ import annotations

import json
from itertools import count

import pytest

from eic_proxy.commands.policy import PolicySpec, build
from eic_proxy.errors import ExitCode

pytestmark = pytest.mark.e2e

_names = count(1)


def doctor(client, host, *args, env=None):
    r = client.proxy("doctor", host, "--json", *args, env=env)
    assert "Traceback" not in r.stderr, r.stderr
    doc = json.loads(r.stdout)
    checks = {c["name"]: c for c in doc["checks"]}
    return r, doc, checks


def _group(bed, vpc, *, egress=True):
    n = next(_names)
    sg = bed.ec2.create_security_group(GroupName=f"doc-{n}", Description="doctor test", VpcId=vpc)["GroupId"]
    if not egress:
        bed.ec2.revoke_security_group_egress(GroupId=sg, IpPermissions=[
            {"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
    return sg


def _allow_in(bed, sg, *, from_group=None, cidr=None, port=22):
    perm = {"IpProtocol": "tcp", "FromPort": port, "ToPort": port}
    if from_group:
        perm["UserIdGroupPairs"] = [{"GroupId": from_group}]
    if cidr:
        perm["IpRanges"] = [{"CidrIp": cidr}]
    bed.ec2.authorize_security_group_ingress(GroupId=sg, IpPermissions=[perm])


def _vpc(bed):
    """A VPC of its own (one endpoint per VPC), in a loopback /16 nobody uses."""
    n = next(_names)
    octet = bed.free_octet()
    vpc = bed.add_vpc(f"doc-vpc-{n}", octet)
    subnet = bed.add_subnet(f"doc-sub-{n}", f"doc-vpc-{n}", 1, second_octet=octet)
    return vpc, subnet


def test_healthy_host_is_all_green(client, world):
    r, doc, checks = doctor(client, "web-1")
    assert r.returncode == 0, r.stdout
    assert doc["ok"] is True
    assert [c["status"] for c in doc["checks"]] == ["pass"] * len(doc["checks"])
    for name in ("credentials", "region/profile", "instance", "endpoint", "endpoint egress", "instance ingress", "iam",
                 "host keys", "audit trail", "push", "handshake", "ssh banner", "ssh login"):
        assert checks[name]["status"] == "pass", checks
    assert checks["ssh banner"]["detail"].startswith("SSH-2.0-")
    text = client.proxy("doctor", "web-1")
    out = text.stdout.decode()
    assert text.returncode == 0 and "✔ ssh login" in out and "all checks passed" in out


def test_no_credentials(client, world):
    env = {k: v for k, v in client.env.items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    r, doc, checks = doctor(client, "web-1", env=env)
    assert r.returncode == ExitCode.CHECKS_FAILED
    assert checks["credentials"]["status"] == "fail" and "aws configure" in checks["credentials"]["fix"]
    assert checks["instance"]["status"] == "skip"


def test_stopped_instance(client, world):
    r, doc, checks = doctor(client, world.stopped.instance_id)
    assert r.returncode == ExitCode.CHECKS_FAILED
    assert checks["instance"]["status"] == "fail" and "stopped" in checks["instance"]["detail"]
    assert "--start" in checks["instance"]["fix"]


def test_no_endpoint_in_the_vpc(client, world):
    r, doc, checks = doctor(client, world.no_endpoint.instance_id)
    assert checks["endpoint"]["status"] == "fail" and "no EC2 Instance Connect Endpoint" in checks["endpoint"]["detail"]
    assert "create-instance-connect-endpoint --subnet-id" in checks["endpoint"]["fix"]
    assert r.returncode == ExitCode.CHECKS_FAILED


def test_endpoint_in_a_bad_state(client, bed, world):
    vpc, subnet = _vpc(bed)
    bed.add_endpoint(subnet, state="create-failed")
    inst = bed.add_instance("doc-badstate", subnet, 10, sshd=False)
    r, doc, checks = doctor(client, inst.instance_id)
    assert checks["endpoint"]["status"] == "fail" and "create-failed" in checks["endpoint"]["detail"]
    assert "create it again" in checks["endpoint"]["fix"]


def test_endpoint_group_without_egress(client, bed, world):
    vpc, subnet = _vpc(bed)
    eice_sg = _group(bed, vpc, egress=False)
    inst_sg = _group(bed, vpc)
    _allow_in(bed, inst_sg, from_group=eice_sg)
    bed.add_endpoint(subnet, security_group_ids=[eice_sg])
    inst = bed.add_instance("doc-noegress", subnet, 10, sshd=False, security_group_ids=[inst_sg])
    r, doc, checks = doctor(client, inst.instance_id, "--no-push")
    assert checks["endpoint egress"]["status"] == "fail", checks
    assert f"authorize-security-group-egress --group-id {eice_sg}" in checks["endpoint egress"]["fix"]
    assert inst_sg in checks["endpoint egress"]["fix"]
    assert checks["instance ingress"]["status"] == "pass"
    assert r.returncode == ExitCode.CHECKS_FAILED


def test_instance_group_without_ingress_from_the_endpoint(client, bed, world):
    vpc, subnet = _vpc(bed)
    eice_sg = _group(bed, vpc)
    inst_sg = _group(bed, vpc)
    _allow_in(bed, inst_sg, from_group=eice_sg, port=3389)  # a rule, but for another port
    bed.add_endpoint(subnet, security_group_ids=[eice_sg])
    inst = bed.add_instance("doc-noingress", subnet, 10, sshd=False, security_group_ids=[inst_sg])
    r, doc, checks = doctor(client, inst.instance_id, "--no-push")
    assert checks["endpoint egress"]["status"] == "pass"
    assert checks["instance ingress"]["status"] == "fail"
    assert (f"authorize-security-group-ingress --group-id {inst_sg} --protocol tcp --port 22 --source-group {eice_sg}"
            in checks["instance ingress"]["fix"])
    _allow_in(bed, inst_sg, cidr=bed.ec2.describe_subnets(SubnetIds=[subnet])["Subnets"][0]["CidrBlock"])
    assert doctor(client, inst.instance_id, "--no-push")[2]["instance ingress"]["status"] == "pass"


def test_preserved_client_ip_needs_ingress_from_the_client(client, bed, world):
    vpc, subnet = _vpc(bed)
    eice_sg = _group(bed, vpc)
    inst_sg = _group(bed, vpc)
    _allow_in(bed, inst_sg, from_group=eice_sg)  # right without PreserveClientIp, wrong with it
    bed.add_endpoint(subnet, security_group_ids=[eice_sg], preserve_client_ip=True)
    inst = bed.add_instance("doc-preserve", subnet, 10, sshd=False, security_group_ids=[inst_sg])
    r, doc, checks = doctor(client, inst.instance_id, "--no-push")
    assert "PreserveClientIp=true" in checks["endpoint"]["detail"]
    ingress = checks["instance ingress"]
    assert ingress["status"] == "fail" and client.bed.aws.client_public_ip in ingress["detail"]  # discovered
    assert f"--cidr {client.bed.aws.client_public_ip}/32" in ingress["fix"]
    _allow_in(bed, inst_sg, cidr="198.51.100.0/24")
    ok = doctor(client, inst.instance_id, "--no-push", "--client-ip", "198.51.100.7")[2]["instance ingress"]
    assert ok["status"] == "pass" and "198.51.100.7" in ok["detail"]


def test_iam_denies_the_os_user_and_the_port(client, bed, world):
    bed.aws.identity_policies = [build(PolicySpec(os_users=("ubuntu",), ports=(3389,)))]
    r, doc, checks = doctor(client, "web-1")
    iam = checks["iam"]
    assert iam["status"] == "fail"
    assert "SendSSHPublicKey" in iam["detail"] and "OpenTunnel" in iam["detail"]
    assert "ec2:osuser" in iam["fix"] and "eic-proxy policy --instance" in iam["fix"]
    assert r.returncode == ExitCode.CHECKS_FAILED
    bed.aws.identity_policies = [build(PolicySpec(os_users=("ec2-user",)))]
    assert doctor(client, "web-1")[2]["iam"]["status"] == "pass"


def test_iam_check_is_skipped_when_the_caller_may_not_simulate(client, bed, world):
    bed.aws.inject("SimulatePrincipalPolicy", "AccessDenied", times=5, status=403)
    r, doc, checks = doctor(client, "web-1")
    assert checks["iam"]["status"] == "skip" and "SimulatePrincipalPolicy" in checks["iam"]["detail"]
    assert r.returncode == 0 and doc["ok"] is True


def test_assumed_role_is_simulated_as_its_role(client, bed, world):
    bed.aws.caller_arn = "arn:aws:sts::123456789012:assumed-role/Dev/alice"
    r, doc, checks = doctor(client, "web-1")
    assert checks["iam"]["status"] == "pass" and "arn:aws:iam::123456789012:role/Dev" in checks["iam"]["detail"]


def test_instance_without_the_eic_package(client, bed, world):
    inst = bed.add_instance("doc-nopkg", "main-a", 41, eic_package=False)
    r, doc, checks = doctor(client, inst.instance_id)
    assert checks["ssh banner"]["status"] == "pass"
    login = checks["ssh login"]
    assert login["status"] == "fail" and "refused the pushed key" in login["detail"]
    assert "ec2-instance-connect" in login["fix"]
    assert r.returncode == ExitCode.CHECKS_FAILED


def test_wrong_os_user(client, world):
    r, doc, checks = doctor(client, "web-1", "--os-user", "nosuchuser")
    login = checks["ssh login"]
    assert login["status"] == "fail" and "'nosuchuser'" in login["detail"]
    assert "--os-user" in login["fix"]


def test_nothing_listening_on_the_port(client, bed, world):
    inst = bed.add_instance("doc-nosshd", "main-a", 42, sshd=False)
    r, doc, checks = doctor(client, inst.instance_id)
    assert checks["handshake"]["status"] == "pass"
    assert checks["ssh banner"]["status"] == "fail" and "could not reach" in checks["ssh banner"]["detail"]
    assert checks["ssh login"]["status"] == "skip"


def test_doctor_changes_no_aws_resource(client, world):
    doctor(client, "web-1")
    mutating = [c.action for c in client.bed.aws.calls
                if not c.action.startswith(("Describe", "Get", "Simulate", "Lookup", "SendSSHPublicKey"))]
    assert mutating == []


def test_no_logging_trail_is_a_warning_not_a_failure(client, bed, world):
    trail = bed.client("cloudtrail")
    names = [t["Name"] for t in trail.describe_trails()["trailList"]]
    for name in names:
        trail.stop_logging(Name=name)
    try:
        r, doc, checks = doctor(client, "web-1")
    finally:
        for name in names:
            trail.start_logging(Name=name)
    audit = checks["audit trail"]
    assert audit["status"] == "skip" and "warning: no logging trail" in audit["detail"]
    assert "examples/terraform/audit.tf" in audit["fix"]
    assert r.returncode == 0 and doc["ok"] is True  # connecting works without it

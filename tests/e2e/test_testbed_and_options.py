"""The fake AWS side follows the API shapes, and connect's options reach the wire."""
from __future__ import annotations

import subprocess
import time

import boto3
import botocore.exceptions
import pytest

from eic_proxy.errors import ExitCode
from tests.conftest import BlobServer, wait_until

pytestmark = pytest.mark.e2e


def _ec2(client):
    return boto3.client("ec2", region_name=client.bed.region, endpoint_url=client.bed.aws.url,
                        aws_access_key_id="AKIAFAKE", aws_secret_access_key="x")


def test_eice_actions_return_every_field_of_the_botocore_shape(client, world):
    ec2 = _ec2(client)
    sub = client.bed.ec2.create_subnet(VpcId=world.no_endpoint.vpc_id,
                                       CidrBlock=f"127.{client.bed.octet + 1 if client.bed.octet < 250 else client.bed.octet - 1}.9.0/24")
    created = ec2.create_instance_connect_endpoint(SubnetId=sub["Subnet"]["SubnetId"], PreserveClientIp=True)
    eid = created["InstanceConnectEndpoint"]["InstanceConnectEndpointId"]
    try:
        shape = ec2.meta.service_model.shape_for("Ec2InstanceConnectEndpoint")
        got = ec2.describe_instance_connect_endpoints(InstanceConnectEndpointIds=[eid])["InstanceConnectEndpoints"]
        assert len(got) == 1
        assert set(shape.members) <= set(got[0]), set(shape.members) - set(got[0])
        assert got[0]["PreserveClientIp"] is True and got[0]["State"] == "create-complete"
        with pytest.raises(botocore.exceptions.ClientError, match="LimitExceeded"):
            ec2.create_instance_connect_endpoint(SubnetId=sub["Subnet"]["SubnetId"])  # one per VPC (docs/protocol.md §7)
    finally:
        deleted = ec2.delete_instance_connect_endpoint(InstanceConnectEndpointId=eid)
    assert deleted["InstanceConnectEndpoint"]["State"] == "delete-in-progress"
    by_vpc = ec2.describe_instance_connect_endpoints(Filters=[{"Name": "vpc-id", "Values": [world.no_endpoint.vpc_id]}])
    assert by_vpc["InstanceConnectEndpoints"] == []


def test_send_ssh_public_key_checks_instance_state_and_key(client, world):
    eic = boto3.client("ec2-instance-connect", region_name=client.bed.region, endpoint_url=client.bed.aws.url,
                       aws_access_key_id="AKIAFAKE", aws_secret_access_key="x")
    good = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEEkYeWuDlrBqFPODLVxC4LJUnG/lAKQrGM81MaM12dC"
    ok = eic.send_ssh_public_key(InstanceId=world.web.instance_id, InstanceOSUser="ec2-user", SSHPublicKey=good)
    assert ok["Success"] is True and ok["RequestId"]
    assert good in client.bed.aws.key_file(world.web.instance_id, "ec2-user").read_text()
    cases = [(world.stopped.instance_id, good, "EC2InstanceStateInvalidException"),
             ("i-0000000000000000f", good, "EC2InstanceNotFoundException"),
             (world.web.instance_id, "ssh-ed25519 " + "A" * 80, "InvalidArgsException")]
    for iid, key, code in cases:
        with pytest.raises(botocore.exceptions.ClientError) as ei:
            eic.send_ssh_public_key(InstanceId=iid, InstanceOSUser="ec2-user", SSHPublicKey=key)
        assert ei.value.response["Error"]["Code"] == code
    assert client.bed.aws.count("SendSSHPublicKey") == 4


def test_pushed_key_is_honoured_for_60_seconds_only(client, world):
    """The instance side's timing rule, checked by back-dating a push rather than waiting a minute."""
    r = client.ssh(world.web.instance_id, "true")
    assert r.returncode == 0, r.stderr
    keyfile = client.bed.aws.key_file(world.web.instance_id, "ec2-user")
    lines = keyfile.read_text().splitlines()
    stale = [f"{int(line.split()[0]) - 61_000} {line.split(' ', 1)[1]}" for line in lines]
    keyfile.write_text("\n".join(stale) + "\n")
    key = client.home / ".local/share/eic-proxy/keys/id_ed25519"
    r = client.run(["ssh", "-F", str(client.config), "-o", f"ProxyCommand={client.bed.eic_proxy_path()} connect "
                    "%h %p %r --no-push", world.web.instance_id, "true"])
    assert r.returncode == 255 and "Permission denied" in r.stderr
    assert key.exists()


def test_os_user_follows_ssh_user(client, world):
    r = client.run(["ssh", "-F", str(client.config), "-l", "ubuntu", world.web.instance_id, "id -un"])
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"ubuntu\n"
    push = client.bed.aws.pushes[-1]
    assert push["os_user"] == "ubuntu" and push["instance_id"] == world.web.instance_id


def test_fips_endpoint_name_is_used(client, world):
    env = dict(client.env, AWS_USE_FIPS_ENDPOINT="true")
    # FIPS applies to the API too; keep the fake AWS through the global endpoint override.
    r = client.run(["ssh", "-F", str(client.config), world.web.instance_id, "true"], env=env)
    assert r.returncode == 0, r.stderr
    ep = client.bed.aws.endpoints[next(iter(client.bed.aws.endpoints))]
    assert client.bed.eice.handshakes[-1].host == ep["FipsDnsName"] != ep["DnsName"]


def test_explicit_endpoint_id_and_profile_ca_bundle(client, world):
    eid = next(e for e, rec in client.bed.aws.endpoints.items() if rec["VpcId"] == world.web.vpc_id)
    cfg = client.home / ".aws/config"
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text(f"[profile bed]\nregion = {client.bed.region}\nca_bundle = {client.bed.ca.pem_path}\n")
    (cfg.parent / "credentials").write_text(f"[bed]\naws_access_key_id = {client.env['AWS_ACCESS_KEY_ID']}\n"
                                            f"aws_secret_access_key = {client.env['AWS_SECRET_ACCESS_KEY']}\n")
    drop = ("AWS_CA_BUNDLE", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
    env = {k: v for k, v in client.env.items() if k not in drop}
    r = client.run(["ssh", "-F", str(client.config), "-o",
                    f"ProxyCommand={client.bed.eic_proxy_path()} connect %h %p %r --profile bed --eice-id {eid}",
                    world.web.instance_id, "true"], env=env)
    assert r.returncode == 0, r.stderr
    assert client.bed.eice.handshakes[-1].params["instanceConnectEndpointId"] == eid


def test_max_tunnel_duration_is_sent_and_enforced(client, world):
    server = BlobServer(world.web.ip, echo=True)
    try:
        t0 = time.monotonic()
        proc = subprocess.Popen([client.bed.eic_proxy_path(), "connect", world.web.instance_id, str(server.port),
                                 "--no-push", "--max-tunnel-duration", "2"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=client.env)
        proc.wait(20)  # stdin stays open: only the endpoint can end the tunnel
        err = proc.stderr.read()
    finally:
        proc.stdin.close()
        server.close()
    assert client.bed.eice.handshakes[-1].params["maxTunnelDuration"] == "2"
    assert proc.returncode == ExitCode.TUNNEL_EXPIRED, err
    assert 1.5 < time.monotonic() - t0 < 10
    lines = err.decode().splitlines()
    assert len(lines) == 2, err  # one warning before the cut, then the error
    assert "will close this tunnel in" in lines[0] and "README" in lines[0]
    assert lines[1].startswith("eic-proxy: error:") and "maximum duration" in lines[1]


def test_twenty_connection_cap_per_endpoint(client, world):
    """20 tunnels per endpoint: the 21st queues locally; past the local limit, a 429 is retried."""
    server = BlobServer(world.web.ip, echo=True)
    procs = []

    def tunnel(*extra: str) -> subprocess.Popen:
        return subprocess.Popen([client.bed.eic_proxy_path(), "connect", world.web.instance_id, str(server.port),
                                 "--no-push", *extra], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=client.env)

    def established(p: subprocess.Popen) -> None:
        p.stdin.write(b"up\n")
        p.stdin.flush()
        assert p.stdout.read(3) == b"up\n"

    try:
        for _ in range(20):
            procs.append(tunnel())
            established(procs[-1])
        queued = tunnel()
        assert b"are in use" in queued.stderr.readline()  # it says it waits, and waits
        r = client.proxy("connect", world.web.instance_id, str(server.port), "--no-push", "--queue-timeout", "0.5",
                         input=b"", timeout=30)
        # a progress line ("waiting"), then the one error line
        assert r.returncode == ExitCode.SERVICE_UNAVAILABLE, r.stderr
        lines = r.stderr.splitlines()
        assert len(lines) == 2 and "waiting" in lines[0] and "Traceback" not in r.stderr
        assert lines[1].startswith("eic-proxy: error: no free connection") and "ControlMaster" in lines[1]
        procs[0].stdin.close()           # one tunnel ends: the queued one gets its slot
        assert procs.pop(0).wait(10) == 0
        established(queued)
        procs.append(queued)
        seen = len(client.bed.eice.handshakes)
        over = tunnel("--max-connections", "40")  # past our own limit: the service answers 429
        assert wait_until(lambda: any(h.status == 429 for h in client.bed.eice.handshakes[seen:]), 30)
        procs[0].stdin.close()
        assert procs.pop(0).wait(10) == 0
        established(over)                # the 429 was retried with back-off and then got through
        procs.append(over)
        statuses = [h.status for h in client.bed.eice.handshakes[seen:]]
        assert statuses[0] == 429 and statuses[-1] == 101
    finally:
        for p in procs:
            p.stdin.close()
        for p in procs:
            assert p.wait(10) == 0
        server.close()

"""Reach: Auto Scaling groups by name, through real ssh."""
from __future__ import annotations

import datetime as dt
import json

import pytest

from eic_proxy.errors import ExitCode
from tests.conftest import assert_one_line_error

pytestmark = pytest.mark.e2e

GROUP_TAG = "aws:autoscaling:groupName"


@pytest.fixture(scope="module")
def fleet(bed, world):
    """Two instances of one Auto Scaling group, launched an hour apart."""
    insts = [bed.add_instance(f"fleet-a-{i}", "main-a", 87 + i, tags={GROUP_TAG: "fleet-a"}) for i in range(2)]
    backend = bed.aws.ec2_backend()
    base = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=2)
    for i, inst in enumerate(insts):
        backend.get_instance(inst.instance_id).launch_time = (base + dt.timedelta(hours=i)).isoformat()
    return insts


def test_a_group_of_several_is_ambiguous_and_lists_them(client, fleet):
    r = client.proxy("connect", "asg:fleet-a", input=b"", timeout=60)
    assert_one_line_error(r, ExitCode.AMBIGUOUS_HOST, "fleet-a", fleet[0].instance_id, fleet[1].instance_id,
                          "--pick")


def test_pick_newest_and_oldest_through_the_generated_block(client, fleet):
    """One alias, different instances: the block's per-instance known_hosts keeps ssh from crying wolf."""
    for how, want in (("newest", fleet[1]), ("oldest", fleet[0])):
        r = client.proxy("ssh-config", "--install", "asg:*", "--user", "ec2-user", "--name", "asg", "--pick", how)
        assert r.returncode == 0, r.stderr
        client.config = client.home / ".ssh" / "config"
        r = client.ssh("asg:fleet-a", "echo ok", timeout=60)
        assert r.returncode == 0 and r.stdout.endswith(b"ok\n"), r.stderr
        assert client.bed.eice.handshakes[-1].params["privateIpAddress"] == want.ip


def test_ls_lists_one_group(client, fleet):
    r = client.proxy("ls", "--asg", "fleet-a", "--json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert sorted(row["instance_id"] for row in rows) == sorted(i.instance_id for i in fleet)
    assert "asg:fleet-a" in r.stderr or r.stderr == ""


def test_the_port_rule_is_one_line_that_names_the_alternative(client, world):
    r = client.proxy("connect", "web-1", "5432", "--no-push", input=b"", timeout=60)
    assert_one_line_error(r, ExitCode.HANDSHAKE_REJECTED, "22 and 3389", "not 5432", "ssh -N -L 5432:localhost:5432")
    assert client.bed.eice.handshakes[-1].status == 400  # the endpoint's refusal, not a guess of ours


def test_the_listener_warns_about_the_port_rule_up_front(client, world):
    import signal
    import subprocess

    proc = subprocess.Popen([client.bed.eic_proxy_path(), "tunnel", "web-1", "--local-port", "0", "--remote-port",
                             "5432"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=client.env, text=True)
    try:
        first = proc.stderr.readline()
        assert "accepts remote ports 22 and 3389 only" in first and "ssh -N -L" in first, first
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(10)

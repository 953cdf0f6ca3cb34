"""Connect by name: every alias form through real ssh, ambiguity, the cache, self-healing."""
from __future__ import annotations

import json

import pytest

from eic_proxy.errors import ExitCode
from tests.conftest import assert_one_line_error

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def twins(bed, world):
    """Two running instances with the same Name, for ambiguity."""
    a = bed.add_instance("twin", "main-a", 21)
    b = bed.add_instance("twin", "main-a", 22)
    bed.ec2.create_tags(Resources=[a.instance_id], Tags=[{"Key": "Role", "Value": "solo"}])
    return a, b


def _dns_name(client, inst) -> str:
    r = client.bed.ec2.describe_instances(InstanceIds=[inst.instance_id])
    return r["Reservations"][0]["Instances"][0]["PrivateDnsName"]


def test_every_alias_form_connects(client, world, twins):
    web = world.web
    aliases = ["web-1", "tag:Role=solo", web.ip, _dns_name(client, web), f"web-1--{client.bed.region}"]
    expected = [web.ip, twins[0].ip, web.ip, web.ip, web.ip]
    for alias, ip in zip(aliases, expected):
        r = client.ssh(alias, "hostname -I 2>/dev/null || true")
        assert r.returncode == 0, (alias, r.stderr)
        assert client.bed.eice.handshakes[-1].params["privateIpAddress"] == ip, alias
    # one push per instance: the later aliases of web-1 reused the first push
    assert sorted(p["instance_id"] for p in client.bed.aws.pushes) == sorted([web.instance_id, twins[0].instance_id])
    # ssh will not store a host key under a name with '*'; the glob itself resolves like any alias
    r = client.proxy("resolve", "web-*", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["instance_id"] == web.instance_id


def test_ambiguous_name_lists_candidates_and_pick_newest(client, twins):
    r = client.proxy("connect", "twin", "--no-cache", input=b"", timeout=30)
    assert_one_line_error(r, ExitCode.AMBIGUOUS_HOST, twins[0].instance_id, twins[1].instance_id, "--pick")
    r = client.proxy("resolve", "twin", "--pick", "newest", "--json", timeout=30)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["instance_id"] in (twins[0].instance_id, twins[1].instance_id)


def test_no_match_says_so(client):
    r = client.proxy("connect", "no-such-host", input=b"", timeout=30)
    assert_one_line_error(r, ExitCode.HOST_NOT_FOUND, "no-such-host", "eic-proxy ls")


def test_warm_connection_makes_zero_describe_calls(client, world):
    assert client.ssh("web-1", "true").returncode == 0
    cold = client.bed.aws.describe_calls()
    assert cold == 2  # DescribeInstances + DescribeInstanceConnectEndpoints
    r = client.ssh("web-1", "true")
    assert r.returncode == 0, r.stderr
    assert client.bed.aws.describe_calls() == cold
    doc = json.loads(client.proxy("resolve", "web-1", "--json").stdout)
    assert doc["target_cache_age"] is not None and doc["endpoint_id"].startswith("eice-")
    client.proxy("cache", "clear")
    assert json.loads(client.proxy("resolve", "web-1", "--json").stdout)["target_cache_age"] is None


def test_stale_cache_heals_in_one_retry(client, bed, world):
    old = bed.add_instance("phoenix", "main-a", 30)
    assert client.ssh("phoenix", "true").returncode == 0
    bed.ec2.terminate_instances(InstanceIds=[old.instance_id])
    old.sshd.stop()
    new = bed.add_instance("phoenix", "main-a", 31)
    before = bed.aws.count("DescribeInstances")
    # a new instance has a new host key; keying known_hosts on the instance ID is the ssh-config generator's job
    r = client.run(["ssh", "-F", str(client.config), "-o", f"UserKnownHostsFile={client.home}/known_hosts2",
                    "phoenix", "hostname"])
    assert r.returncode == 0, r.stderr
    assert bed.aws.pushes[-1]["instance_id"] == new.instance_id
    assert bed.aws.count("DescribeInstances") == before + 1

"""Verified host keys through the generated block (StrictHostKeyChecking yes): the console's keys on
first contact, a different key refused before any command runs, and the fallbacks when there are none."""
from __future__ import annotations

import json
import os

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


def _install(client, *args: str) -> None:
    r = client.proxy("ssh-config", "--install", "hk-*", "--user", "ec2-user", "--name", "hk", *args)
    assert r.returncode == 0, r.stderr
    client.config = client.home / ".ssh" / "config"
    assert "StrictHostKeyChecking yes" in (client.home / ".ssh" / "eic-proxy.config").read_text()


def _ours(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("eic-proxy: ")]


def _meta(client, instance_id: str) -> dict:
    path = client.home / ".local/share/eic-proxy/known_hosts/by-instance" / f"{instance_id}.json"
    return json.loads(path.read_text())


def test_first_contact_trusts_only_the_console_keys_and_the_warm_path_asks_nothing(client, bed, world):
    inst = bed.add_instance("hk-1", "main-a", 81)
    _install(client)
    r = client.ssh_at_exit("hk-1", "echo in", "-o", "BatchMode=yes")
    assert r.returncode == 0 and r.stdout == b"in\n", r.stderr
    assert not _ours(r.stderr), r.stderr
    assert _meta(client, inst.instance_id)["source"] == "console"
    assert client.bed.aws.count("GetConsoleOutput") == 1
    r = client.ssh_at_exit("hk-1", "true", "-o", "BatchMode=yes")
    assert r.returncode == 0, r.stderr
    assert client.bed.aws.count("GetConsoleOutput") == 1  # known keys: no second call
    shown = client.proxy("known-hosts", "hk-1", "--json")
    doc = json.loads(shown.stdout)
    sshd_key = bed.aws.host_keys[inst.instance_id].split()
    assert doc["source"] == "console" and [k["type"] for k in doc["keys"]] == [sshd_key[0]]
    assert doc["age_seconds"] is not None and doc["age_seconds"] < 60


def test_a_key_the_console_does_not_list_is_refused_before_any_command(client, bed, world):
    inst = bed.add_instance("hk-2", "main-a", 82)
    bed.aws.consoles[inst.instance_id] = "other"
    _install(client)
    marker = f"/tmp/hk-marker-{os.getpid()}"
    r = client.ssh_at_exit("hk-2", f"touch {marker}", "-o", "BatchMode=yes")
    assert r.returncode == 255
    ours = [line for line in _ours(r.stderr) if "error:" in line]
    assert len(ours) == 1 and "its console output does not list" in ours[0], r.stderr
    assert "known-hosts hk-2 --refresh" in ours[0]
    assert not os.path.exists(marker)  # ssh never ran the command
    # the instance really was rebuilt: refresh reads the console again, and then it works
    bed.aws.consoles.pop(inst.instance_id)
    assert client.proxy("known-hosts", "hk-2", "--refresh").returncode == 0
    r = client.ssh_at_exit("hk-2", "echo ok", "-o", "BatchMode=yes")
    assert r.returncode == 0 and r.stdout == b"ok\n", r.stderr


@pytest.mark.parametrize("console", ["missing", "scrolled"])
def test_no_keys_in_the_console_verify_says_so_and_connects(client, bed, world, console):
    inst = bed.add_instance(f"hk-3{console[0]}", "main-a", 83 if console == "missing" else 84)
    bed.aws.consoles[inst.instance_id] = console
    _install(client)
    r = client.ssh_at_exit(f"hk-3{console[0]}", "echo ok", "-o", "BatchMode=yes")
    assert r.returncode == 0 and r.stdout == b"ok\n", r.stderr
    ours = _ours(r.stderr)
    assert len(ours) == 1 and "is not verified" in ours[0] and "host-keys = strict" in ours[0], r.stderr
    assert _meta(client, inst.instance_id)["source"] == "first-use"
    r = client.ssh_at_exit(f"hk-3{console[0]}", "true", "-o", "BatchMode=yes")
    assert r.returncode == 0 and not _ours(r.stderr), r.stderr  # remembered: said once


def test_strict_refuses_what_it_cannot_verify(client, bed, world):
    inst = bed.add_instance("hk-5", "main-a", 85)
    bed.aws.consoles[inst.instance_id] = "missing"
    _install(client, "--host-keys", "strict")
    r = client.ssh_at_exit("hk-5", "echo no", "-o", "BatchMode=yes")
    assert r.returncode == 255 and r.stdout == b""
    ours = _ours(r.stderr)
    assert len(ours) == 1 and "cannot verify the host key" in ours[0] and "no SSH host key block" in ours[0]


def test_no_permission_to_read_the_console_is_named(client, bed, world):
    bed.add_instance("hk-6", "main-a", 86)
    bed.aws.inject("GetConsoleOutput", "UnauthorizedOperation", status=403,
                   message="You are not authorized to perform this operation.")
    _install(client)
    r = client.ssh_at_exit("hk-6", "echo ok", "-o", "BatchMode=yes")
    assert r.returncode == 0, r.stderr
    ours = _ours(r.stderr)
    assert len(ours) == 1 and "ec2:GetConsoleOutput" in ours[0], r.stderr

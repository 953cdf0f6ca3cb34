"""The generated Host block, installed, used alone by ssh/scp/rsync; ls; config file; --start; IP moves."""
from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path

import pytest

from eic_proxy.errors import ExitCode
from tests.conftest import assert_one_line_error

pytestmark = pytest.mark.e2e


def _install(client, *args: str):
    r = client.proxy("ssh-config", "--install", *args)
    assert r.returncode == 0, r.stderr
    return r


def _ssh_dir(client) -> Path:
    return client.home / ".ssh"


def test_install_twice_gives_one_include_one_block_and_a_backup(client):
    ssh_dir = _ssh_dir(client)
    ssh_dir.mkdir(mode=0o700)
    (ssh_dir / "config").write_text("Host mine\n    User me\n")
    _install(client, "web-*", "--user", "ec2-user")
    _install(client, "web-*", "--user", "ec2-user")
    main = (ssh_dir / "config").read_text()
    own = (ssh_dir / "eic-proxy.config").read_text()
    assert main.count("Include ") == 1 and main.lstrip("# \n").find("Host mine") > main.find("Include ")
    assert main.splitlines()[1].startswith("Include ")  # line 0 is our comment, then the Include, before any Host
    assert own.count("Host web-*") == 1 and own.count(">>> eic-proxy block default") == 1
    backups = list(ssh_dir.glob("config.eic-proxy-backup-*"))
    assert len(backups) == 1 and backups[0].read_text() == "Host mine\n    User me\n"
    assert (ssh_dir / "eic-proxy.config").stat().st_mode & 0o777 == 0o600
    # a second profile gets its own block; the first one stays
    _install(client, "db-*", "--profile", "other")
    own = (ssh_dir / "eic-proxy.config").read_text()
    assert own.count("Host web-*") == 1 and own.count("Host db-*") == 1 and "--profile other" in own
    assert (ssh_dir / "config").read_text().count("Include ") == 1


def test_printed_block_uses_absolute_paths(client):
    r = client.proxy("ssh-config", "web-*", "--region", client.bed.region)
    text = r.stdout.decode()
    proxy_line = next(line for line in text.splitlines() if "ProxyCommand" in line)
    python, flag, launcher = proxy_line.split()[1:4]  # on POSIX: this Python and the launcher, not pip's wrapper
    assert flag == "-S"  # the launcher needs no .pth file read
    assert os.path.isabs(python) and os.access(python, os.X_OK) and "python" in os.path.basename(python)
    assert os.path.isabs(launcher) and launcher.endswith("/eic_proxy_connect.py") and os.path.isfile(launcher)
    assert f"connect --region {client.bed.region} --typed=%n -- %h %p %r" in proxy_line
    identity = next(line for line in text.splitlines() if "IdentityFile" in line).split(None, 1)[1]
    assert os.path.isabs(identity) and os.path.exists(identity)  # exists before ssh starts
    assert "IdentitiesOnly yes" in text and "UserKnownHostsFile" in text


def test_generated_block_alone_works_for_ssh_scp_rsync(client, world, tmp_path):
    _install(client, "web-*", "i-*", "--user", "ec2-user")
    cfg = str(_ssh_dir(client) / "config")
    r = client.run(["ssh", "-F", cfg, "-o", "BatchMode=yes", "web-1", "id -un"])
    assert r.returncode == 0 and r.stdout == b"ec2-user\n", r.stderr
    src = tmp_path / "f.bin"
    src.write_bytes(os.urandom(300_000))
    remote = f"/tmp/gen-{os.getpid()}.bin"
    assert client.run(["scp", "-F", cfg, str(src), f"web-1:{remote}"]).returncode == 0
    back = tmp_path / "back.bin"
    r = client.run(["rsync", "-e", f"ssh -F {cfg}", f"{world.web.instance_id}:{remote}", str(back)])
    assert r.returncode == 0, r.stderr
    assert back.read_bytes() == src.read_bytes()
    # host keys were recorded per instance: both names show the same instance's keys, from one plain file
    kh = client.home / ".local/share/eic-proxy/known_hosts"
    names = (kh / "names").read_text()
    assert f"# web-1 = {world.web.instance_id}" in names
    assert f"# {world.web.instance_id} = {world.web.instance_id}" in names
    assert not (kh / "by-name").exists() and not any(p.is_symlink() for p in kh.rglob("*"))
    # reaching it by ID after reaching it by Name did not record (or ask for) the key a second time
    assert (kh / "by-instance" / world.web.instance_id).read_text().count("ssh-ed25519") == 1


def test_replaced_instance_does_not_trip_host_key_check(client, bed, world):
    _install(client, "phx-*", "--user", "ec2-user")
    cfg = str(_ssh_dir(client) / "config")
    old = bed.add_instance("phx-1", "main-a", 50)
    assert client.run(["ssh", "-F", cfg, "-o", "BatchMode=yes", "phx-1", "true"]).returncode == 0
    bed.ec2.terminate_instances(InstanceIds=[old.instance_id])
    old.sshd.stop()
    new = bed.add_instance("phx-1", "main-a", 51)  # new host key, new IP, same name
    r = client.run(["ssh", "-F", cfg, "-o", "BatchMode=yes", "phx-1", "true"])
    assert r.returncode == 0, r.stderr
    assert "IDENTIFICATION HAS CHANGED" not in r.stderr
    kh = client.home / ".local/share/eic-proxy/known_hosts/by-instance"
    assert (kh / old.instance_id).exists() and (kh / new.instance_id).exists()


def test_uppercase_name_survives_ssh_lowercasing(client, bed, world):
    _install(client, "*", "--user", "ec2-user", "--name", "all")
    bed.add_instance("Web-Upper", "main-a", 52)
    r = client.run(["ssh", "-F", str(_ssh_dir(client) / "config"), "-o", "BatchMode=yes", "Web-Upper", "true"])
    assert r.returncode == 0, r.stderr


def test_ip_change_is_healed_in_one_retry(client, bed, world):
    inst = bed.add_instance("mover", "main-a", 60)
    assert client.ssh("mover", "true").returncode == 0
    bed.move_instance(inst, 61)
    before = bed.aws.count("DescribeInstances")
    r = client.ssh("mover", "hostname; echo ok")
    assert r.returncode == 0, r.stderr
    assert r.stdout.endswith(b"ok\n")
    assert bed.aws.count("DescribeInstances") == before + 1
    handshakes = [h.params["privateIpAddress"] for h in bed.eice.handshakes[-2:]]
    assert handshakes == [f"127.{bed.octet}.1.60", f"127.{bed.octet}.1.61"]


def test_ls_lists_instances_and_endpoint_reach(client, world):
    r = client.proxy("ls", "--json")
    assert r.returncode == 0, r.stderr
    rows = {row["instance_id"]: row for row in json.loads(r.stdout)}
    assert rows[world.web.instance_id]["reachable"] and rows[world.web.instance_id]["name"] == "web-1"
    assert rows[world.web.instance_id]["endpoint_id"].startswith("eice-")
    assert rows[world.no_endpoint.instance_id]["endpoint_id"] is None
    assert rows[world.stopped.instance_id]["state"] == "stopped"
    assert not rows[world.stopped.instance_id]["reachable"]
    text = client.proxy("ls").stdout.decode()
    assert text.splitlines()[0].split()[:2] == ["NAME", "INSTANCE"] and "web-1" in text
    assert "none (create one)" in text


def test_config_file_settings_apply_by_pattern(client, world):
    cfg = client.home / ".config/eic-proxy/config.ini"
    cfg.parent.mkdir(parents=True)
    cfg.write_text("[host web-*]\nmax-tunnel-duration = 120\n\n[defaults]\nmax-tunnel-duration = 300\n")
    assert client.ssh("web-1", "true").returncode == 0
    assert client.bed.eice.handshakes[-1].params["maxTunnelDuration"] == "120"
    assert client.ssh(world.web.instance_id, "true").returncode == 0
    assert client.bed.eice.handshakes[-1].params["maxTunnelDuration"] == "300"
    env = dict(client.env, EIC_PROXY_MAX_TUNNEL_DURATION="200")  # environment beats the file
    assert client.run(["ssh", "-F", str(client.config), "web-1", "true"], env=env).returncode == 0
    assert client.bed.eice.handshakes[-1].params["maxTunnelDuration"] == "200"


def test_broken_config_file_is_one_line_error(client, world):
    cfg = client.home / ".config/eic-proxy/config.ini"
    cfg.parent.mkdir(parents=True)
    cfg.write_text("[host web-*]\ncolour = blue\n")
    r = client.proxy("connect", "web-1", input=b"", timeout=30)
    assert_one_line_error(r, ExitCode.CONFIG, "colour", "config.ini")


def test_stopped_by_name_says_use_start(client, world):
    r = client.proxy("connect", "stopped-1", input=b"", timeout=30)
    assert_one_line_error(r, ExitCode.INSTANCE_STATE, world.stopped.instance_id, "stopped", "--start")


def test_start_starts_and_waits_for_sshd(client, bed, world):
    sleeper = bed.add_instance("sleeper", "main-a", 70)
    bed.ec2.stop_instances(InstanceIds=[sleeper.instance_id])
    sleeper.sshd.stop()
    seen = len(bed.eice.handshakes)

    def boot() -> None:
        # sshd comes up only after the first tunnel attempt after StartInstances, like a slow boot
        while len(bed.eice.handshakes) == seen or bed.aws.count("StartInstances") == 0:
            threading.Event().wait(0.05)
        sleeper.sshd.start()

    t = threading.Thread(target=boot, daemon=True)
    t.start()
    r = client.run(["ssh", "-F", str(bed.ssh_config(client.home, "--start --start-timeout 60")), "sleeper",
                    "echo up"], timeout=90)
    t.join(10)
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"up\n"
    assert bed.aws.count("StartInstances") == 1
    assert bed.aws.instance_state(sleeper.instance_id) == "running"
    assert "starting " + sleeper.instance_id in r.stderr and "answers" in r.stderr


def test_the_launcher_imports_nothing_from_its_own_directory(client, world, tmp_path):
    """Beside the package in site-packages, a module named like a standard one (an old backport) must
    not shadow the standard library for the launcher, as it would for any script run by path."""
    import shutil

    launcher = tmp_path / "eic_proxy_connect.py"
    shutil.copy(Path(__file__).resolve().parents[2] / "eic_proxy_connect.py", launcher)
    (tmp_path / "zlib.py").write_text("raise SystemExit('shadowed')\n")  # the thin client imports zlib
    cfg = client.home / "launcher_config"
    base = client.bed.ssh_config(client.home).read_text()
    cfg.write_text("\n".join(f"    ProxyCommand {sys.executable} {launcher} connect %h %p %r" if "ProxyCommand" in line
                              else line for line in base.splitlines()) + "\n")
    r = client.run(["ssh", "-F", str(cfg), "web-1", "echo ok"])
    assert r.returncode == 0 and r.stdout == b"ok\n" and "shadowed" not in r.stderr, r.stderr

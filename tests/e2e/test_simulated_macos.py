"""A Mac user on a simulated macOS (tests/platform_sim.py) against the test bed: the installed block, the
helper on, a first connection (botocore loaded in a process the helper forked) and the agent mode
(the Keychain) — and no call into a non-fork-safe Apple framework from a forked process.

Every Python process here (the ProxyCommand, the helper it starts, what the helper forks) enters the
simulation at start-up (tests/platform_site/sitecustomize.py).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.conftest import wait_until
from tests.testbed.processes import our_processes

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def mac(client, tmp_path):
    home = tmp_path / "Users" / "jane"
    home.mkdir(parents=True)
    env = {k: v for k, v in client.env.items() if not k.startswith("XDG_")}
    env.update(HOME=str(home), EIC_SIM_PLATFORM="darwin",
               PYTHONPATH=f"{ROOT / 'tests' / 'platform_site'}:{ROOT}",
               EIC_SIM_FRAMEWORK_LOG=str(tmp_path / "frameworks.jsonl"),
               EIC_SIM_KEYCHAIN=str(tmp_path / "keychain.json"))
    env.pop("PYTHON_KEYRING_BACKEND", None)
    yield env, home
    client.run([client.bed.eic_proxy_path(), "helper", "stop"], env=env)


def _framework_calls(tmp_path) -> list[dict]:
    try:
        return [json.loads(line) for line in (tmp_path / "frameworks.jsonl").read_text().splitlines()]
    except FileNotFoundError:
        return []


def test_a_mac_user_logs_in_through_the_helper_and_no_forked_process_calls_apple_frameworks(
        client, world, mac, tmp_path, ssh_agent):
    env, home = mac
    proxy = client.bed.eic_proxy_path()
    r = client.run([proxy, "ssh-config", "--install", "web-*", "--user", "ec2-user"], env=env)
    assert r.returncode == 0, r.stderr
    # agent mode keeps its key in the Keychain: a key of its own (one key name serves one storage)
    r = client.run([proxy, "ssh-config", "--install", "i-*", "--user", "ec2-user", "--agent", "--key-type", "rsa-2048",
                    "--name", "agent"], env=dict(env, SSH_AUTH_SOCK=str(ssh_agent)))
    assert r.returncode == 0, r.stderr
    block = (home / ".ssh" / "eic-proxy.config").read_text()
    data = home / "Library" / "Application Support" / "eic-proxy"
    assert f'UserKnownHostsFile "{data}/known_hosts/names"' in block  # macOS's path, quoted (a space)
    cfg = str(home / ".ssh" / "config")

    for attempt in range(2):  # a first connection (botocore loaded in a forked process), then a warm one
        r = client.run(["ssh", "-F", cfg, "-o", "BatchMode=yes", "web-1", "id -un"], env=env)
        assert r.returncode == 0 and r.stdout == b"ec2-user\n", (attempt, r.stderr)
    r = client.run([proxy, "helper", "status"], env=env)
    assert re.search(r"helper \d+ \(this build\) at .*: 2 connections", r.stdout.decode()), (r.stdout, r.stderr)

    # agent mode reads the key from the Keychain: never in a process the helper forked
    env_agent = dict(env, SSH_AUTH_SOCK=str(ssh_agent))
    r = client.run(["ssh", "-F", cfg, "-o", "BatchMode=yes", world.web.instance_id, "echo agent"], env=env_agent)
    assert r.returncode == 0 and r.stdout == b"agent\n", r.stderr
    calls = _framework_calls(tmp_path)
    assert any(c["what"].startswith("Security.") for c in calls), calls  # the Keychain was used …
    assert any(c["what"].startswith("_scproxy") for c in calls), calls  # … and the system proxy lookup
    forked = [c for c in calls if c["forked"]]
    assert not forked, forked  # … but never from a forked process
    r = client.run([proxy, "helper", "status"], env=env)
    assert ": 2 connections" in r.stdout.decode(), r.stdout  # the agent-mode connection went around it
    assert wait_until(lambda: not [p for p, cmd in our_processes(str(tmp_path)).items()
                                   if "helper.server" not in cmd], 5)


def test_the_tunnel_trusts_what_botocore_trusts_when_openssl_has_no_store(client, world, tmp_path):
    """python.org's macOS Python has no OpenSSL store until "Install Certificates.command" runs, while
    botocore uses certifi's bundle (or its own): with AWS_CA_BUNDLE unset the WebSocket must trust that
    bundle too. Here the test CA is only in the certifi that botocore would use."""
    fake = tmp_path / "site" / "certifi"
    fake.mkdir(parents=True)
    (fake / "cacert.pem").write_bytes(Path(client.bed.ca.pem_path).read_bytes())
    (fake / "__init__.py").write_text("import os\n\ndef where():\n    return os.path.join(os.path.dirname(__file__), "
                                      "'cacert.pem')\n")
    env = {k: v for k, v in client.env.items() if k != "AWS_CA_BUNDLE"}
    env.update(PYTHONPATH=str(tmp_path / "site"), SSL_CERT_FILE=str(tmp_path / "none.pem"),
               SSL_CERT_DIR=str(tmp_path / "none"))
    for helper in ("yes", "no"):
        r = client.run(["ssh", "-F", str(client.config), "web-1", "echo trusted"], env=dict(env, EIC_PROXY_HELPER=helper))
        assert r.returncode == 0 and r.stdout == b"trusted\n", (helper, r.stderr)
    client.run([client.bed.eic_proxy_path(), "helper", "stop"], env=env)
    from tests.testbed.ca import TestCA

    other = TestCA.create(tmp_path / "other", "some other CA")  # botocore's bundle without our CA: refused
    (fake / "cacert.pem").write_bytes(other.pem_path.read_bytes())
    r = client.run(["ssh", "-F", str(client.config), "web-1", "true"], env=dict(env, EIC_PROXY_HELPER="no"))
    assert r.returncode != 0 and "is not trusted" in r.stderr, r.stderr


def _console_script(path: Path) -> None:
    """pip's console-script wrapper for eic-proxy, as Homebrew's virtualenv has it."""
    import sys

    path.parent.mkdir(parents=True)
    path.write_text(f"#!{sys.executable}\nimport sys\nfrom eic_proxy.entry import main\nsys.exit(main())\n")
    path.chmod(0o755)


def _point(link: Path, target: str) -> None:
    tmp = link.with_name(link.name + ".new")
    tmp.symlink_to(target)
    tmp.replace(link)


def _doctor_block(client, program: str) -> dict:
    r = client.run([program, "doctor", "web-1", "--json"])
    checks = {c["name"]: c for c in json.loads(r.stdout)["checks"]}
    return checks.get("ssh block", {})


def test_the_block_survives_a_homebrew_upgrade_and_doctor_sees_a_broken_one(client, world, tmp_path):
    import shutil

    brew = tmp_path / "homebrew"
    _console_script(brew / "Cellar/eic-proxy/1.0/bin/eic-proxy")
    (brew / "bin").mkdir()
    (brew / "opt").mkdir()
    _point(brew / "bin/eic-proxy", "../Cellar/eic-proxy/1.0/bin/eic-proxy")
    _point(brew / "opt/eic-proxy", "../Cellar/eic-proxy/1.0")
    for program in (brew / "bin/eic-proxy", brew / "opt/eic-proxy/bin/eic-proxy"):  # as run from PATH, or opt/
        r = client.run([str(program), "ssh-config", "--install", "web-*", "--user", "ec2-user"])
        assert r.returncode == 0, r.stderr
        block = (client.home / ".ssh" / "eic-proxy.config").read_text()
        assert f"ProxyCommand {program} connect " in block and "Cellar" not in block, block
    cfg = str(client.home / ".ssh" / "config")
    assert client.run(["ssh", "-F", cfg, "-o", "BatchMode=yes", "web-1", "true"]).returncode == 0
    assert _doctor_block(client, str(brew / "bin/eic-proxy"))["status"] == "pass"

    # brew upgrade + cleanup: a new versioned prefix, the links moved, the old prefix removed
    _console_script(brew / "Cellar/eic-proxy/1.1/bin/eic-proxy")
    _point(brew / "bin/eic-proxy", "../Cellar/eic-proxy/1.1/bin/eic-proxy")
    _point(brew / "opt/eic-proxy", "../Cellar/eic-proxy/1.1")
    shutil.rmtree(brew / "Cellar/eic-proxy/1.0")
    r = client.run(["ssh", "-F", cfg, "-o", "BatchMode=yes", "web-1", "echo upgraded"])
    assert r.returncode == 0 and r.stdout == b"upgraded\n", r.stderr

    # an uninstall leaves a block naming a program that is gone: doctor says so and how to mend it
    (brew / "opt/eic-proxy").unlink()
    check = _doctor_block(client, str(brew / "bin/eic-proxy"))
    assert check["status"] == "fail" and "opt/eic-proxy/bin/eic-proxy" in check["detail"], check
    assert "ssh-config --install" in check["fix"]


def test_a_mac_carries_tunnels_of_one_environment_in_one_process(client, world, mac, tmp_path):
    """The hand-over to a carrier (helper/carrier.py) on the simulated macOS: LOCAL_PEERCRED, no /proc,
    socket paths short enough under a short HOME (macOS allows 104 bytes), process names not settable."""
    import shutil
    import signal
    import subprocess
    import tempfile

    from tests.conftest import BlobServer

    env, _ = mac
    short = Path(tempfile.mkdtemp(prefix="m", dir="/tmp"))
    env = dict(env, HOME=str(short))
    echo = BlobServer(world.web.ip, echo=True)
    tunnels = []
    try:
        for n in range(2):
            p = subprocess.Popen([client.bed.eic_proxy_path(), "connect", world.web.instance_id, str(echo.port),
                                  "--no-push"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, env=env)
            tunnels.append(p)
            p.stdin.write(b"mac %d\n" % n)
            p.stdin.flush()
            assert p.stdout.read(6) == b"mac %d\n" % n
        def forked() -> list[int]:
            return [pid for pid, cmd in our_processes(str(short)).items() if "helper.server" in cmd]
        # the helper, and one process carrying both tunnels (once the one that handed its tunnel over is gone)
        assert wait_until(lambda: len(forked()) == 2, 10), f"a hand-over did not happen: {forked()}"
        assert list((short / "Library" / "Caches" / "eic-proxy").glob("carrier-*.sock"))
        tunnels[1].send_signal(signal.SIGTERM)
        assert tunnels[1].wait(5) == 143
        tunnels[0].stdin.write(b"on\n")
        tunnels[0].stdin.flush()
        assert tunnels[0].stdout.read(3) == b"on\n"
        tunnels[0].stdin.close()
        assert tunnels[0].wait(10) == 0
    finally:
        for p in tunnels:
            if p.poll() is None:
                p.kill()
        echo.close()
        client.run([client.bed.eic_proxy_path(), "helper", "stop"], env=env)
        assert wait_until(lambda: not our_processes(str(short)), 5)
        shutil.rmtree(short, ignore_errors=True)

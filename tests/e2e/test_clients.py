"""What people already use works unchanged through the ProxyCommand — Ansible (examples/
ansible), VS Code Remote-SSH's connection pattern, git, paramiko — and an IPv6-only instance."""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def run_to_files(argv, env, tmp: Path, input: bytes = b"", cwd=None, timeout: float = 300):
    """Like subprocess.run, with output in files: a persisted ssh master (ControlPersist) and its
    ProxyCommand keep inherited pipes open long after the command itself has returned."""
    out, err = tmp / "stdout", tmp / "stderr"
    with open(out, "wb") as o, open(err, "wb") as e:
        p = subprocess.run(argv, input=input, stdout=o, stderr=e, env=env, cwd=cwd, timeout=timeout)
    return p.returncode, out.read_bytes(), err.read_text(errors="replace")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop_masters(control_dir: Path, env) -> None:
    for sock in control_dir.glob("*") if control_dir.is_dir() else []:
        subprocess.run(["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "x"], env=env, capture_output=True,
                       timeout=20)


def _installed_config(client, pattern: str) -> Path:
    """The block `eic-proxy ssh-config --install` writes: what real users have in ~/.ssh/config."""
    r = client.proxy("ssh-config", "--install", pattern, "--user", "ec2-user")
    assert r.returncode == 0, r.stderr
    cfg = client.home / ".ssh" / "config"
    text = cfg.read_text()
    cfg.write_text(text + "\nHost *\n    StrictHostKeyChecking accept-new\n    BatchMode yes\n")
    return cfg


# ---- Ansible ---------------------------------------------------------------------------------------
@pytest.mark.skipif(not (BIN / "ansible").exists(), reason="ansible-core is installed by the test extras")
def test_ansible_ping_command_copy_on_ten_instances_one_push_each(client, fleet, tmp_path):
    _installed_config(client, "app-*")
    work = tmp_path / "ansible"
    shutil.copytree(REPO / "examples" / "ansible", work)
    os.chmod(work, 0o700)  # ansible ignores an ansible.cfg in a world-writable directory
    env = dict(client.env, ANSIBLE_CONFIG=str(work / "ansible.cfg"), ANSIBLE_HOME=str(tmp_path / "ansible-home"),
               ANSIBLE_LOCAL_TEMP=str(tmp_path / "ansible-tmp"), ANSIBLE_NOCOLOR="1")
    # ssh finds ~/.ssh/config through the passwd entry, not $HOME; the test's home is not root's.
    cfg_args = next(line.split("=", 1)[1].strip() for line in (work / "ansible.cfg").read_text().splitlines()
                    if line.startswith("ssh_args"))
    env["ANSIBLE_SSH_ARGS"] = f"{cfg_args} -F {client.home / '.ssh' / 'config'}"
    control_dir = Path(tempfile.mkdtemp(prefix="eic-cp-"))  # Unix socket paths must stay short
    env["ANSIBLE_SSH_CONTROL_PATH_DIR"] = str(control_dir)
    try:
        for args in (["all", "-m", "ping"], ["all", "-m", "command", "-a", "id -un"],
                     ["all", "-m", "copy", "-a", "content=hi dest=/tmp/eic-ansible-{{ inventory_hostname }}.txt"]):
            code, out, err = run_to_files([str(BIN / "ansible"), *args], env, tmp_path, cwd=work)
            assert code == 0, (args, out[-3000:], err[-3000:])
            ok = re.findall(rb"^(app-\d+) \| (?:SUCCESS|CHANGED)", out, re.M)
            assert sorted(ok) == [f"app-{i}".encode() for i in range(10)], out[-3000:]
        code, out, err = run_to_files([str(BIN / "ansible-playbook"), "site.yml"], env, tmp_path, cwd=work)
        assert code == 0, (out[-3000:], err[-3000:])
        assert len(re.findall(rb"^app-\d+ +: ok=3 .*failed=0", out, re.M)) == 10, out[-3000:]
        assert all((Path("/tmp") / f"eic-ansible-app-{i}.txt").read_text().startswith("hello from app-")
                   for i in range(10))
        # Four runs, ten hosts, one tunnel per host kept open: one push per instance in this window.
        pushed = sorted(p["instance_id"] for p in client.bed.aws.pushes)
        assert pushed == sorted(i.instance_id for i in fleet)
    finally:
        _stop_masters(control_dir, env)
        shutil.rmtree(control_dir, ignore_errors=True)


# ---- VS Code Remote-SSH ----------------------------------------------------------------------------
VSCODE_SCRIPT = b"""
echo "${VSCODE_MARK}"
uname -s
test -d "$HOME" && echo home-ok
exit 0
"""


def _vscode(client, tmp: Path, extra: list[str]):
    argv = ["ssh", "-F", str(client.config), "-T", "-D", str(_free_port()), "-o", "ConnectTimeout=15", *extra,
            "web-1", "VSCODE_MARK=vscode-ready bash"]
    return run_to_files(argv, client.env, tmp, input=VSCODE_SCRIPT)


def test_vscode_remote_ssh_pattern_twice_then_with_controlmaster(client, world, tmp_path):
    for _ in range(2):  # the install/probe connection, then the server connection seconds later
        code, out, err = _vscode(client, tmp_path, [])
        assert code == 0 and b"vscode-ready\nLinux\nhome-ok\n" in out, err
    assert len(client.bed.aws.pushes) == 1  # the second reused the push
    cm_dir = Path(tempfile.mkdtemp(prefix="eic-cm-"))  # Unix socket paths must stay short
    cm = ["-o", "ControlMaster=auto", "-o", f"ControlPath={cm_dir}/%C", "-o", "ControlPersist=30"]
    before = len(client.bed.eice.handshakes)
    try:
        for _ in range(2):
            code, out, err = _vscode(client, tmp_path, cm)
            assert code == 0 and b"vscode-ready" in out, err
        assert len(client.bed.eice.handshakes) == before + 1  # the second rode the master's tunnel
    finally:
        _stop_masters(cm_dir, client.env)
        shutil.rmtree(cm_dir, ignore_errors=True)


# ---- git ---------------------------------------------------------------------------------------------
@pytest.mark.skipif(shutil.which("git") is None, reason="git is installed by scripts/bootstrap.sh")
def test_git_clone_and_push_over_the_tunnel(client, world, tmp_path):
    # A name of its own: the bed's users are the machine's, and two suites at once (CI beside a local
    # run) would push to one repository (seen: "fetch first", and "failed to update ref").
    name = f"eic-test-repo-{os.getpid()}-{tmp_path.name}.git"
    bare = Path("/home/ec2-user") / name
    shutil.rmtree(bare, ignore_errors=True)
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(bare)], check=True)
    subprocess.run(["chown", "-R", "ec2-user:", str(bare)], check=True)
    env = dict(client.env, GIT_SSH_COMMAND=f"ssh -F {client.config}", GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@x",
               GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@x")
    work = tmp_path / "work"
    code, out, err = run_to_files(["git", "clone", "-q", f"web-1:{name}", str(work)], env, tmp_path)
    assert code == 0, err
    (work / "README").write_text("pushed through an EC2 Instance Connect Endpoint\n")
    for argv in (["git", "-C", str(work), "add", "README"], ["git", "-C", str(work), "commit", "-qm", "via eic"],
                 ["git", "-C", str(work), "push", "-q", "origin", "HEAD:main"]):
        code, out, err = run_to_files(argv, env, tmp_path)
        assert code == 0, (argv, err)
    log = subprocess.run(["git", "-c", "safe.directory=*", "--git-dir", str(bare), "log", "--format=%s", "main"],
                         capture_output=True, text=True, check=True).stdout
    assert log == "via eic\n"
    again = tmp_path / "again"
    try:
        code, out, err = run_to_files(["git", "clone", "-q", f"web-1:{name}", str(again)], env, tmp_path)
        assert code == 0 and (again / "README").read_text().startswith("pushed through"), err
    finally:
        shutil.rmtree(bare, ignore_errors=True)


# ---- paramiko (and so Fabric) ------------------------------------------------------------------------
def test_paramiko_proxycommand_from_the_generated_block(client, world, monkeypatch):
    paramiko = pytest.importorskip("paramiko")
    _installed_config(client, "web-*")
    cfg_path = client.home / ".ssh" / "eic-proxy.config"  # paramiko does not follow Include: read the block's file
    for k, v in client.env.items():  # paramiko.ProxyCommand runs the command in this process's environment
        monkeypatch.setenv(k, v)
    host = paramiko.SSHConfig.from_path(str(cfg_path)).lookup("web-1")
    assert "eic-proxy" in host["proxycommand"] or "eic_proxy" in host["proxycommand"]
    ssh = paramiko.SSHClient()
    ssh.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    sock = paramiko.ProxyCommand(host["proxycommand"])
    try:
        ssh.connect(host["hostname"], port=int(host.get("port", 22)), username=host["user"],
                    key_filename=host["identityfile"][0], sock=sock, allow_agent=False, look_for_keys=False,
                    timeout=30, banner_timeout=30, auth_timeout=30)
        _, out, _ = ssh.exec_command("id -un; hostname -I 2>/dev/null | tr ' ' '\\n' | head -1 || true")
        assert out.read().decode().splitlines()[0] == "ec2-user"
    finally:
        ssh.close()
        sock.close()


# ---- IPv6 --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def six(bed, world):
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    if "::1" not in bed.eice.servers:
        probe = socket.socket(socket.AF_INET6)
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the fake endpoint binds
        try:
            probe.bind(("::1", 443))
        except OSError as exc:  # another test bed (a second suite on this machine) or a service of the user's
            pytest.skip(f"[::1]:443 is taken ({exc.strerror}): the dual-stack endpoint needs the one IPv6 "
                        "loopback address on the endpoint's port")
        finally:
            probe.close()
    return bed.add_ipv6_only_instance("six-1")


def test_ipv6_only_instance_through_a_dual_stack_endpoint(client, six, tmp_path):
    doc = json.loads(client.proxy("resolve", "six-1", "--json").stdout)
    assert doc["ip"] == "::1" and doc["instance_id"] == six.instance_id
    endpoint = client.bed.aws.endpoints[doc["endpoint_id"]]
    assert endpoint["IpAddressType"] == "dualstack" and endpoint["VpcId"] == six.vpc_id
    r = client.ssh("six-1", "echo $SSH_CONNECTION")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[2] == b"::1"  # sshd saw the connection arrive on its IPv6 address
    assert client.bed.eice.handshakes[-1].params["privateIpAddress"] == "::1"
    src = tmp_path / "six.bin"
    src.write_bytes(os.urandom(300_000))
    remote = Path(f"/tmp/eic-six-{os.getpid()}.bin")  # (the instance's /tmp is this machine's)
    r = client.run(["scp", "-F", str(client.config), str(src), f"six-1:{remote}"])
    try:
        assert r.returncode == 0 and remote.read_bytes() == src.read_bytes(), r.stderr
    finally:
        remote.unlink(missing_ok=True)


def test_an_ipv6_client_reaches_the_endpoint_through_its_dual_stack_name(client, six):
    """The client side of IPv6: the endpoint's dual-stack name (on ::1 here), signed for that host."""
    from eic_proxy.errors import ExitCode
    from tests.conftest import assert_one_line_error

    client.config = client.bed.ssh_config(client.home, "--ip-family 6")
    r = client.ssh("six-1", "echo $SSH_CONNECTION")
    assert r.returncode == 0, r.stderr
    shake = client.bed.eice.handshakes[-1]
    assert shake.status == 101 and shake.host.strip("[]") == "::1"  # a wrong signature host would be a 403
    r = client.proxy("connect", "web-1", "--ip-family", "6", "--no-push", input=b"", timeout=60)
    assert_one_line_error(r, ExitCode.NO_ENDPOINT, "no dual-stack DNS name", "--ip-family 4")

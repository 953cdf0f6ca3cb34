"""A Windows user who follows the README, on a simulated Windows (tests/platform_sim.py) against the test bed.

``eic-proxy.exe`` here is a stand-in that runs eic-proxy under the simulation from a profile directory with
a space in it (``…/Users/Jane Doe/AppData/Local/Programs/Python/Python312/Scripts``); the ssh, scp and
sftp are this machine's real OpenSSH clients reading exactly the block ``ssh-config --install`` wrote.
Real ssh ends its ProxyCommand with SIGHUP, which the simulated Windows does not handle (Windows has no
SIGHUP): the process is simply killed, as Win32-OpenSSH's TerminateProcess does.
"""
from __future__ import annotations

import json
import os
import shlex
import socket
import socketserver
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import wait_until
from tests.e2e.test_listener_and_audit import Listener, _Echo
from tests.platform_sim import windows_env
from tests.testbed.processes import our_processes

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


class Windows:
    """A simulated Windows user: profile, environment and ``eic-proxy.exe``."""

    def __init__(self, client, base: Path) -> None:
        self.client = client
        env = {k: v for k, v in client.env.items() if not k.startswith("XDG_")}
        env.update(windows_env(str(base)))
        self.env = env
        self.profile = Path(env["USERPROFILE"])
        scripts = self.profile / "AppData/Local/Programs/Python/Python312/Scripts"
        scripts.mkdir(parents=True)
        self.exe = scripts / "eic-proxy.exe"
        self.exe.write_text("#!/bin/sh\n"
                            f"PYTHONPATH={shlex.quote(str(ROOT))} exec {shlex.quote(sys.executable)} "
                            '-m tests.platform_sim win32 --argv0 "$0" -- "$@"\n')
        self.exe.chmod(0o755)
        self.data = self.profile / "AppData/Local/eic-proxy"

    def proxy(self, *args: str, **kw):
        return self.client.run([str(self.exe), *args], env=self.env, **kw)

    def ssh_config(self) -> str:
        return str(self.profile / ".ssh" / "config")

    def run(self, argv, **kw):
        return self.client.run(argv, env=self.env, **kw)

    def block(self) -> dict[str, str]:
        text = (self.profile / ".ssh" / "eic-proxy.config").read_text()
        return {line.split(None, 1)[0]: line.split(None, 1)[1] for line in text.splitlines()
                if line.startswith("    ")}


@pytest.fixture
def win(client, tmp_path):
    return Windows(client, tmp_path / "C")


def _gone(tmp_path) -> bool:
    return wait_until(lambda: not our_processes(str(tmp_path)), 5.0, 0.05)


def test_a_windows_user_logs_in_with_the_installed_block(win, world, tmp_path):
    r = win.proxy("ssh-config", "--install", "web-*", "i-*", "--user", "ec2-user")
    assert r.returncode == 0, r.stderr
    block = win.block()
    program = shlex.split(block["ProxyCommand"])[0]
    assert program == str(win.exe) and block["ProxyCommand"].startswith(f'"{win.exe}" connect ')
    assert block["UserKnownHostsFile"] == f'"{win.data}/known_hosts/names"'  # Windows' data dir, quoted (a space)
    assert block["IdentityFile"] == f'"{win.data}/keys/id_ed25519"'
    assert block["StrictHostKeyChecking"] == "yes"

    cfg = win.ssh_config()
    r = win.run(["ssh", "-F", cfg, "-o", "BatchMode=yes", "web-1", "id -un"])
    assert r.returncode == 0 and r.stdout == b"ec2-user\n", r.stderr
    # the host key was verified from the console before ssh saw it, and kept without a symlink
    iid = world.web.instance_id
    names = (win.data / "known_hosts/names").read_text()
    assert f"# web-1 = {iid}" in names and "web-1,[web-1]:* ssh-ed25519 " in names
    meta = json.loads((win.data / f"known_hosts/by-instance/{iid}.json").read_text())
    assert meta["source"] == "console"
    assert not any(p.is_symlink() for p in win.data.rglob("*"))
    # every file the block names exists after the first connection
    for value in (block["IdentityFile"], block["UserKnownHostsFile"], program):
        assert Path(value.strip('"')).exists(), value

    src = tmp_path / "f.bin"
    src.write_bytes(os.urandom(200_000))
    remote = f"/tmp/win-{os.getpid()}.bin"
    r = win.run(["scp", "-F", cfg, str(src), f"{iid}:{remote}"])
    assert r.returncode == 0, r.stderr
    back = tmp_path / "back.bin"
    batch = tmp_path / "batch"
    batch.write_text(f"get {remote} {back}\n")
    r = win.run(["sftp", "-F", cfg, "-b", str(batch), "web-1"])
    assert r.returncode == 0, r.stderr
    assert back.read_bytes() == src.read_bytes()

    # Each ProxyCommand was killed at ssh's exit (no SIGHUP handler, as TerminateProcess would): the
    # audit log still says what it knows, and none is reported as open once the processes are gone.
    assert _gone(tmp_path)
    r = win.proxy("audit", "--json")
    assert r.returncode == 0, r.stderr
    entries = json.loads(r.stdout)["local"]
    connects = [e for e in entries if e["event"] == "connect"]
    ended = {e.get("id") for e in entries if e["event"] == "disconnect"}
    assert len(connects) == 3
    assert all(c["id"] in ended or c.get("end") == "not recorded" for c in connects), connects


def test_the_block_for_windows_10s_openssh_7_7_logs_in_too(win, world):
    r = win.proxy("ssh-config", "--install", "web-*", "--user", "ec2-user", "--ssh-version", "7.7")
    assert r.returncode == 0, r.stderr
    proxy = win.block()["ProxyCommand"]
    assert "%n" not in proxy and "--typed=%h -- %h %p %r" in proxy
    r = win.run(["ssh", "-F", win.ssh_config(), "-o", "BatchMode=yes", "web-1", "echo ok"])
    assert r.returncode == 0 and r.stdout == b"ok\n", r.stderr


class _ReusableEcho(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


@pytest.fixture(scope="module")
def rdp_echo_win(world):
    server = _ReusableEcho((world.web.ip, 3389), _Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield world.web
    server.shutdown()
    server.server_close()


def test_the_rdp_listener_carries_data_both_ways_on_windows(win, rdp_echo_win, tmp_path):
    lst = Listener(win.client, "web-1", "--local-port", "0", "--remote-port", "3389", program=str(win.exe),
                   env=win.env)
    try:
        for _ in range(2):  # the listener lives on after a connection ends
            payload = os.urandom(300_000)
            with socket.create_connection(("127.0.0.1", lst.port), timeout=20) as s:
                got = bytearray()
                sender = threading.Thread(target=s.sendall, args=(payload,))
                sender.start()
                while len(got) < len(payload):
                    chunk = s.recv(65536)
                    assert chunk, "the tunnel closed early"
                    got.extend(chunk)
                sender.join(10)
                assert bytes(got) == payload
                s.shutdown(socket.SHUT_WR)
                assert s.recv(1) == b""  # our end of the tunnel closes too
            line = lst.wait_for("closed", 10)
            assert f"up {len(payload)} B, down {len(payload)} B" in line, line
    finally:
        started = time.monotonic()
        assert lst.stop() == 0  # Ctrl-C
        assert time.monotonic() - started < 2.0
    assert _gone(tmp_path)


def test_doctor_passes_every_check_with_a_space_in_the_data_dir_and_a_cp1252_console(client, world, tmp_path):
    """A profile like C:\\Users\\Jane Doe (or macOS's Application Support) puts a space in the key's path;
    `doctor > file` on Windows writes cp1252. (Real Linux ssh does the login step here.)"""
    data = tmp_path / "Jane Doe" / "data"
    env = dict(client.env, XDG_DATA_HOME=str(data), PYTHONIOENCODING="cp1252")
    r = client.run([client.bed.eic_proxy_path(), "doctor", "web-1"], env=env)
    out = r.stdout.decode("cp1252")
    assert r.returncode == 0, (out, r.stderr)
    assert "ok ssh login" in out and "logged in as ec2-user" in out, out
    assert "all checks passed" in out and "Traceback" not in r.stderr

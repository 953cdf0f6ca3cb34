"""Shared fixtures: one test bed per session, an isolated home and fake credentials per test."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import pytest

from eic_proxy.errors import ExitCode


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test runs with its own HOME/XDG dirs and fake credentials; real AWS is unreachable."""
    home = tmp_path / "home"
    home.mkdir()
    for k in list(os.environ):
        if k.startswith("AWS_") or k.startswith("XDG_") or k.lower() in ("http_proxy", "https_proxy", "no_proxy"):
            monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / ".local/share"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAFAKEFAKEFAKEFAKE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "fake-secret")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(home / ".aws/config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(home / ".aws/credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    # Commands that unit tests run connect in-process: a helper (it outlives them) is the e2e tests' to
    # start, and bed.env() leaves this out so they use the default.
    monkeypatch.setenv("EIC_PROXY_HELPER", "no")
    return home


@pytest.fixture
def ssh_agent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A real ssh-agent of this test's own; SSH_AUTH_SOCK points at it. Yields the socket path."""
    if not shutil.which("ssh-agent"):
        pytest.skip("needs ssh-agent")
    from tests.testbed.sshd import wait_path

    sock = tmp_path / "agent.sock"
    proc = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL)
    try:
        wait_path(sock, proc)
        monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))
        yield sock
    finally:
        proc.terminate()
        proc.wait(5)


def _bed_unavailable() -> Optional[str]:
    if os.geteuid() != 0:
        return "the test bed needs root"
    for tool in ("ssh", "scp", "sftp", "rsync", "ssh-keygen"):
        if not shutil.which(tool):
            return f"{tool} is not installed (run scripts/bootstrap.sh)"
    if not os.path.exists("/usr/sbin/sshd"):
        return "sshd is not installed (run scripts/bootstrap.sh)"
    return None


@dataclass
class World:
    """The fake estate every end-to-end test shares."""

    web: object          # running instance with sshd, endpoint in its subnet
    stopped: object      # stopped instance
    no_endpoint: object  # running instance in a VPC without an endpoint


@pytest.fixture(scope="session")
def bed():
    reason = _bed_unavailable()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"end-to-end tests cannot run in CI: {reason}")
        pytest.skip(reason)
    from tests.testbed.bed import Testbed

    tb = Testbed().start()
    tb.eice.test_ports = _EXEMPT_PORTS  # the one set BlobServers register in
    try:
        yield tb
    finally:
        tb.stop()
        tb.cleanup()


@pytest.fixture(scope="session")
def world(bed) -> World:
    web = bed.default_world()
    stopped = bed.add_instance("stopped-1", "main-a", 11, sshd=False)
    bed.ec2.stop_instances(InstanceIds=[stopped.instance_id])
    bed.add_vpc("other", bed.octet + 1 if bed.octet < 250 else bed.octet - 1)
    bed.add_subnet("other-a", "other", 1, second_octet=bed.octet + 1 if bed.octet < 250 else bed.octet - 1)
    no_endpoint = bed.add_instance("lonely-1", "other-a", 10, sshd=False)
    return World(web=web, stopped=stopped, no_endpoint=no_endpoint)


@pytest.fixture(scope="session")
def fleet(bed, world):
    """Ten instances (app-0 … app-9, as examples/ansible names them) for fan-out, Ansible and parallel scp."""
    return [bed.add_instance(f"app-{i}", "main-a", 150 + i) for i in range(10)]


@dataclass
class Result:
    returncode: int
    stdout: bytes
    stderr: str


class Client:
    """Runs real OpenSSH clients and ``eic-proxy`` against the bed from an isolated home."""

    def __init__(self, bed, home: Path) -> None:
        self.bed = bed
        self.home = home
        self.env = bed.env(home)
        self.config = bed.ssh_config(home)

    def run(self, argv: Sequence[str], *, input: Optional[bytes] = None, timeout: float = 120,
            env: Optional[dict] = None) -> Result:
        p = subprocess.run(list(argv), input=input, stdin=None if input is not None else subprocess.DEVNULL,
                           capture_output=True, timeout=timeout, env=env or self.env)
        return Result(p.returncode, p.stdout, p.stderr.decode(errors="replace"))

    def ssh_at_exit(self, host: str, command: str, *options: str, input: Optional[bytes] = None,
                    timeout: float = 60, on_start=None, env: Optional[dict] = None) -> Result:
        """Real ssh; its stderr as it stands *the moment ssh exits*, as a user (or VS Code, or Ansible)
        reads it. What our ProxyCommand writes later is lost to them, so it is not counted here."""
        import threading

        p = subprocess.Popen(["ssh", "-F", str(self.config), *options, host, command], env=env or self.env,
                             stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out = bytearray()
        drain = threading.Thread(target=lambda: out.extend(p.stdout.read()), daemon=True)
        drain.start()
        if input is not None:
            threading.Thread(target=_feed, args=(p.stdin, input), daemon=True).start()
        if on_start is not None:
            on_start(p)
        try:
            code = p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            raise
        os.set_blocking(p.stderr.fileno(), False)
        err = bytearray()
        while True:
            try:
                chunk = os.read(p.stderr.fileno(), 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            err.extend(chunk)
        p.stderr.close()
        drain.join(timeout)
        return Result(code, bytes(out), err.decode(errors="replace"))

    def ssh(self, host: str, command: str, **kw) -> Result:
        return self.run(["ssh", "-F", str(self.config), host, command], **kw)

    def proxy(self, *args: str, **kw) -> Result:
        return self.run([self.bed.eic_proxy_path(), *args], **kw)


def _feed(pipe, data: bytes) -> None:
    try:
        pipe.write(data)
        pipe.close()
    except OSError:
        pass


def wait_until(predicate, timeout: float, interval: float = 0.02) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` passes; returns whether it held."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


@pytest.fixture
def client(bed, world, tmp_path: Path) -> Client:
    bed.aws.reset()
    bed.eice.faults.clear()
    return Client(bed, tmp_path / "client-home")


_EXEMPT_PORTS: set[int] = set()


# ---- helpers shared by the end-to-end tests --------------------------------------------------------
def assert_one_line_error(r, code: ExitCode, *needles: str) -> None:
    assert r.returncode == int(code), (r.returncode, r.stderr)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("eic-proxy: error: ")
    assert "Traceback" not in r.stderr
    for n in needles:
        assert n.lower() in lines[0].lower(), lines[0]


class BlobServer:
    """A TCP service on a fake instance's address: sends a fixed blob, or echoes, then closes."""

    def __init__(self, address: str, payload: bytes = b"", echo: bool = False) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((address, 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        _EXEMPT_PORTS.add(self.port)  # a test service on a random port: the fake endpoint's port rule lets it by
        self.payload = payload
        self.echo = echo
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            try:
                if self.echo:
                    while True:
                        data = conn.recv(65536)
                        if not data:
                            break
                        conn.sendall(data)
                else:
                    conn.sendall(self.payload)
            except (ConnectionResetError, BrokenPipeError):
                pass  # a test that ends its tunnel abruptly (429, drop) resets this side too

    def close(self) -> None:
        _EXEMPT_PORTS.discard(self.port)
        self.sock.close()

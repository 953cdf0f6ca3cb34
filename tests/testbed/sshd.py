"""Real OpenSSH servers for the fake instances, honouring pushed keys for exactly 60 s like EC2 does.

Pitfalls (docs/testbed.md §3): the AuthorizedKeysCommand and every directory above it must be
root-owned and not group/world-writable, so the script is installed under /usr/local/libexec.
"""
from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Optional

SCRIPT_DIR = Path("/usr/local/libexec/eic-proxy-testbed")
SCRIPT = SCRIPT_DIR / "authorized-keys"
KEY_LIFETIME_MS = 60_000

# Prints the keys pushed for this instance and user less than 60 s ago (push times are in ms).
SCRIPT_TEXT = f"""#!/bin/sh
# eic-proxy test bed: EC2 Instance Connect's AuthorizedKeysCommand, reduced to its timing rule.
f="$1/$2"
[ -r "$f" ] || exit 0
now=$(date +%s%3N)
while read -r t k; do
  [ -n "$t" ] || continue
  if [ $((now - t)) -lt {KEY_LIFETIME_MS} ]; then printf '%s\\n' "$k"; fi
done < "$f"
exit 0
"""

USERS = ("ec2-user", "ubuntu")


def sshd_path() -> str:
    for p in ("/usr/sbin/sshd", shutil.which("sshd") or ""):
        if p and os.path.exists(p):
            return p
    raise RuntimeError("sshd not found: install openssh-server (scripts/bootstrap.sh does)")


def install_script() -> None:
    SCRIPT_DIR.mkdir(parents=True, exist_ok=True)
    os.chmod(SCRIPT_DIR, 0o755)
    if not SCRIPT.exists() or SCRIPT.read_text() != SCRIPT_TEXT:
        tmp = SCRIPT_DIR / ".authorized-keys.tmp"
        tmp.write_text(SCRIPT_TEXT)
        os.chown(tmp, 0, 0)
        os.chmod(tmp, 0o755)
        os.replace(tmp, SCRIPT)


def ensure_users() -> None:
    """OS users for the fake instances: they must exist for sshd; ``*`` unlocks them for key login."""
    for user in USERS:
        try:
            pwd.getpwnam(user)
        except KeyError:
            subprocess.run(["useradd", "-m", "-s", "/bin/bash", user], check=True)
        subprocess.run(["usermod", "-p", "*", user], check=True)


class Sshd:
    """One sshd per fake instance, listening on the instance's private address."""

    def __init__(self, workdir: Path, instance_id: str, address: str, keys_dir: Path, port: int = 22,
                 eic_package: bool = True) -> None:
        self.eic_package = eic_package  # False: an AMI without ec2-instance-connect (pushed keys are ignored)
        self.workdir = workdir / f"sshd-{instance_id}"
        self.instance_id = instance_id
        self.address = address
        self.port = port
        self.keys_dir = keys_dir
        self.proc: Optional[subprocess.Popen] = None
        self.host_key = self.workdir / "ssh_host_ed25519_key"
        self.log = self.workdir / "sshd.log"

    def config_text(self) -> str:
        listen = f"[{self.address}]:{self.port}" if ":" in self.address else f"{self.address}:{self.port}"
        return "\n".join([
            f"ListenAddress {listen}",
            f"HostKey {self.host_key}",
            "PidFile none",
            "AuthorizedKeysFile none",
            *([f"AuthorizedKeysCommand {SCRIPT} {self.keys_dir} %u", "AuthorizedKeysCommandUser nobody"]
              if self.eic_package else []),
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "PermitRootLogin no",
            "AllowTcpForwarding yes",
            "MaxStartups 200:30:400",
            "MaxSessions 100",
            "LogLevel VERBOSE",
            "Subsystem sftp internal-sftp",
            "",
        ])

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        Path("/run/sshd").mkdir(exist_ok=True, mode=0o755)
        self.keys_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.keys_dir, 0o755)
        if not self.host_key.exists():
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.host_key)], check=True)
        cfg = self.workdir / "sshd_config"
        cfg.write_text(self.config_text())
        subprocess.run([sshd_path(), "-t", "-f", str(cfg)], check=True)
        self.proc = subprocess.Popen([sshd_path(), "-D", "-e", "-f", str(cfg)], stdout=subprocess.DEVNULL,
                                     stderr=open(self.log, "ab"), stdin=subprocess.DEVNULL)
        wait_listening(self.address, self.port, self.proc)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc = None

    def host_public_key(self) -> str:
        return Path(str(self.host_key) + ".pub").read_text().split()[:2]


def wait_listening(address: str, port: int, proc: Optional[subprocess.Popen] = None, timeout: float = 10.0) -> None:
    """Poll until ``address:port`` accepts TCP (synchronisation, not a sleep standing in for it)."""
    deadline = time.monotonic() + timeout
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server for {address}:{port} exited with {proc.returncode}")
        s = socket.socket(family, socket.SOCK_STREAM)
        try:
            s.settimeout(0.5)
            s.connect((address, port))
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing listens on {address}:{port} after {timeout} s") from None
            time.sleep(0.02)
        finally:
            s.close()


def wait_path(path: Path, proc: Optional[subprocess.Popen] = None, timeout: float = 10.0) -> None:
    """Poll until a socket or file appears (e.g. ssh-agent's socket)."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process for {path} exited with {proc.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{path} did not appear after {timeout} s")
        time.sleep(0.02)

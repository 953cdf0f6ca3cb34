"""``python -m tests.testbed demo`` runs real ssh/scp/sftp/rsync through eic-proxy on the local bed;
``python -m tests.testbed serve`` starts the bed and prints how to use it by hand (Ctrl-C stops it)."""
from __future__ import annotations

import argparse
import hashlib
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

from .bed import Testbed


def _step(title: str, argv: list[str], env: dict, stdin: bytes = b"") -> subprocess.CompletedProcess:
    t0 = time.monotonic()
    p = subprocess.run(argv, input=stdin, capture_output=True, env=env, timeout=300)
    dt = time.monotonic() - t0
    mark = "ok " if p.returncode == 0 else "FAIL"
    print(f"[{mark}] {title}  ({dt:.2f} s, exit {p.returncode})")
    print(f"       $ {' '.join(shlex.quote(a) for a in argv)}")
    for line in p.stdout.decode(errors="replace").splitlines()[:6]:
        print(f"       | {line}")
    for line in p.stderr.decode(errors="replace").splitlines()[:6]:
        print(f"       ! {line}")
    return p


def demo(size_mib: int) -> int:
    bed = Testbed().start()
    failures = 0
    home: Optional[Path] = None
    try:
        inst = bed.default_world()
        ep = next(iter(bed.aws.endpoints.values()))
        home = Path(tempfile.mkdtemp(prefix="eic-demo-home-"))
        env = bed.env(home)
        print("eic-proxy demo on the local test bed")
        print(f"  fake AWS API   {bed.aws.url}  (moto + EICE actions)")
        print(f"  fake endpoint  {ep['InstanceConnectEndpointId']}  wss://{ep['DnsName']}:443  (TLS, test CA)")
        print(f"  instance       {inst.instance_id}  Name=web-1  {inst.ip}:22  (real sshd, pushed keys valid 60 s)")
        failures += _step("ssh-config --install writes the Host block (the only ssh set-up there is)",
                          [bed.eic_proxy_path(), "ssh-config", "--install", "web-*", "i-*", "--user", "ec2-user"],
                          env).returncode != 0
        cfg = home / ".ssh" / "config"
        own = home / ".ssh" / "eic-proxy.config"
        print(f"  ssh config     {cfg} -> {own}")
        print("".join(f"    {line}\n" for line in own.read_text().splitlines() if not line.startswith("#")))
        host = "web-1"
        ssh = ["ssh", "-F", str(cfg)]
        failures += _step("ssh web-1 runs a remote command (by Name tag)", ssh + [host, "uname -sr; id -un"],
                          env).returncode != 0
        failures += _step("ssh by instance ID, second connection: cached lookup, no Describe calls",
                          ssh + [inst.instance_id, "hostname"], env).returncode != 0
        data = os.urandom(size_mib * 1024 * 1024)
        src = home / "payload.bin"
        src.write_bytes(data)
        back = home / "payload.back"
        t0 = time.monotonic()
        failures += _step(f"scp uploads {size_mib} MiB", ["scp", "-F", str(cfg), str(src), f"{host}:/tmp/payload.bin"],
                          env).returncode != 0
        failures += _step(f"scp downloads {size_mib} MiB",
                          ["scp", "-F", str(cfg), f"{host}:/tmp/payload.bin", str(back)], env).returncode != 0
        same = back.exists() and hashlib.sha256(back.read_bytes()).digest() == hashlib.sha256(data).digest()
        print(f"[{'ok ' if same else 'FAIL'}] sha256 identical after the round trip "
              f"({2 * size_mib / (time.monotonic() - t0):.0f} MiB/s including ssh start-up)")
        failures += not same
        tree = home / "tree"
        (tree / "sub").mkdir(parents=True)
        (tree / "hello.txt").write_text("hello from rsync\n")
        (tree / "sub" / "data.bin").write_bytes(os.urandom(100_000))
        failures += _step("rsync -e ssh copies a tree", ["rsync", "-a", "--stats", "-e", f"ssh -F {cfg}",
                                                          f"{tree}/", f"{inst.instance_id}:/tmp/tree/"], env).returncode != 0
        batch = home / "sftp.batch"
        batch.write_text("ls -l /tmp/tree\nget /tmp/tree/hello.txt " + str(home / "hello.back") + "\n")
        failures += _step("sftp -b lists and fetches", ["sftp", "-F", str(cfg), "-b", str(batch), host],
                          env).returncode != 0
        failures += _step("the per-user helper that served these connections (each tunnel a process of its own)",
                          [bed.eic_proxy_path(), "helper", "status"], env).returncode != 0
        print(f"AWS API calls made by eic-proxy: {bed.aws.count('DescribeInstances')} DescribeInstances, "
              f"{bed.aws.count('DescribeInstanceConnectEndpoints')} DescribeInstanceConnectEndpoints, "
              f"{bed.aws.count('SendSSHPublicKey')} SendSSHPublicKey; "
              f"{sum(1 for h in bed.eice.handshakes if h.status == 101)} tunnels opened")
        print("demo " + ("passed" if not failures else f"FAILED ({failures} step(s))"))
        return 1 if failures else 0
    finally:
        if home is not None:  # the demo's helper would otherwise wait 15 idle minutes for more
            subprocess.run([bed.eic_proxy_path(), "helper", "stop"], env=bed.env(home), capture_output=True)
        bed.stop()
        bed.cleanup()


def serve() -> int:
    bed = Testbed().start()
    try:
        inst = bed.default_world()
        home = Path(tempfile.mkdtemp(prefix="eic-bed-home-"))
        env = bed.env(home)
        cfg = bed.ssh_config(home)
        print("# test bed is up; in another shell:")
        for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION", "AWS_ENDPOINT_URL", "AWS_CA_BUNDLE",
                  "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE", "XDG_DATA_HOME", "XDG_CACHE_HOME",
                  "XDG_CONFIG_HOME", "XDG_STATE_HOME"):
            print(f"export {k}={shlex.quote(env[k])}")
        print(f"ssh -F {cfg} {inst.instance_id}    # instance web-1 at {inst.ip}")
        print("# Ctrl-C stops the bed", flush=True)
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
        return 0
    finally:
        bed.stop()
        bed.cleanup()


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m tests.testbed")
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("demo", help="run ssh, scp, sftp and rsync through eic-proxy and print what happened")
    d.add_argument("--size-mib", type=int, default=32)
    sub.add_parser("serve", help="start the bed and wait")
    args = p.parse_args()
    if args.cmd == "demo":
        return demo(args.size_mib)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    return serve()


if __name__ == "__main__":
    sys.exit(main())

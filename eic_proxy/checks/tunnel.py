"""doctor's checks through the tunnel itself: the push, the handshake, the SSH banner, a real login.

A mixin of ``probes.Doctor``: it uses the facts the AWS checks gathered (``self.facts``).
"""
from __future__ import annotations

import os
import shutil
import subprocess
from typing import TYPE_CHECKING, Any

from eic_proxy.checks.rules import FAIL, PASS, SKIP, Status

if TYPE_CHECKING:
    from eic_proxy.lifecycle.connection import Plan

BANNER_WAIT = 10.0
LOGIN_TIMEOUT = 30.0


class TunnelChecks:
    facts: Any
    opts: Any

    def add(self, name: str, status: Status, detail: str, fix: Any = None) -> bool:  # provided by Doctor
        raise NotImplementedError

    def skip_rest(self, names: list[str], why: str) -> None:  # provided by Doctor
        raise NotImplementedError

    def _plan(self) -> Plan:
        """The connection as ``connect`` would prepare it, from what the checks found (no second lookup);
        the push happens here, once."""
        if self.facts.plan is None:
            from eic_proxy.control.locate import Located
            from eic_proxy.lifecycle.connection import prepare

            self.facts.plan = prepare(self.opts, aws=self.facts.aws, located=Located(self.facts.target, self.facts.endpoint),
                                     audited=False)
        return self.facts.plan

    def check_push(self) -> bool:
        if not self.opts.push:
            return self.add("push", SKIP, "--no-push: you bring a key the instance trusts")
        plan = self._plan()
        return self.add("push", PASS, f"key pushed for {self.opts.os_user}@{self.facts.target.instance_id}"
                        + (f" (request {plan.push_request_id})" if plan.push_request_id else ""))

    def check_handshake(self) -> bool:
        from eic_proxy.lifecycle.connection import probe

        result = probe(self._plan(), BANNER_WAIT)
        self.add("handshake", PASS, f"WebSocket to {self.facts.endpoint.endpoint_id} open in {result.opened_in * 1000:.0f} ms")
        if result.error is not None:
            self.add("ssh banner", FAIL, result.error.message, result.error.hint)
            self.skip_rest(["ssh login"], "needs the SSH banner")
            return True
        first = result.first
        port, ip = self.opts.port, self.facts.target.ip
        if first is None:
            self.add("ssh banner", FAIL, f"the endpoint could not reach {ip}:{port}",
                     "check the security groups above, the instance's own firewall, and that sshd listens "
                     f"on port {port}")
            self.skip_rest(["ssh login"], "needs the SSH banner")
            return True
        if not first.startswith(b"SSH-"):
            self.add("ssh banner", FAIL, f"{ip}:{port} answered, but not with an SSH banner"
                     + (f" ({first[:40]!r})" if first else " (it waits for the client to speak)"),
                     "is --remote-port right? ssh needs an SSH server there")
            self.skip_rest(["ssh login"], "needs the SSH banner")
            return True
        banner = first.split(b"\r\n", 1)[0].decode("ascii", "replace")
        self.add("ssh banner", PASS, banner)
        self.check_login()
        return True

    def check_login(self) -> bool:
        if shutil.which("ssh") is None:
            return self.add("ssh login", SKIP, "no ssh client on this machine")
        if not self.opts.push or self.opts.identity:
            return self.add("ssh login", SKIP, "only checked with the managed key")
        from eic_proxy.keys.lifecycle import make_key_manager

        key = make_key_manager(self.opts).ensure()
        identity = key.private_path or key.public_path
        opts = self.opts
        from eic_proxy.sshblock import config_path, executable_argv, quote_command

        proxy = executable_argv() + ["connect", "%h", "%p", "%r"]
        for flag, value in (("--region", self.facts.aws.region), ("--profile", opts.profile),
                            ("--eice-id", self.facts.endpoint.endpoint_id),
                            ("--max-tunnel-duration", opts.max_tunnel_duration)):
            if value:
                proxy += [flag, str(value)]
        argv = ["ssh", "-F", os.devnull, "-T", "-o", "BatchMode=yes", "-o", "ProxyCommand=" + quote_command(proxy),
                "-o", f"IdentityFile={config_path(identity)}", "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none",
                "-o", "PreferredAuthentications=publickey", "-o", "StrictHostKeyChecking=no",
                "-o", f"UserKnownHostsFile={os.devnull}", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=20",
                "-p", str(opts.port), "-l", opts.os_user, self.facts.target.instance_id, "exit 0"]
        try:
            p = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=LOGIN_TIMEOUT)
        except subprocess.TimeoutExpired:
            return self.add("ssh login", FAIL, f"ssh did not finish within {LOGIN_TIMEOUT:.0f} s",
                            "retry with `ssh -vvv`")
        err = p.stderr.decode(errors="replace").strip().splitlines()
        if p.returncode == 0:
            return self.add("ssh login", PASS, f"logged in as {opts.os_user} with the pushed key")
        last = err[-1] if err else f"ssh exited {p.returncode}"
        if any("Permission denied" in line for line in err):
            return self.add("ssh login", FAIL, f"the instance refused the pushed key for {opts.os_user!r}: {last}",
                            "either the instance lacks the EC2 Instance Connect package (install it: "
                            "`sudo dnf install ec2-instance-connect` / `sudo apt install ec2-instance-connect`), "
                            f"or {opts.os_user!r} is not a user there (--os-user; AMI defaults: ec2-user on "
                            "Amazon Linux, ubuntu on Ubuntu, admin on Debian)")
        return self.add("ssh login", FAIL, last, "retry with `ssh -vvv` to see where it stops")



"""First contact without trust-on-first-use: the instance's host keys from its console, checked in the tunnel.

For connections through the generated Host block (``StrictHostKeyChecking yes``, known_hosts per
instance ID), before ssh can look at the host key:
- keys already known for the instance: nothing to fetch (the warm path makes no call);
- otherwise (``host-keys = verify`` or ``strict``) one ``GetConsoleOutput``; the keys cloud-init printed
  become the instance's known_hosts, so ssh itself refuses any other key;
- no keys in the console: ``strict`` refuses; ``verify`` says so in one line and trusts the key the
  server presents (recorded from its key-exchange reply, before ssh reads known_hosts); ``tofu``
  does that without the API call.
The guard also reads the server's key-exchange reply as it passes: a key the console did not list
ends the tunnel with our line before ssh gets the reply.
"""
from __future__ import annotations

import base64
import logging
from dataclasses import dataclass, field
from typing import Any, Optional

from eic_proxy.errors import EicProxyError, HostKeyError
from eic_proxy.store import knownhosts
from eic_proxy.tunnel.hostkeys import KexSniffer, parse_console

log = logging.getLogger(__name__)




@dataclass
class HostKeyGuard:
    """One connection's check of the key the server presents (``inspect`` sees every byte to ssh)."""

    instance_id: str
    host: str
    trusted: set[bytes] = field(default_factory=set)
    record_first_use: bool = False
    note: str = ""
    sniffer: KexSniffer = field(default_factory=KexSniffer)

    def inspect(self, data: bytes) -> Optional[EicProxyError]:
        if self.sniffer.done:
            return None
        self.sniffer.feed(data)
        key = self.sniffer.host_key
        if key is None:
            return None
        if self.record_first_use:
            knownhosts.record_keys(self.instance_id, [key.line], "first-use", self.note)
            return None
        if key.blob in self.trusted or key.key_type.endswith("-cert-v01@openssh.com"):
            return None  # certificates are ssh's own business (@cert-authority)
        return HostKeyError(
            f"{self.instance_id} presented a host key ({key.key_type} {key.fingerprint}) that its console output "
            "does not list; the connection was stopped before ssh used it",
            hint=f"if the instance was really rebuilt: `eic-proxy known-hosts {self.host} --refresh`; otherwise "
                 "do not connect: something may be in the path")


def prepare(aws: Any, instance_id: str, host: str, mode: str, say: Any) -> HostKeyGuard:
    """The guard for a connection to ``instance_id``, fetching its console on first contact."""
    known = knownhosts.known_keys(instance_id)
    if known:
        return HostKeyGuard(instance_id, host, {_blob(b64) for _, b64 in known})
    if mode == "tofu":
        return HostKeyGuard(instance_id, host, record_first_use=True, note="host-keys = tofu")
    keys, why = console_keys(aws, instance_id)
    if keys:
        knownhosts.record_keys(instance_id, [k.line for k in keys], "console")
        return HostKeyGuard(instance_id, host, {k.blob for k in keys})
    if mode == "strict":
        raise HostKeyError(f"cannot verify the host key of {instance_id}: {why}",
                           hint="host-keys = strict refuses unverified keys; use host-keys = verify to trust "
                                "the first key seen, or fix the cause above")
    say(f"eic-proxy: warning: the host key of {instance_id} is not verified: {why}; trusting the key it "
        "presents now (host-keys = strict would refuse)")
    return HostKeyGuard(instance_id, host, record_first_use=True, note=why)


def console_keys(aws: Any, instance_id: str) -> tuple[list[Any], str]:
    """The host keys in the instance's console output, or ([], why there are none)."""
    from eic_proxy.aws.client import api_errors
    from eic_proxy.aws.errors import translate
    from eic_proxy.errors import AccessDenied

    ec2 = aws.client("ec2")
    try:
        try:
            resp = ec2.get_console_output(InstanceId=instance_id, Latest=True)
        except api_errors() as exc:
            code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
            if not code.startswith(("Unsupported", "InvalidParameter")):
                raise
            resp = ec2.get_console_output(InstanceId=instance_id)  # Latest=true is Nitro-only
    except api_errors() as exc:
        err = translate(exc, "reading the console output", aws.profile)
        if isinstance(err, AccessDenied):
            return [], "no permission for ec2:GetConsoleOutput (`eic-proxy policy` includes it)"
        return [], f"the console output could not be read ({err.message})"
    raw = resp.get("Output") or ""
    try:
        text = base64.b64decode(raw).decode("utf-8", "replace") if raw else ""
    except ValueError:
        text = str(raw)
    if not text.strip():
        return [], "the console output is empty (a new instance's console can take minutes to appear)"
    parsed = parse_console(text)
    return parsed.keys, parsed.why_none


def _blob(b64: str) -> bytes:
    try:
        return base64.b64decode(b64)
    except ValueError:
        return b""

"""``--start``: start a stopped instance and wait until it runs, with a progress line on stderr.

Waiting for sshd is done by the caller through the tunnel itself (the endpoint's "Unable to connect
to target" means "not yet"), so the probe costs no extra connection once sshd answers.
"""
from __future__ import annotations

import sys
import time
from typing import Any, Callable, Optional

from eic_proxy.aws.client import api_errors
from eic_proxy.aws.errors import translate
from eic_proxy.aws.seams import AwsApi
from eic_proxy.control.resolve import describe_all, target_from_instance
from eic_proxy.errors import InstanceStateError, InstanceWaitTimeout
from eic_proxy.model import Target

POLL_INTERVAL = 2.0


class Progress:
    """One status line on stderr, rewritten in place on a terminal, one line per step otherwise."""

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.started = time.monotonic()
        self._open = False

    def say(self, text: str) -> None:
        line = f"eic-proxy: {text} ({time.monotonic() - self.started:.0f} s)"
        try:
            if self.tty:
                self.stream.write("\r\x1b[K" + line)
                self._open = True
            else:
                self.stream.write(line + "\n")
            self.stream.flush()
        except OSError:
            pass

    def done(self) -> None:
        if self._open:
            try:
                self.stream.write("\n")
                self.stream.flush()
            except OSError:
                pass
            self._open = False


def start_and_wait(aws: AwsApi, ec2: Any, target: Target, deadline: float, progress: Progress,
                   sleep: Callable[[float], None] = time.sleep) -> Target:
    """StartInstances (unless already pending), then poll until running; the running Target."""
    label = target.instance_id + (f" ({target.name})" if target.name else "")
    if target.state == "stopping":
        progress.say(f"{label} is stopping; waiting for it to stop before starting it")
        target = _wait_for(aws, ec2, target, {"stopped"}, deadline, progress, sleep, "to stop")
    if target.state == "stopped":
        progress.say(f"starting {label}")
        try:
            ec2.start_instances(InstanceIds=[target.instance_id])
        except api_errors() as exc:
            raise translate(exc, f"starting {target.instance_id}", aws.profile) from exc
    if target.state != "running":
        target = _wait_for(aws, ec2, target, {"running"}, deadline, progress, sleep, "to run")
    progress.say(f"{label} is running")
    return target


def _wait_for(aws: AwsApi, ec2: Any, target: Target, states: set[str], deadline: float, progress: Progress,
              sleep: Callable[[float], None], what: str) -> Target:
    while True:
        current = describe(aws, ec2, target.instance_id)
        if current is not None and current.state in states:
            return current
        state = current.state if current else "gone"
        if state in ("terminated", "shutting-down", "gone"):
            raise InstanceStateError(f"instance {target.instance_id} is {state}", hint="pick another instance")
        if time.monotonic() >= deadline:
            raise InstanceWaitTimeout(f"instance {target.instance_id} is still {state} after waiting for it {what}",
                                      hint="raise --start-timeout, or check the instance in the console")
        progress.say(f"waiting for {target.instance_id} {what}: {state}")
        sleep(POLL_INTERVAL)


def describe(aws: AwsApi, ec2: Any, instance_id: str) -> Optional[Target]:
    try:
        found = describe_all(ec2, InstanceIds=[instance_id])
    except api_errors() as exc:
        raise translate(exc, f"looking up {instance_id}", aws.profile) from exc
    return target_from_instance(found[0]) if found else None

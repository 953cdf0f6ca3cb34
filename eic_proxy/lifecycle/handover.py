"""A prepared connection, handed from the process that prepared it to the one that carries the tunnel.

Under the helper, each connection's process forks a short-lived one that does the preparing (command
line, settings, location, key push, host keys) and hands over a ``Plan``; the long-lived process then
only opens the WebSocket and pumps. What the preparing touched (argparse, config and cache files, the
key, botocore on a cold connection) is gone with it instead of staying copied in every open tunnel's
memory (bench/RESULTS.md: ~1.8 MiB per tunnel).

The plan crosses a pipe between two processes of ours that share a parent: pickled, never written
anywhere. It holds the credentials the URL is signed with, like the process that had them.
"""
from __future__ import annotations

import pickle
from dataclasses import dataclass
from typing import Any, Optional

from eic_proxy.aws.sharedfiles import StaticCredentials
from eic_proxy.config import ConnectOptions


@dataclass(frozen=True)
class AwsSettings:
    """What the tunnel needs of ``aws.client.Aws``: its settings, and the credentials it resolved."""

    profile: Optional[str]
    region: str
    use_fips: bool
    ca_bundle: Optional[str]
    credentials: StaticCredentials
    connect_timeout: float
    read_timeout: float
    use_cache: bool


@dataclass(frozen=True)
class Plan:
    opts: ConnectOptions
    located: Any  # locate.Located
    aws: AwsSettings
    verbose: int
    pushed_at: Optional[float]
    push_request_id: Optional[str]
    guard: Any  # hostkey_guard.HostKeyGuard, or None
    key_used: bool  # our key was pushed: the tunnel's end is the moment to rotate it if due
    clock_offset: Optional[float] = None  # AWS's time minus ours, when a refusal showed this clock is off


class PreparedAws:
    """``Aws`` for the carrying process: the handed-over settings and credentials at once, and a real
    ``Aws`` (made on first need, with the same settings) for what only the rare paths ask: a location
    that proved stale, the console of an instance a reconnect moved to."""

    def __init__(self, settings: AwsSettings) -> None:
        self._settings = settings
        self._real: Any = None
        self.profile = settings.profile
        self.region = settings.region
        self.use_fips = settings.use_fips
        self.ca_bundle = settings.ca_bundle

    def frozen_credentials(self) -> StaticCredentials:
        return self._settings.credentials

    def __getattr__(self, name: str) -> Any:
        if self._real is None:
            from eic_proxy.aws.client import make_aws

            s = self._settings
            self._real = make_aws(s.profile, s.region, s.connect_timeout, s.read_timeout, s.use_cache)
        return getattr(self._real, name)


def plan_of(session: Any, verbose: int) -> Plan:
    """The plan of a session that is ready to open its WebSocket."""
    aws = session.aws
    creds = aws.frozen_credentials()
    return Plan(opts=session.opts, located=session.located,
                aws=AwsSettings(aws.profile, aws.region, bool(aws.use_fips), aws.ca_bundle,
                                StaticCredentials(creds.access_key, creds.secret_key, creds.token),
                                aws.connect_timeout, aws.read_timeout, aws.use_cache),
                verbose=verbose, pushed_at=session.pushed_at, push_request_id=session.push_request_id,
                guard=session.guard, key_used=session.key_used, clock_offset=session.signing_offset())


def session_of(plan: Plan) -> Any:
    """The carrying process's ``Session``: located and pushed already."""
    from eic_proxy.lifecycle.session import Session

    session = Session(plan.opts, aws=PreparedAws(plan.aws), located=plan.located)
    session.pushed_at = plan.pushed_at
    session.push_request_id = plan.push_request_id
    session.guard = plan.guard
    session.key_used = plan.key_used
    session.clock_offset = plan.clock_offset
    return session


def dumps(message: object) -> bytes:
    return pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)


def loads(data: bytes) -> object:
    return pickle.loads(data)  # noqa: S301 - from our own forked process, through a pipe only we hold

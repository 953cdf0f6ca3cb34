"""A prepared connection, handed from the process that prepared it to the one that carries the tunnel.

Under the helper, each connection's process forks a short-lived one that does the preparing (command
line, settings, location, key push, host keys) and hands over a ``connection.Plan``; the long-lived process then
only opens the WebSocket and pumps. What the preparing touched (argparse, config and cache files, the
key, botocore on a cold connection) is gone with it instead of staying copied in every open tunnel's
memory (bench/RESULTS.md: ~1.8 MiB per tunnel).

The plan crosses a pipe between two processes of ours that share a parent: pickled, never written
anywhere. It holds the credentials the URL is signed with, like the process that had them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from eic_proxy.aws.sharedfiles import StaticCredentials

TYPE_CHECKING = False
if TYPE_CHECKING:
    from eic_proxy.aws.client import Aws


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


class PreparedAws:
    """``AwsApi`` for the carrying process: the handed-over settings and credentials at once, and a real
    ``Aws`` (made on the first ``client()``, with the same settings) for what only the rare paths ask: a
    location that proved stale, the console of an instance a reconnect moved to."""

    def __init__(self, settings: AwsSettings) -> None:
        self._settings = settings
        self._real: Optional[Aws] = None
        self.profile = settings.profile
        self.region = settings.region
        self.use_fips = settings.use_fips
        self.ca_bundle = settings.ca_bundle
        self.connect_timeout = settings.connect_timeout
        self.read_timeout = settings.read_timeout
        self.use_cache = settings.use_cache
        self.clock_offset: Optional[float] = None

    def frozen_credentials(self) -> StaticCredentials:
        return self._settings.credentials

    def client(self, service: str, max_attempts: int = 3) -> Any:
        if self._real is None:
            from eic_proxy.aws.client import make_aws

            s = self._settings
            self._real = make_aws(s.profile, s.region, s.connect_timeout, s.read_timeout, s.use_cache)
        return self._real.client(service, max_attempts)


def dumps(message: object) -> bytes:
    import pickle  # only the helper's processes hand plans over (an in-process connection never loads it)

    return pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)


def loads(data: bytes) -> object:
    import pickle

    return pickle.loads(data)  # noqa: S301 - from our own forked process, through a pipe only we hold

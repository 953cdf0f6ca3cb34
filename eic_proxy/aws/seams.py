"""The two seams between the connection and AWS, as protocols: what the lifecycle asks of an AWS client
(``aws.client.Aws``, or ``handover.PreparedAws`` in the process a prepared connection was handed to) and
of a set of credentials (botocore's, or ``sharedfiles.StaticCredentials``). Fakes in tests implement the
same."""
from __future__ import annotations

from typing import Any, Optional, Protocol


class Credentials(Protocol):
    """What the SigV4 signer reads: botocore's ``ReadOnlyCredentials`` and ``StaticCredentials`` both fit."""

    @property
    def access_key(self) -> str: ...

    @property
    def secret_key(self) -> str: ...

    @property
    def token(self) -> Optional[str]: ...


class AwsApi(Protocol):
    """An AWS account and region to work in: settings, credentials, and API clients."""

    profile: Optional[str]
    region: str
    connect_timeout: float
    read_timeout: float
    use_cache: bool
    clock_offset: Optional[float]  # AWS's time minus ours, once a refusal's Date showed it

    @property
    def use_fips(self) -> bool: ...

    @property
    def ca_bundle(self) -> Optional[str]: ...

    def frozen_credentials(self) -> Credentials: ...

    def client(self, service: str, max_attempts: int = 3) -> Any: ...

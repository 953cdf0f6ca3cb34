"""botocore session and clients: profile, region, endpoint overrides, timeouts, and error translation.

botocore is imported lazily and boto3 not at all: the connect path pays only for what it uses.
Endpoint overrides (``AWS_ENDPOINT_URL``, ``AWS_ENDPOINT_URL_EC2``, …), ``AWS_CA_BUNDLE`` and
``use_fips_endpoint`` are botocore's own settings; we read them, we never invent our own.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
from typing import TYPE_CHECKING, Any, Iterator, Optional

from eic_proxy.aws.errors import translate
from eic_proxy.errors import (
    CredentialsError,
    EicProxyError,
    UsageError,
)

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)

DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_READ_TIMEOUT = 30.0


def _never_prompt(*_args: Any, **_kwargs: Any) -> str:
    # botocore would call getpass() for an MFA token; inside a ProxyCommand that would read the
    # user's terminal or hang. Fail instead and tell the user how to get credentials first.
    raise CredentialsError(
        "this profile needs an MFA code, and eic-proxy never prompts (it runs inside ssh)",
        hint="get temporary credentials first, e.g. `aws sts get-session-token` or an aws-vault/granted shell",
    )


class Aws:
    """The AWS settings every step needs, and a botocore session made only when one is needed.

    A warm connection reads region, CA bundle, FIPS flag and credentials through
    ``aws.sharedfiles.SharedSettings`` and never imports botocore; API calls, and profiles whose
    credentials botocore has to resolve (roles, SSO, processes), create the session on first use.
    """

    def __init__(self, profile: Optional[str] = None, region: Optional[str] = None,
                 connect_timeout: float = DEFAULT_CONNECT_TIMEOUT, read_timeout: float = DEFAULT_READ_TIMEOUT,
                 use_cache: bool = True) -> None:
        from eic_proxy.aws.sharedfiles import SharedSettings

        self.profile = profile
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.use_cache = use_cache
        self._session: Any = None
        self._resolved: Optional[tuple[Any, Any]] = None
        self.clock_offset: Optional[float] = None  # AWS's time minus ours, once a refusal's Date showed it
        self._clients: dict[tuple[str, int], Any] = {}
        self.shared = SharedSettings(profile)
        self.region = region or (self.shared.region if self.shared.ok else None) or self._session_region()

    @property
    def session(self) -> Any:
        if self._session is None:
            self._session = _make_session(self.profile)
        return self._session

    def _session_region(self) -> str:
        region = os.environ.get("AWS_REGION") or self.session.get_config_variable("region")
        if not region:
            raise UsageError("no AWS region configured",
                             hint="pass --region, set AWS_REGION, or set `region` in the profile")
        return region

    @property
    def use_fips(self) -> bool:
        if self.shared.ok:
            return self.shared.use_fips
        from botocore.utils import ensure_boolean

        return ensure_boolean(self.session.get_config_variable("use_fips_endpoint") or False)

    @property
    def ca_bundle(self) -> Optional[str]:
        """``AWS_CA_BUNDLE`` or the profile's ``ca_bundle``; used for the WebSocket TLS as well."""
        if self.shared.ok:
            return self.shared.ca_bundle
        return self.session.get_config_variable("ca_bundle")

    def client(self, service: str, max_attempts: int = 3) -> Any:
        """A botocore client, made once per (service, max_attempts) and then reused: creating one loads
        its service model, and doctor, the listener and --start ask for the same clients many times.
        ``max_attempts=1`` when the caller runs its own retry loop."""
        key = (service, max_attempts)
        if key not in self._clients:
            require_aws()
            self._clients[key] = self._new_client(service, max_attempts)
        return self._clients[key]

    def _new_client(self, service: str, max_attempts: int) -> Any:
        from botocore.config import Config

        cfg = Config(
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
            retries={"mode": "standard", "max_attempts": max_attempts},
            user_agent_extra="eic-proxy",
        )
        known: tuple[type[BaseException], ...] = (*api_errors(), ValueError)  # a bad endpoint URL: ValueError
        self.resolved_credentials()  # bounded: a credential source that never answers is said, then given up
        try:
            client = self.session.create_client(service, region_name=self.region, config=cfg)
            client.meta.events.register_first("needs-retry", self._retry_signed_at_aws_time)
            if not _proxy_env():
                return client
            # Only with proxy settings: apply our NO_PROXY reading (CIDR, *.suffix, :port) over urllib's.
            from botocore.utils import get_environ_proxies

            from eic_proxy.aws.proxy import botocore_proxies

            url = client.meta.endpoint_url
            ours = botocore_proxies(url)
            theirs = {k: v for k, v in get_environ_proxies(url).items() if k == url.split(":", 1)[0]}
            if ours == theirs:
                return client
            return self.session.create_client(service, region_name=self.region, config=cfg.merge(Config(proxies=ours)))
        except EicProxyError:
            raise
        except known as exc:
            raise translate(exc, f"creating the {service} client") from exc

    def frozen_credentials(self) -> Any:
        """Credentials for presigning; raises CredentialsError with the command that fixes it.

        Written-down credentials and cached temporary ones come without botocore; the rest from
        botocore's chain (whose temporary results are then cached for the next process).
        """
        from eic_proxy.aws.sharedfiles import cached_credentials, remember_credentials

        if self.shared.ok:
            fast = self.shared.static_credentials() or (cached_credentials(self.shared) if self.use_cache else None)
            if fast is not None:
                return fast
        creds, frozen = self.resolved_credentials()
        if frozen is None or not frozen.access_key:
            raise CredentialsError(
                "no AWS credentials found" + (f" for profile {self.profile!r}" if self.profile else ""),
                hint=self._login_hint(),
            )
        if self.shared.ok and self.use_cache:
            remember_credentials(self.shared, creds, frozen)
        return frozen

    def resolved_credentials(self) -> tuple[Any, Any]:
        """(credentials, frozen credentials) from botocore's chain, resolved once per session within
        ``EIC_PROXY_CREDENTIALS_TIMEOUT`` (aws/credential_wait.py); (None, None) when there are none."""
        if self._resolved is not None:
            return self._resolved
        require_aws()
        from eic_proxy.aws import credential_wait

        session = self.session
        credential_wait.track_processes(session)

        def work() -> tuple[Any, Any]:
            creds = session.get_credentials()
            return creds, (creds.get_frozen_credentials() if creds is not None else None)

        profile = self.profile or getattr(session, "profile", None)  # AWS_PROFILE, as botocore read it
        try:
            self._resolved = credential_wait.resolve(work, profile, credential_wait.source_of(session, profile))
        except EicProxyError:
            raise
        except api_errors() as exc:
            raise translate(exc, "loading AWS credentials", self.profile) from exc
        return self._resolved

    def _retry_signed_at_aws_time(self, response: Any = None, attempts: int = 1, **_kwargs: Any) -> Optional[int]:
        """botocore's needs-retry hook: a call refused for its signing time, whose response's Date says
        AWS's time, is signed again at that time, once (as other AWS SDKs correct clock skew), with one
        warning saying by how much this computer's clock is off. A call made alongside (the key's push
        while the endpoint is looked up) that was signed before the correction is signed again too."""
        if response is None:
            return None
        from eic_proxy.clock import http_date, is_time_refusal, offset_from, say_corrected

        http, parsed = response
        error = (parsed or {}).get("Error") or {}
        if not is_time_refusal(str(error.get("Code") or ""), str(error.get("Message") or "")):
            return None
        if self.clock_offset is not None:
            return 0 if attempts == 1 else None
        offset = offset_from(http_date(str(getattr(http, "headers", {}).get("Date", ""))))
        if offset is None:
            return None
        self.clock_offset = offset
        sign_with_offset(offset)
        say_corrected(offset, "AWS's")
        return 0  # retry at once

    def _login_hint(self) -> str:
        p = f" --profile {self.profile}" if self.profile else ""
        return f"run `aws configure{p}` or `aws sso login{p}`, or set AWS_PROFILE / AWS_ACCESS_KEY_ID"


def _proxy_env() -> bool:
    return any(os.environ.get(k) for k in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"))


class NeedsAws(BaseException):
    """A botocore session was wanted while ``without_aws()`` was on. A BaseException, so that no
    handler of AWS or other failures on the way takes it for one: it unwinds to ``without_aws``'s caller."""


_without_aws = False


@contextlib.contextmanager
def without_aws() -> Iterator[None]:
    """Within: any AWS call, or credentials only botocore can resolve, raises ``NeedsAws`` instead.
    The helper's connection process prepares in place only what needs nothing of AWS (everything
    cached); the rest goes to a preparer it forks, so botocore's memory never stays in a tunnel's process."""
    global _without_aws
    _without_aws = True
    try:
        yield
    finally:
        _without_aws = False


def require_aws() -> None:
    """Before work that leads to AWS (a claim of a lookup or push others would wait for): NeedsAws
    now, within ``without_aws``, rather than once the claim is written."""
    if _without_aws:
        raise NeedsAws()


_spare: Optional[tuple[int, Any]] = None  # (the helper's pid, a botocore Session nothing was read into)
_spare_lock = threading.Lock()  # (a carrier's tunnels may make sessions in threads at once)


def make_spare_session() -> None:
    """In the helper, once it has loaded botocore (while idle): a botocore Session with its ~125
    built-in handlers registered — 12 ms of a first connection's CPU — and nothing read yet: no profile,
    config file or credentials (its settings read ``os.environ`` when asked, which a forked connection
    has made its own). Each process forked from the helper takes it once (``_make_session``)."""
    global _spare
    import botocore.session

    _spare = (os.getpid(), botocore.session.Session())


def _blank_session(profile: Optional[str]) -> Any:
    """The helper's spare session (in a process forked from it, once), or a new one."""
    global _spare
    with _spare_lock:
        spare = _spare
        if spare is not None and spare[0] != os.getpid():  # (the helper keeps its own for the next forks)
            _spare = None
        else:
            spare = None
    if spare is None:
        import botocore.session

        return botocore.session.Session(profile=profile)
    session = spare[1]
    if profile is not None:
        session.set_config_variable("profile", profile)  # what Session(profile=) does
    return session


def _make_session(profile: Optional[str]) -> Any:
    require_aws()
    import botocore.exceptions

    try:
        session = _blank_session(profile)
        from eic_proxy.aws.models import use_fast_data_loader

        use_fast_data_loader(session)
        session.get_config_variable("region")  # reads the profile: a missing one fails here
    except botocore.exceptions.ProfileNotFound as exc:
        raise UsageError(f"AWS profile {profile or exc.kwargs.get('profile')!r} does not exist",
                         hint="check ~/.aws/config, or run `aws configure --profile NAME`") from exc
    try:
        provider = session.get_component("credential_provider").get_provider("assume-role")
        provider._prompter = _never_prompt  # noqa: SLF001 - botocore offers no public hook for this
    except Exception:  # pragma: no cover - botocore layout changed; prompting is still guarded by no-tty
        log.debug("could not disable the MFA prompter")
    return session


def make_aws(profile: Optional[str] = None, region: Optional[str] = None,
             connect_timeout: float = DEFAULT_CONNECT_TIMEOUT, read_timeout: float = DEFAULT_READ_TIMEOUT,
             use_cache: bool = True) -> Aws:
    return Aws(profile, region, connect_timeout, read_timeout, use_cache)


def api_errors() -> tuple[type[BaseException], ...]:
    """What an AWS API call may raise that ``translate`` knows: botocore's errors and the network's.

    Used as ``except api_errors() as exc`` so that anything else, a bug of ours, is not dressed up as
    an "AWS error" but reaches ``cli.main`` as an internal error (exit 70, traceback with -v).
    Before botocore was imported none of its errors can have been raised: botocore is not imported just
    to look (a connection prepared without AWS, ``NeedsAws`` passing by, must stay without it).
    """
    if "botocore.exceptions" not in sys.modules:
        return (OSError,)
    import botocore.exceptions as bx

    return bx.BotoCoreError, bx.ClientError, OSError


def sign_with_offset(offset: float) -> None:
    """botocore signs at our time plus ``offset`` from now on (its signer asks ``get_current_datetime``)."""
    import datetime as dt

    import botocore.auth

    real = getattr(botocore.auth, "_eic_real_now", botocore.auth.get_current_datetime)
    botocore.auth._eic_real_now = real
    botocore.auth.get_current_datetime = lambda: real() + dt.timedelta(seconds=offset)

"""Region, CA bundle, FIPS flag and credentials from the standard AWS settings — without botocore.

A warm connection needs only these four things, and importing botocore costs more than the whole
rest of the connection (bench/RESULTS.md). This module reads the environment and the shared
``config``/``credentials`` files the way botocore does, and says "don't know" (None) whenever a
profile needs botocore's machinery (roles, SSO, ``credential_process``, web identity, containers,
instance metadata) or a file does not parse; the caller then falls back to botocore. It never
invents a setting of its own.

Temporary credentials that botocore resolved (SSO, assumed roles, ``credential_process``) can be
kept in a user-only cache until 5 minutes before they expire, as the AWS CLI does in
``~/.aws/cli/cache``: without it every connection of an SSO user pays for botocore plus a
GetRoleCredentials call.
"""
from __future__ import annotations

import configparser
import hashlib
import os
import time
from typing import Any, NamedTuple, Optional

# Keys that make a profile's credentials botocore's business (resolved by a provider, not read).
_PROVIDER_KEYS = ("role_arn", "source_profile", "credential_source", "credential_process",
                  "web_identity_token_file", "sso_session", "sso_start_url", "sso_account_id", "sso_role_name",
                  "login_session")
CREDENTIALS_CACHE_MARGIN = 300.0  # a cached temporary credential is dropped this long before it expires


class StaticCredentials(NamedTuple):
    """The shape presign_url needs; botocore's ReadOnlyCredentials has the same fields."""

    access_key: str
    secret_key: str
    token: Optional[str] = None


def _truthy(value: Optional[str]) -> bool:
    return (value or "").strip().lower() == "true"


class SharedSettings:
    """The environment plus the profile's sections of the shared files, as botocore would read them."""

    def __init__(self, profile: Optional[str], environ: Optional[dict[str, str]] = None) -> None:
        self.env = os.environ if environ is None else environ
        self.explicit_profile = profile
        self.profile = profile or self.env.get("AWS_PROFILE") or self.env.get("AWS_DEFAULT_PROFILE") or "default"
        self.ok = True  # False: a file did not parse, so nothing here may be trusted
        names = ("default", "profile default") if self.profile == "default" else (f"profile {self.profile}",)
        self.config = self._section(self.env.get("AWS_CONFIG_FILE") or "~/.aws/config", *names)
        self.credentials = self._section(self.env.get("AWS_SHARED_CREDENTIALS_FILE") or "~/.aws/credentials",
                                         self.profile)
        named = profile is not None or self.profile != "default"
        if named and self.config is None and self.credentials is None:
            self.ok = False  # botocore raises ProfileNotFound; let it say so

    def _section(self, path: str, *names: str) -> Optional[dict[str, str]]:
        """The first of the section ``names`` in the file at ``path``; None when there is none."""
        parser = configparser.RawConfigParser(strict=False, interpolation=None)
        try:
            parser.read(os.path.expanduser(path), encoding="utf-8")
        except (configparser.Error, UnicodeDecodeError, OSError):
            self.ok = False
            return None
        sections = {" ".join(s.split()): s for s in parser.sections()}  # botocore tolerates extra blanks
        for name in names:
            if name in sections:
                return {k: v.strip() for k, v in parser.items(sections[name])}
        return None

    def value(self, key: str, env: str) -> Optional[str]:
        """A config-file variable with its environment override (``AWS_CA_BUNDLE`` over ``ca_bundle``)."""
        return self.env.get(env) or (self.config or {}).get(key) or None

    @property
    def region(self) -> Optional[str]:
        # AWS_REGION is the SDK-wide standard; botocore itself reads only AWS_DEFAULT_REGION.
        return self.env.get("AWS_REGION") or self.value("region", "AWS_DEFAULT_REGION")

    @property
    def ca_bundle(self) -> Optional[str]:
        return self.value("ca_bundle", "AWS_CA_BUNDLE")

    @property
    def use_fips(self) -> bool:
        return _truthy(self.value("use_fips_endpoint", "AWS_USE_FIPS_ENDPOINT"))

    def static_credentials(self) -> Optional[StaticCredentials]:
        """Credentials that are simply written down (environment or shared files); None otherwise.

        Follows botocore's order: environment (unless a profile was named explicitly), then web
        identity and role/SSO/process profiles (→ None, botocore's job), then the credentials file,
        then the config file.
        """
        env = self.env
        if self.explicit_profile is None and env.get("AWS_ACCESS_KEY_ID"):
            if not env.get("AWS_SECRET_ACCESS_KEY"):
                return None  # botocore reports the partial credentials
            return StaticCredentials(env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"],
                                     env.get("AWS_SESSION_TOKEN") or env.get("AWS_SECURITY_TOKEN") or None)
        if env.get("AWS_WEB_IDENTITY_TOKEN_FILE") and env.get("AWS_ROLE_ARN"):
            return None
        sections = [s for s in (self.credentials, self.config) if s is not None]
        if any(key in s for s in sections for key in _PROVIDER_KEYS):
            return None
        for section in sections:
            akid, secret = section.get("aws_access_key_id"), section.get("aws_secret_access_key")
            if akid and secret:
                return StaticCredentials(akid, secret,
                                         section.get("aws_session_token") or section.get("aws_security_token"))
            if akid or secret:
                return None
        return None

    def _chain(self) -> list[dict[str, str]]:
        """The sections botocore follows from this profile: ``source_profile`` hops and the ``sso-session``."""
        path = self.env.get("AWS_CONFIG_FILE") or "~/.aws/config"
        out, seen, section = [], {self.profile}, self.config or {}
        for _ in range(10):
            if section.get("sso_session"):
                out.append(self._section(path, f"sso-session {section['sso_session']}") or {})
            source = section.get("source_profile")
            if not source or source in seen:
                break
            seen.add(source)
            names = ("default", "profile default") if source == "default" else (f"profile {source}",)
            section = self._section(path, *names) or {}
            creds = self._section(self.env.get("AWS_SHARED_CREDENTIALS_FILE") or "~/.aws/credentials", source)
            out += [section, creds or {}]
        return out

    def identity(self) -> str:
        """Whose credentials these are meant to be: the role botocore would assume, else the profile."""
        return self.env.get("AWS_ROLE_ARN") or (self.config or {}).get("role_arn") or f"profile:{self.profile}"

    def cache_key(self) -> str:
        """Names the cached temporary credentials by *every* input that decides which ones botocore
        resolves: the profile, its sections and its ``source_profile`` chain, and the whole ``AWS_*``
        environment (a role from ``AWS_ROLE_ARN`` + a token file, container credentials, other shared
        files, another STS endpoint). Over-keying costs a lookup; under-keying would hand one role's
        credentials to another."""
        parts = [self.profile, repr(sorted((self.config or {}).items())),
                 repr(sorted((self.credentials or {}).items())),
                 repr([sorted(s.items()) for s in self._chain()]),
                 repr(sorted((k, v) for k, v in self.env.items() if k.startswith("AWS_")))]
        return "credentials|" + hashlib.sha256("\0".join(parts).encode()).hexdigest()


def credentials_cache() -> Any:
    """Where temporary credentials are kept (``eic-proxy cache clear`` empties it too)."""
    from eic_proxy.store import files
    from eic_proxy.store.cache import Cache

    return Cache(files.cache_dir() / "credentials")


def cached_credentials(settings: SharedSettings) -> Optional[StaticCredentials]:
    """Temporary credentials kept by remember_credentials, while they have 5 minutes left."""
    hit = credentials_cache().get(settings.cache_key(), 12 * 3600.0)
    if not hit:
        return None
    doc = hit[0]
    try:
        if doc.get("identity") != settings.identity():
            return None  # kept for another role: never served across identities
        if float(doc["expires"]) - time.time() < CREDENTIALS_CACHE_MARGIN:
            return None
        return StaticCredentials(str(doc["access_key"]), str(doc["secret_key"]), doc.get("token") or None)
    except (KeyError, TypeError, ValueError):
        return None


def remember_credentials(settings: SharedSettings, creds: Any, frozen: Any) -> None:
    """Keep botocore-resolved temporary credentials (only those with an expiry) for later processes.

    ``creds`` is botocore's credentials object (for its expiry), ``frozen`` the values just taken from it.
    """
    expiry = getattr(creds, "_expiry_time", None)  # botocore's RefreshableCredentials; no public accessor
    if expiry is None:
        return
    try:
        expires = expiry.timestamp()
    except (AttributeError, ValueError, OverflowError):
        return
    if expires - time.time() < 2 * CREDENTIALS_CACHE_MARGIN:
        return
    credentials_cache().put(settings.cache_key(), {
        "access_key": frozen.access_key, "secret_key": frozen.secret_key, "token": frozen.token,
        "expires": expires, "identity": settings.identity(),
    })

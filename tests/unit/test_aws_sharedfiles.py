"""awsfiles reads the standard AWS settings as botocore does — botocore itself is the oracle here."""
from __future__ import annotations

import time

import botocore.session
import pytest

from eic_proxy.aws.sharedfiles import SharedSettings, cached_credentials, remember_credentials

CONFIG = """
[default]
region = eu-west-1
ca_bundle = /etc/ssl/default.pem

[profile static-in-config]
region = ap-south-1
aws_access_key_id = AKIACONFIG
aws_secret_access_key = config-secret
use_fips_endpoint = true

[profile   spaced]
region = us-east-2

[profile role]
role_arn = arn:aws:iam::123456789012:role/x
source_profile = default

[profile sso]
sso_session = corp
sso_account_id = 123456789012
sso_role_name = Dev
region = us-west-2

[profile proc]
credential_process = /bin/false
region = sa-east-1

[profile both]
region = ca-central-1
aws_access_key_id = AKIAFROMCONFIG
aws_secret_access_key = from-config
"""

CREDENTIALS = """
[default]
aws_access_key_id = AKIADEFAULT
aws_secret_access_key = default-secret

[both]
aws_access_key_id = AKIAFROMCREDS
aws_secret_access_key = from-creds
aws_session_token = tok

[only-creds]
aws_access_key_id = AKIAONLY
aws_secret_access_key = only-secret
"""


@pytest.fixture
def files(tmp_path, monkeypatch):
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_REGION",
                "AWS_DEFAULT_REGION", "AWS_CA_BUNDLE", "AWS_USE_FIPS_ENDPOINT", "AWS_DEFAULT_PROFILE",
                "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    (tmp_path / "config").write_text(CONFIG)
    (tmp_path / "credentials").write_text(CREDENTIALS)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return tmp_path


def _botocore(profile):
    s = botocore.session.Session(profile=profile)
    return s


@pytest.mark.parametrize("profile", [None, "static-in-config", "spaced", "both", "only-creds", "sso", "proc"])
def test_region_ca_bundle_fips_match_botocore(files, profile):
    ours, theirs = SharedSettings(profile), _botocore(profile)
    assert ours.ok
    assert ours.region == theirs.get_config_variable("region")
    assert ours.ca_bundle == theirs.get_config_variable("ca_bundle")
    assert ours.use_fips == bool(theirs.get_config_variable("use_fips_endpoint"))


@pytest.mark.parametrize("profile", [None, "static-in-config", "both", "only-creds"])
def test_written_down_credentials_match_botocore(files, profile):
    ours = SharedSettings(profile).static_credentials()
    theirs = _botocore(profile).get_credentials().get_frozen_credentials()
    assert ours is not None
    assert (ours.access_key, ours.secret_key, ours.token) == (theirs.access_key, theirs.secret_key, theirs.token)


def test_environment_wins_unless_a_profile_is_named(files, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAENV")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "env-token")
    for profile in (None, "both"):
        ours = SharedSettings(profile).static_credentials()
        theirs = _botocore(profile).get_credentials().get_frozen_credentials()
        assert (ours.access_key, ours.token) == (theirs.access_key, theirs.token)
    monkeypatch.setenv("AWS_PROFILE", "only-creds")  # AWS_PROFILE does not hide the environment keys
    assert SharedSettings(None).static_credentials().access_key == "AKIAENV"
    assert _botocore(None).get_credentials().access_key == "AKIAENV"


@pytest.mark.parametrize("profile", ["role", "sso", "proc"])
def test_provider_profiles_are_left_to_botocore(files, profile):
    assert SharedSettings(profile).static_credentials() is None


def test_partial_environment_and_web_identity_are_left_to_botocore(files, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAENV")
    assert SharedSettings(None).static_credentials() is None
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.setenv("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/x")
    monkeypatch.setenv("AWS_WEB_IDENTITY_TOKEN_FILE", str(files / "token"))
    assert SharedSettings(None).static_credentials() is None


def test_environment_overrides_files(files, monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-north-1")
    monkeypatch.setenv("AWS_CA_BUNDLE", "/tmp/env.pem")
    monkeypatch.setenv("AWS_USE_FIPS_ENDPOINT", "TRUE")
    ours = SharedSettings(None)
    assert (ours.region, ours.ca_bundle, ours.use_fips) == ("eu-north-1", "/tmp/env.pem", True)
    monkeypatch.setenv("AWS_REGION", "eu-south-1")  # the SDK-wide variable comes first
    assert SharedSettings(None).region == "eu-south-1"


def test_missing_named_profile_and_broken_file_defer_to_botocore(files):
    assert not SharedSettings("nope").ok
    (files / "config").write_text("[default\nregion = x\n")
    assert not SharedSettings(None).ok


def test_cached_temporary_credentials_round_trip_and_expire(files, isolated_env):
    import datetime as dt

    from botocore.credentials import ReadOnlyCredentials, RefreshableCredentials

    settings = SharedSettings("sso")

    def refreshable(minutes):
        expiry = dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=minutes)
        return RefreshableCredentials("ASIATEMP", "temp-secret", "temp-token", expiry,
                                      refresh_using=lambda: None, method="sso")

    assert cached_credentials(settings) is None
    c = refreshable(60)
    remember_credentials(settings, c, c.get_frozen_credentials())
    got = cached_credentials(settings)
    assert got is not None and (got.access_key, got.secret_key, got.token) == ("ASIATEMP", "temp-secret", "temp-token")
    assert cached_credentials(SharedSettings("proc")) is None  # another profile, another entry
    (files / "config").write_text(CONFIG.replace("sso_role_name = Dev", "sso_role_name = Admin"))
    assert cached_credentials(SharedSettings("sso")) is None  # the profile changed: not the same credentials
    frozen = ReadOnlyCredentials("ASIATEMP", "temp-secret", "temp-token")
    remember_credentials(SharedSettings("sso"), refreshable(4), frozen)  # under the 5-minute margin: not kept
    assert cached_credentials(SharedSettings("sso")) is None


def refreshable(minutes):
    import datetime as dt

    from botocore.credentials import RefreshableCredentials

    expiry = dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=minutes)
    return RefreshableCredentials("ASIATEMP", "temp-secret", "temp-token", expiry,
                                  refresh_using=lambda: None, method="sso")


def test_credentials_of_one_role_are_never_served_to_another(files, monkeypatch, tmp_path):
    """Two roles chosen by environment (web identity): the second must never get the first's keys."""
    token = tmp_path / "token"
    token.write_text("jwt")
    monkeypatch.setenv("AWS_WEB_IDENTITY_TOKEN_FILE", str(token))
    monkeypatch.setenv("AWS_ROLE_ARN", "arn:aws:iam::111111111111:role/first")
    first = SharedSettings(None)
    c = refreshable(60)
    remember_credentials(first, c, c.get_frozen_credentials())
    assert cached_credentials(SharedSettings(None)) is not None  # the same role: served from the cache
    monkeypatch.setenv("AWS_ROLE_ARN", "arn:aws:iam::222222222222:role/second")
    assert cached_credentials(SharedSettings(None)) is None
    monkeypatch.setenv("AWS_ROLE_ARN", "arn:aws:iam::111111111111:role/first")
    for var, value in (("AWS_CONTAINER_CREDENTIALS_FULL_URI", "http://127.0.0.1/creds"),
                       ("AWS_CONFIG_FILE", str(tmp_path / "other-config")),
                       ("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "other-credentials"))):
        with monkeypatch.context() as m:
            m.setenv(var, value)
            assert cached_credentials(SharedSettings(None)) is None, var


def test_a_changed_source_profile_is_another_identity(files):
    (files / "config").write_text(
        "[profile base]\nregion = us-east-1\ncredential_process = /bin/echo one\n\n"
        "[profile role]\nrole_arn = arn:aws:iam::1:role/r\nsource_profile = base\n")
    c = refreshable(60)
    remember_credentials(SharedSettings("role"), c, c.get_frozen_credentials())
    assert cached_credentials(SharedSettings("role")) is not None
    (files / "config").write_text(
        "[profile base]\nregion = us-east-1\ncredential_process = /bin/echo two\n\n"
        "[profile role]\nrole_arn = arn:aws:iam::1:role/r\nsource_profile = base\n")
    assert cached_credentials(SharedSettings("role")) is None


def test_an_entry_stored_for_another_identity_is_a_miss(files, monkeypatch):
    from eic_proxy.aws.sharedfiles import credentials_cache

    monkeypatch.setenv("AWS_ROLE_ARN", "arn:aws:iam::1:role/a")
    s = SharedSettings(None)
    credentials_cache().put(s.cache_key(), {"access_key": "A", "secret_key": "B", "token": "C",
                                            "expires": time.time() + 3600, "identity": "arn:aws:iam::1:role/b"})
    assert cached_credentials(s) is None

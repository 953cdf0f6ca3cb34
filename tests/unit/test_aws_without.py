"""``without_aws``: the helper's connection process prepares in place only what needs nothing of AWS.
Every way into botocore (a client, a session, credentials only botocore resolves) raises ``NeedsAws``,
which no handler of API or other failures takes for one of its own."""
from __future__ import annotations

import pytest

from eic_proxy.aws.client import Aws, NeedsAws, without_aws
from eic_proxy.report import guarded


@pytest.fixture
def aws(monkeypatch, tmp_path):
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    return Aws(region="eu-west-1")


def test_written_down_credentials_need_no_aws(aws):
    with without_aws():
        assert aws.frozen_credentials().access_key == "AKIDEXAMPLE" and aws.region == "eu-west-1"


@pytest.mark.parametrize("use", [lambda a: a.client("ec2"), lambda a: a.session, lambda a: a.resolved_credentials()])
def test_every_way_into_botocore_raises_needs_aws_through_the_error_handlers(aws, use):
    with without_aws():
        with pytest.raises(NeedsAws):
            guarded(lambda: use(aws) and 0)  # (guarded maps every Exception to a line and a code)
    assert aws.client("ec2") is not None  # off again afterwards


def test_a_process_forked_from_the_helper_takes_its_spare_session_once(monkeypatch, tmp_path):
    """The helper makes a blank botocore Session while idle; a connection forked from it uses that one
    (with its own profile, read from its own environment) instead of building one, and only once."""
    import os

    from eic_proxy.aws import client

    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    (tmp_path / "config").write_text("[profile mine]\nregion = ap-northeast-1\n")
    monkeypatch.setattr(client, "_spare", None)
    client.make_spare_session()
    spare = client._spare[1]
    assert client._make_session(None) is not spare  # the helper itself keeps it for the next forks
    helper = os.getpid()
    monkeypatch.setattr(os, "getpid", lambda: helper + 1)  # now "a forked child"
    taken = client._make_session("mine")
    assert taken is spare and taken.get_config_variable("region") == "ap-northeast-1"
    assert client._make_session("mine") is not spare and client._spare is None

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

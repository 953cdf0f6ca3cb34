"""Push retries: back-off with jitter on throttling within a budget; other errors at once."""
import pytest
from botocore.exceptions import ClientError

from eic_proxy.aws.client import make_aws
from eic_proxy.control import push
from eic_proxy.errors import AccessDenied, ExitCode


class FakeEic:
    def __init__(self, failures):
        self.failures = list(failures)
        self.calls = 0

    def send_ssh_public_key(self, **kw):
        self.calls += 1
        if self.failures:
            code, status = self.failures.pop(0)
            raise ClientError({"Error": {"Code": code, "Message": f"{code} happened"},
                               "ResponseMetadata": {"HTTPStatusCode": status}}, "SendSSHPublicKey")
        return {"RequestId": "req-1", "Success": True}


@pytest.fixture
def aws(isolated_env, monkeypatch):
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    return make_aws()


def test_throttling_is_retried_with_growing_jittered_delays(aws):
    eic = FakeEic([("ThrottlingException", 400)] * 3 + [("InternalServerError", 500)])
    delays = []
    assert push.send_public_key(aws, eic, "i-0123456789abcdef0", "ec2-user", "ssh-ed25519 AAAA",
                                sleep=delays.append) == "req-1"
    assert eic.calls == 5 and len(delays) == 4
    assert all(0 <= d <= min(push.RETRY_CAP, push.RETRY_BASE * 2 ** (i + 1)) for i, d in enumerate(delays))


def test_retry_budget_ends_in_a_clear_error(aws):
    eic = FakeEic([("ThrottlingException", 400)] * 100)
    with pytest.raises(Exception) as info:
        push.send_public_key(aws, eic, "i-0123456789abcdef0", "ec2-user", "ssh-ed25519 AAAA", budget=0.0,
                             sleep=lambda d: None)
    assert info.value.exit_code == ExitCode.SERVICE_UNAVAILABLE and "attempts" in info.value.message
    assert eic.calls == 1


def test_access_denied_fails_at_once_with_osuser_hint(aws):
    eic = FakeEic([("AccessDeniedException", 403)])
    with pytest.raises(AccessDenied) as info:
        push.send_public_key(aws, eic, "i-0123456789abcdef0", "root", "ssh-ed25519 AAAA", sleep=lambda d: None)
    assert eic.calls == 1 and "ec2:osuser" in info.value.hint and "'root'" in info.value.hint


def test_push_record_freshness():
    now = 1000.0
    assert push.PushRecord(now - 10, "r").fresh(now)
    assert not push.PushRecord(now - push.PUSH_REUSE, "r").fresh(now)
    assert not push.PushRecord(now + 5, "r").fresh(now)  # a clock that went backwards: push again

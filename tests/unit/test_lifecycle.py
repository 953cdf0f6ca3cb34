"""The lifecycle's policies with a fake AWS, a fake endpoint and a fake locator: when a cached location is
looked up again, which handshake refusals are retried, the clock correction, and what a failure before
the tunnel leaves behind (an audit entry, the slot given back)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import pytest

from eic_proxy.aws.sharedfiles import StaticCredentials
from eic_proxy.config import ConnectOptions
from eic_proxy.control.locate import Located
from eic_proxy.errors import (
    EndpointBusy,
    HandshakeDenied,
    HandshakeError,
    HostNotFound,
    SignatureExpired,
)
from eic_proxy.lifecycle import connection
from eic_proxy.lifecycle import session as session_mod
from eic_proxy.lifecycle.session import Session
from eic_proxy.model import Endpoint, Target

IID, OTHER_IID = "i-0123456789abcdef0", "i-0fedcba9876543210"
EID, OTHER_EID = "eice-0123456789abcdef0", "eice-0fedcba9876543210"


class FakeAws:
    profile, region, use_fips, ca_bundle = "dev", "eu-west-1", False, None
    connect_timeout, read_timeout, use_cache = 5.0, 5.0, True
    clock_offset = None

    def frozen_credentials(self) -> StaticCredentials:
        return StaticCredentials("AKIDEXAMPLE", "secret")

    def client(self, service, max_attempts=3):
        raise AssertionError("no API client in these tests")


def located(iid: str = IID, eid: str = EID, ip: str = "10.0.0.5", cached: bool = True) -> Located:
    target = Target(instance_id=iid, ip=ip, vpc_id="vpc-1", subnet_id="subnet-1", state="running")
    endpoint = Endpoint(endpoint_id=eid, dns_name=f"{eid}.example", fips_dns_name=None, vpc_id="vpc-1",
                        subnet_id="subnet-1", state="create-complete")
    return Located(target, endpoint, target_age=5.0 if cached else None, endpoint_age=5.0 if cached else None)


@dataclass
class FakeLocator:
    """What AWS says now, after the cached answer was forgotten."""

    fresh: Located
    forgotten: list[str] = field(default_factory=list)

    def locate(self, spec):
        return self.fresh

    def forget(self, spec, old):
        self.forgotten.append(old.target.instance_id)


class FakeSlot:
    released = 0

    def release(self):
        FakeSlot.released += 1


@pytest.fixture
def world(monkeypatch):
    """Pushes and handshakes recorded; the endpoint answers from ``refusals`` (one per attempt), then opens."""
    pushes: list[tuple[str, str]] = []
    attempts: list[str] = []
    refusals: list[BaseException] = []
    push_failures: list[BaseException] = []

    def ensure_pushed(aws, key, instance_id, os_user, use_cache=True):
        pushes.append((instance_id, os_user))
        if push_failures:
            raise push_failures.pop(0)
        return f"req-{len(pushes)}"

    def open_websocket(url, ca_bundle=None, **kwargs):
        attempts.append(url)
        if refusals:
            raise refusals.pop(0)
        return f"ws-{len(attempts)}"

    class Keys:
        def take(self, pid):
            return "key"

        def rotate_if_due(self):
            pass

    monkeypatch.setattr("eic_proxy.control.push.ensure_pushed", ensure_pushed)
    monkeypatch.setattr("eic_proxy.transport.handshake.open_websocket", open_websocket)
    monkeypatch.setattr("eic_proxy.keys.lifecycle.make_key_manager", lambda opts: Keys())
    monkeypatch.setattr("eic_proxy.lifecycle.limiter.acquire", lambda eid, limit, timeout: FakeSlot())
    monkeypatch.setattr(session_mod.random, "uniform", lambda a, b: 0.0)
    FakeSlot.released = 0
    return pushes, attempts, refusals, push_failures


def make_session(where: Located, fresh: Located) -> tuple[Session, FakeLocator]:
    s = Session(ConnectOptions(host="web-1"), aws=FakeAws(), located=where)
    locator = FakeLocator(fresh)
    s._locator = locator  # type: ignore[assignment]
    return s, locator


def test_a_cached_target_that_is_gone_is_looked_up_again_once_and_pushed_there(world):
    pushes, _, _, push_failures = world
    s, locator = make_session(located(), located(OTHER_IID, ip="10.0.0.9", cached=False))
    push_failures.append(HostNotFound("instance not found"))
    s.prepare()
    assert locator.forgotten == [IID] and pushes == [(IID, "ec2-user"), (OTHER_IID, "ec2-user")]
    assert s.located.target.instance_id == OTHER_IID and s.push_request_id == "req-2"


def test_a_fresh_lookup_that_is_gone_is_an_error_not_a_loop(world):
    pushes, _, _, push_failures = world
    s, locator = make_session(located(cached=False), located(OTHER_IID))
    push_failures.append(HostNotFound("instance not found"))
    with pytest.raises(HostNotFound):
        s.prepare()
    assert locator.forgotten == [] and len(pushes) == 1


def test_the_endpoint_saying_our_cached_endpoint_is_gone_relocates_and_opens_there(world):
    pushes, attempts, refusals, _ = world
    s, locator = make_session(located(), located(eid=OTHER_EID, cached=False))
    refusals.append(HandshakeError(f"endpoint {EID} not found", status=404, error_code="ResourceNotFoundException"))
    assert s.open_healing() == "ws-2"
    assert locator.forgotten == [IID] and OTHER_EID in attempts[1] and EID in attempts[0]
    assert pushes == [(IID, "ec2-user")]  # the new location is pushed to before it opens


def test_a_refusal_not_about_our_endpoint_is_not_healed(world):
    _, attempts, refusals, _ = world
    s, locator = make_session(located(), located(eid=OTHER_EID))
    refusals.append(HandshakeDenied("not authorized to perform OpenTunnel", status=403, error_code="AccessDenied"))
    with pytest.raises(HandshakeDenied):
        s.open_healing()
    assert locator.forgotten == [] and len(attempts) == 1


def test_a_busy_endpoint_is_retried_with_a_fresh_url_and_a_denial_is_not(world, monkeypatch):
    _, attempts, refusals, _ = world
    slept: list[float] = []
    monkeypatch.setattr(session_mod.time, "sleep", slept.append)
    s, _ = make_session(located(), located())
    refusals.extend([EndpointBusy("429", status=429), EndpointBusy("503", status=503)])
    assert s.handshake() == "ws-3" and len(slept) == 2
    refusals.append(HandshakeDenied("403", status=403))
    with pytest.raises(HandshakeDenied):
        s.handshake()
    assert len(attempts) == 4


def test_a_busy_endpoint_is_given_up_at_the_queue_timeout(world, monkeypatch):
    _, attempts, refusals, _ = world
    monkeypatch.setattr(session_mod.time, "sleep", lambda _s: None)
    monkeypatch.setattr(session_mod, "HANDSHAKE_RETRY_BUDGET", 0.0)
    s, _ = make_session(located(), located())
    refusals.extend([EndpointBusy("429", status=429)] * 3)
    with pytest.raises(EndpointBusy):
        s.handshake()
    assert len(attempts) == 1


def test_a_port_the_endpoint_refuses_is_said_as_the_port_rule_with_the_same_class(world):
    _, _, refusals, _ = world
    s = Session(ConnectOptions(host="web-1", port=5432), aws=FakeAws(), located=located())
    refusals.append(HandshakeError("Invalid remotePort", status=400, error_code="InvalidParameterException"))
    with pytest.raises(HandshakeError) as err:
        s.handshake()
    assert type(err.value) is HandshakeError and "ports 22 and 3389 only, not 5432" in err.value.message
    assert "ssh -N -L 5432:localhost:5432 web-1" in (err.value.hint or "")


def test_a_url_refused_for_this_clock_is_signed_again_once_at_the_endpoints_time(world, capsys):
    _, attempts, refusals, _ = world
    s, _ = make_session(located(), located())
    ahead = time.time() + 600
    for _ in range(2):
        refused = SignatureExpired("Signature expired", status=403, error_code="RequestExpired")
        refused.server_time = ahead
        refusals.append(refused)
    with pytest.raises(SignatureExpired) as err:
        s.handshake()
    assert len(attempts) == 2 and s.clock_offset is not None and abs(s.clock_offset - 600) < 5
    assert "Amz-Date" in attempts[1] and attempts[0] != attempts[1]
    assert "clock" in err.value.message  # the second refusal names the clock instead of a third try


def test_a_failure_before_the_tunnel_is_audited_and_gives_the_slot_back(world, monkeypatch):
    _, _, refusals, _ = world
    entries: list[tuple[str, dict]] = []
    monkeypatch.setattr("eic_proxy.store.audit.append", lambda event, **kw: entries.append((event, kw)))
    plan = connection.Plan(ConnectOptions(host="web-1"), located(cached=False),
                           connection.AwsSettings("dev", "eu-west-1", False, None, StaticCredentials("AK", "SK"),
                                                  5.0, 5.0, True), push_request_id="req-7")
    refusals.append(HandshakeDenied("not authorized", status=403))
    with pytest.raises(HandshakeDenied):
        connection.carry(plan, local=None, close_output=lambda: None)  # type: ignore[arg-type]
    assert [e for e, _ in entries] == ["connect-failed"] and entries[0][1]["push_request_id"] == "req-7"
    assert entries[0][1]["exit_code"] == HandshakeDenied.exit_code and FakeSlot.released == 1


class ClientsAws(FakeAws):
    """Clients are made (in the calling thread: which one is recorded), never called: the calls are faked."""

    def __init__(self) -> None:
        self.made: list[tuple[str, str]] = []

    def client(self, service, max_attempts=3):
        import threading

        self.made.append((service, threading.current_thread().name))
        return object()


def cold_locator(monkeypatch, endpoint_lookup):
    from eic_proxy.control.locate import Locator

    where = located(cached=False)
    monkeypatch.setattr("eic_proxy.control.resolve.resolve", lambda aws, ec2, spec, pick, allow: where.target)
    monkeypatch.setattr("eic_proxy.control.endpoint.find_endpoint", endpoint_lookup)
    aws = ClientsAws()
    return Locator(aws, None), aws, where


def test_the_key_is_pushed_while_the_endpoint_is_looked_up(monkeypatch):
    """One round trip to AWS instead of two in a row: the endpoint's lookup does not answer until the
    push has started (each waits for the other, so this fails if they run one after the other)."""
    import threading

    from eic_proxy.control.resolve import parse_host

    push_started, lookup_started = threading.Event(), threading.Event()
    threads: list[str] = []

    def find_endpoint(aws, ec2, target, eice_id):
        lookup_started.set()
        assert push_started.wait(5), "the push did not start while the endpoint was looked up"
        return where.endpoint

    locator, aws, where = cold_locator(monkeypatch, find_endpoint)

    def meanwhile(target):
        assert target == where.target

        def push():
            threads.append(threading.current_thread().name)
            push_started.set()
            assert lookup_started.wait(5)
        return push

    found = locator.locate(parse_host("web-1"), meanwhile)
    assert found.endpoint == where.endpoint and found.endpoint_age is None
    assert threads == ["eic-meanwhile"]
    assert set(aws.made) == {("ec2", threading.current_thread().name)}  # made before the thread started
    assert not [t for t in threading.enumerate() if t.name == "eic-meanwhile"]


def test_a_cached_endpoint_leaves_the_push_to_its_turn(monkeypatch, tmp_path):
    from eic_proxy.control.resolve import parse_host
    from eic_proxy.store.cache import Cache

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    calls: list[str] = []
    locator, _, where = cold_locator(monkeypatch, lambda *a: calls.append("lookup") or where.endpoint)
    locator.cache = Cache()
    locator.locate(parse_host("web-1"))
    assert calls == ["lookup"]
    found = locator.locate(parse_host("web-1"), lambda target: calls.append("meanwhile"))
    assert calls == ["lookup"] and found.endpoint_age is not None


def test_the_endpoints_failure_is_said_first_and_the_push_is_waited_for(monkeypatch):
    import threading

    from eic_proxy.control.resolve import parse_host
    from eic_proxy.errors import NoEndpoint

    pushed = threading.Event()

    def find_endpoint(aws, ec2, target, eice_id):
        raise NoEndpoint("no EC2 Instance Connect Endpoint in vpc-1")

    def push():
        pushed.wait(0.2)  # still running when the lookup has failed
        pushed.set()
        raise HostNotFound("not this one")

    locator, _, _ = cold_locator(monkeypatch, find_endpoint)
    with pytest.raises(NoEndpoint):
        locator.locate(parse_host("web-1"), lambda target: push)
    assert pushed.is_set()


def test_a_push_made_alongside_is_used_or_its_failure_raised_by_prepare(world, monkeypatch):
    pushes, _, _, push_failures = world
    from eic_proxy.errors import AccessDenied

    for fails in (False, True):
        pushes.clear()
        if fails:
            push_failures.append(AccessDenied("not allowed: ec2-instance-connect:SendSSHPublicKey"))
        locator, aws, where = cold_locator(monkeypatch, lambda *a: located(cached=False).endpoint)
        s = Session(ConnectOptions(host="web-1"), aws=aws)
        s._locator = locator  # type: ignore[assignment]
        s.locate(push_meanwhile=True)
        assert pushes == [(IID, "ec2-user")]  # pushed during the lookup
        assert {t for service, t in aws.made if service == "ec2"} == {"MainThread"}  # made before the thread
        if fails:
            with pytest.raises(AccessDenied):
                s.prepare()
        else:
            monkeypatch.setattr(Session, "prepare_host_keys", lambda self: None)
            monkeypatch.setattr(Session, "link_known_hosts", lambda self: None)
            s.prepare()
            assert s.pushed_at is not None and s.push_request_id == "req-1"
        assert pushes == [(IID, "ec2-user")]  # not pushed again


def test_a_call_signed_before_the_clock_was_corrected_is_signed_again_once():
    from eic_proxy.aws.client import Aws

    class Http:
        headers = {"Date": "Sat, 05 Dec 2026 08:00:00 GMT"}

    refused = (Http(), {"Error": {"Code": "SignatureDoesNotMatch", "Message": "Signature expired: is now earlier"}})
    aws = Aws.__new__(Aws)
    aws.clock_offset = 120.0  # another call alongside corrected it
    assert aws._retry_signed_at_aws_time(refused, attempts=1) == 0
    assert aws._retry_signed_at_aws_time(refused, attempts=2) is None
    assert aws._retry_signed_at_aws_time((Http(), {"Error": {"Code": "AccessDenied"}}), attempts=1) is None

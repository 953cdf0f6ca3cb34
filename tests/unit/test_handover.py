"""The hand-over of a prepared connection (lifecycle/handover.py) and the pump's signals: plain data in,
plain data out."""
from __future__ import annotations

import signal
import socket

from eic_proxy.config import ConnectOptions
from eic_proxy.control.hostkey_guard import HostKeyGuard
from eic_proxy.control.locate import Located
from eic_proxy.lifecycle import handover
from eic_proxy.lifecycle.connection import plan_of, session_of
from eic_proxy.lifecycle.handover import PreparedAws, dumps, loads
from eic_proxy.lifecycle.session import Session
from eic_proxy.model import Endpoint, Target
from eic_proxy.transport.link import Link
from eic_proxy.transport.local import LocalEnd
from eic_proxy.transport.pump import Driver
from eic_proxy.tunnel.protocol import TunnelProtocol


class Creds:
    access_key, secret_key, token = "AKIDEXAMPLE", "secret", "session-token"


class FakeAws:
    profile, region, use_fips, ca_bundle = "dev", "eu-west-1", True, "/etc/ca.pem"
    connect_timeout, read_timeout, use_cache = 5.0, 7.0, True

    def frozen_credentials(self) -> Creds:
        return Creds()


def located() -> Located:
    target = Target(instance_id="i-0123456789abcdef0", ip="10.0.0.5", vpc_id="vpc-1", subnet_id="subnet-1", state="running")
    endpoint = Endpoint(endpoint_id="eice-0123456789abcdef0", dns_name="eice.example", fips_dns_name="eice-fips.example",
                        vpc_id="vpc-1", subnet_id="subnet-1", state="create-complete")
    return Located(target, endpoint, target_age=12.0, endpoint_age=30.0)


def test_a_plan_crosses_the_pipe_and_becomes_a_session_that_needs_no_lookup(monkeypatch):
    opts = ConnectOptions(host="web-1", port=22, os_user="ec2-user", known_hosts_alias="web-1")
    prepared = Session(opts, aws=FakeAws(), located=located())
    prepared.pushed_at, prepared.push_request_id, prepared.key_used = 123.5, "req-1", True
    prepared.guard = HostKeyGuard("i-0123456789abcdef0", "web-1", {b"blob"})
    made: list[tuple] = []

    class RealAws(FakeAws):
        def client(self, service, max_attempts=3):
            return ("client", service)

    monkeypatch.setattr("eic_proxy.aws.client.make_aws", lambda *a: made.append(a) or RealAws())

    plan = loads(dumps(("plan", plan_of(prepared, verbose=2))))[1]
    carried = session_of(plan)

    assert carried.opts == opts and carried.located == prepared.located and carried.cached
    assert (carried.pushed_at, carried.push_request_id, carried.key_used) == (123.5, "req-1", True)
    assert carried.guard.trusted == {b"blob"} and plan.verbose == 2
    aws = carried.aws
    assert isinstance(aws, PreparedAws)
    assert (aws.profile, aws.region, aws.use_fips, aws.ca_bundle) == ("dev", "eu-west-1", True, "/etc/ca.pem")
    creds = aws.frozen_credentials()
    assert (creds.access_key, creds.secret_key, creds.token) == ("AKIDEXAMPLE", "secret", "session-token")
    assert made == [] and carried._locator is None  # nothing was looked up or built to carry it
    assert aws.connect_timeout == 5.0 and made == []  # settings are data: no client for them
    assert aws.client("ec2") == ("client", "ec2")  # only a rare path asks for more: then a real Aws, same settings
    assert made == [("dev", "eu-west-1", 5.0, 7.0, True)]


def test_the_plan_holds_the_credentials_only_as_data():
    plan = plan_of(Session(ConnectOptions(host="web-1"), aws=FakeAws(), located=located()), verbose=0)
    assert type(plan.aws.credentials).__module__ == "eic_proxy.aws.sharedfiles"  # no botocore class to import
    assert handover.loads(handover.dumps(plan)) == plan


def test_the_pump_hears_only_its_own_signals_on_the_wake_up_socket():
    """Every signal with a Python handler is written to the wake-up fd (the helper's tunnel process
    reaps its preparer on SIGCHLD): only SIGHUP/SIGTERM/SIGINT may end a tunnel."""
    a, b = socket.socketpair()
    try:
        driver = Driver(Link(a), TunnelProtocol(0.0, keepalive=0, warn_before=None), LocalEnd(0, 1), lambda: None,
                        handle_signals=False)
        driver._wake_w.send(bytes([signal.SIGCHLD, signal.SIGHUP, signal.SIGWINCH]))
        assert driver._wait(1.0) == [signal.SIGHUP]
    finally:
        a.close()
        b.close()

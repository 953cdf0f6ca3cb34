"""One connection's life, top to bottom: ``prepare`` it, then ``carry`` its tunnel.

    prepare(options) -> Plan           the control plane: locate, push the key, the host-key guard
                                       (with --start: start the instance and probe its port)
    carry(plan, local) -> PumpResult   the transport: a slot, the WebSocket, the pump, the audit log,
                                       the key's rotation at the end

``connect`` in-process runs one after the other. Under the helper, a short-lived preparer process runs
``prepare`` and sends the ``Plan`` through a pipe to the long-lived process that runs ``carry`` (the
preparing's memory goes with the preparer: ``handover.py``). The ``tunnel`` listener prepares once and
carries each accepted connection with a plan of its own (``for_another_connection``): nothing one
connection learns (its push, its audit id) is written where another one reads.

Every failure before the tunnel opened is a ``connect-failed`` entry in the audit log; the tunnel's own
``connect``/``disconnect`` entries are written around the pump, with ssh's signals held off until the
last one is down.
"""
from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterator, Optional

from eic_proxy.aws.seams import AwsApi
from eic_proxy.config import ConnectOptions, validate
from eic_proxy.control.hostkey_guard import HostKeyGuard
from eic_proxy.control.locate import Located
from eic_proxy.errors import EicProxyError
from eic_proxy.lifecycle.handover import AwsSettings, PreparedAws
from eic_proxy.lifecycle.limiter import Slot
from eic_proxy.lifecycle.session import Session
from eic_proxy.transport.local import LocalEnd, stderr_line
from eic_proxy.transport.pump import SIGNALS, PumpResult, SignalSource, pump
from eic_proxy.tunnel.protocol import TunnelProtocol

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OpenedTunnel:
    """--start: the tunnel the port probe opened, with what the instance said first. A socket does not
    cross a pipe: such a plan is carried by the process that prepared it."""

    ws: socket.socket
    proto: TunnelProtocol
    first: bytes
    slot: Optional[Slot]


@dataclass(frozen=True)
class Plan:
    """A connection ready for its WebSocket: where it goes, with which credentials, what was pushed."""

    opts: ConnectOptions
    located: Located
    aws: AwsSettings
    pushed_at: Optional[float] = None
    push_request_id: Optional[str] = None
    guard: Optional[HostKeyGuard] = None
    key_used: bool = False  # our key was pushed: the tunnel's end is the moment to rotate it if due
    clock_offset: Optional[float] = None  # AWS's time minus ours, when a refusal showed this clock is off
    verbose: int = 0  # the carrier's log level, as -v counts
    opened: Optional[OpenedTunnel] = None
    live_aws: Any = field(default=None, compare=False, repr=False)  # the preparer's own client, when it carries too

    @property
    def portable(self) -> bool:
        """Whether another process can carry it (nothing open in it)."""
        return self.opened is None

    def __getstate__(self) -> dict[str, Any]:
        if self.opened is not None:
            raise TypeError("a plan with an open tunnel is carried where it was prepared")
        return dict(self.__dict__, live_aws=None)


def prepare(opts: ConnectOptions, carrier_pid: Optional[int] = None, verbose: int = 0,
            aws: Optional[AwsApi] = None, located: Optional[Located] = None, audited: bool = True) -> Plan:
    """Everything before the WebSocket. ``carrier_pid``: the process that will carry the tunnel (and
    uses the key meanwhile), when it is not this one. ``aws`` and ``located``: what the caller found
    already (doctor's checks), so nothing is looked up again; ``audited=False``: no ``connect-failed``
    entry (a check is not a connection)."""
    validate(opts)
    session = Session(opts, aws=aws, located=located, carrier_pid=carrier_pid)
    if located is None:
        try:
            session.locate(push_meanwhile=True)
        except EicProxyError as exc:
            _audit_failure(session, exc, located=False)
            raise
    with _failures_audited(session, keep_slot=True, audited=audited):
        if session.located.target.state != "running":  # --start: the probe's tunnel is the connection's
            ws, proto, first = session.start_and_probe()
            session.prepare_host_keys()
            session.link_known_hosts()
            return plan_of(session, verbose, OpenedTunnel(ws, proto, first, session.slot))
        session.prepare()
        return plan_of(session, verbose)


def carry(plan: Plan, local: LocalEnd, close_output: Callable[[], None], tell: Optional[Callable[[str], None]] = None,
          on_open: Optional[Callable[[], None]] = None, replay: bool = True, signals: Optional[SignalSource] = None,
          slot: Optional[Slot] = None) -> PumpResult:
    """The tunnel of a prepared connection: take a slot, open (re-locating once if the cached endpoint
    is gone), pump until the end, rotate the key if due. Raises what fails before the tunnel opened.

    ``tell`` receives the pump's lines (default: stderr); ``on_open`` is called once the WebSocket is
    up; ``replay``: a tunnel to a cached location may be opened again elsewhere if the endpoint cannot
    reach the target before its first byte (ssh's own bytes are replayed). ``signals``: ssh's signals,
    when they do not come to this process (a carrier of several tunnels); ``slot``: the endpoint's slot,
    when it was taken before the plan came here."""
    session = session_of(plan)
    if slot is not None:
        session.slot, session.slot_endpoint = slot, plan.located.endpoint.endpoint_id
    with _failures_audited(session):
        if plan.opened is not None:
            session.slot = plan.opened.slot
            ws, proto, first, can_replay = plan.opened.ws, plan.opened.proto, plan.opened.first, False
        else:
            ws = session.open_healing()
            can_replay = replay and session.cached
            proto, first = session.new_protocol(can_replay), b""
        if on_open is not None:
            on_open()
        try:
            return _pumped(session, ws, local, proto, first, close_output,
                           reconnect=session.reconnect if can_replay else None, tell=tell, signals=signals)
        finally:
            session.tunnel_ended()  # if the tunnel did not open: our ssh is done with the key all the same


@dataclass(frozen=True)
class Probe:
    """A tunnel opened only to see whether the server behind it answers (doctor's banner check)."""

    opened_in: float  # seconds the slot and the WebSocket took
    first: Optional[bytes]  # what the server sent first (b"": silent; None: the endpoint could not reach it)
    error: Optional[EicProxyError] = None  # the tunnel failed after it opened


def probe(plan: Plan, wait: float) -> Probe:
    """Open the plan's tunnel as ``carry`` would (a slot, a fresh URL, the upgrade), read what the server
    says first within ``wait`` seconds, and close it. Raises what fails before the tunnel opened."""
    from eic_proxy.transport.probe import first_bytes, say_goodbye

    session = session_of(plan)
    try:
        started = time.monotonic()
        ws = session.open(push=False)
        opened_in = time.monotonic() - started
        try:
            return Probe(opened_in, first_bytes(ws, session.new_protocol(), wait))
        except EicProxyError as exc:
            return Probe(opened_in, None, exc)
        finally:
            say_goodbye(ws)
    finally:
        if session.slot is not None:
            session.slot.release()


def connect(opts: ConnectOptions, local: LocalEnd, close_output: Callable[[], None]) -> PumpResult:
    """In one process: prepare, then carry."""
    return carry(prepare(opts), local, close_output)


def exit_code_of(result: PumpResult) -> int:
    """A finished tunnel's exit code; its error line said once (the pump says it before ssh's input closes)."""
    error = result.error
    if error is not None and not error.reported:
        error.reported = True
        from eic_proxy.report import report

        report(error.message, error.hint)
    return int(result.exit_code)


def for_another_connection(plan: Plan) -> Plan:
    """The listener's plan for one more accepted connection: same target and credentials, its own push
    and audit data (pushed per connection when the listener pushes)."""
    return replace(plan, pushed_at=None, push_request_id=None, key_used=False, opened=None)


def plan_of(session: Session, verbose: int = 0, opened: Optional[OpenedTunnel] = None) -> Plan:
    """The plan of a session that is ready to open its WebSocket."""
    aws = session.aws
    creds = aws.frozen_credentials()
    from eic_proxy.aws.sharedfiles import StaticCredentials

    return Plan(opts=session.opts, located=session.located,
                aws=AwsSettings(aws.profile, aws.region, bool(aws.use_fips), aws.ca_bundle,
                                StaticCredentials(creds.access_key, creds.secret_key, creds.token),
                                aws.connect_timeout, aws.read_timeout, aws.use_cache),
                pushed_at=session.pushed_at, push_request_id=session.push_request_id, guard=session.guard,
                key_used=session.key_used, clock_offset=session.signing_offset(), verbose=verbose, opened=opened,
                live_aws=None if isinstance(aws, PreparedAws) else aws)


def session_of(plan: Plan) -> Session:
    """The carrying process's ``Session``: located and pushed already, nothing looked up or built."""
    session = Session(plan.opts, aws=plan.live_aws or PreparedAws(plan.aws), located=plan.located)
    session.pushed_at = plan.pushed_at
    session.push_request_id = plan.push_request_id
    session.guard = plan.guard
    session.key_used = plan.key_used
    session.clock_offset = plan.clock_offset
    return session


@contextlib.contextmanager
def _failures_audited(session: Session, keep_slot: bool = False, audited: bool = True) -> Iterator[None]:
    """A ``connect-failed`` entry for a failure before the tunnel was up, and the slot given back (in a
    long-lived caller too, not only at process exit) — kept when ``keep_slot`` and all went well."""
    failed = True
    try:
        yield
        failed = False
    except EicProxyError as exc:
        if audited and not session.opened:
            _audit_failure(session, exc, located=True)
        raise
    finally:
        if session.slot is not None and (failed or not keep_slot):
            session.slot.release()


def _audit_failure(session: Session, exc: EicProxyError, located: bool) -> None:
    from eic_proxy.store import audit

    opts = session.opts
    if not located:
        audit.append("connect-failed", host=opts.host, port=opts.port, error=exc.message, exit_code=int(exc.exit_code))
        return
    audit.append("connect-failed", host=opts.host, port=opts.port, instance_id=session.located.target.instance_id,
                 error=exc.message, exit_code=int(exc.exit_code), push_request_id=session.push_request_id)


def _pumped(session: Session, ws: socket.socket, local: LocalEnd, proto: TunnelProtocol, first: bytes,
            close_output: Callable[[], None], reconnect: Optional[Callable[[], Any]] = None,
            tell: Optional[Callable[[str], None]] = None, signals: Optional[SignalSource] = None) -> PumpResult:
    """Pump one open WebSocket, with a ``connect`` and a ``disconnect`` entry in the audit log."""
    from eic_proxy.store import audit
    from eic_proxy.store.files import say_warning

    opts, located = session.opts, session.located
    log.debug("= tunnel open to %s (%s:%d) via %s", located.target.instance_id, located.target.ip, opts.port,
              located.endpoint.endpoint_id)
    conn_id = os.urandom(6).hex()
    session.opened = True
    say_warning()  # a cache or record that could not be written: the connection goes on, and says so once
    audit.append("connect", id=conn_id, host=opts.host, instance_id=located.target.instance_id,
                 os_user=opts.os_user if opts.push else None, port=opts.port, ip=located.target.ip,
                 endpoint_id=located.endpoint.endpoint_id, push_request_id=session.push_request_id,
                 profile=session.aws.profile, region=session.aws.region, pid=os.getpid())
    result: Optional[PumpResult] = None
    # ssh's SIGHUP at its exit must not kill us between the pump's end and the entry: ignored from
    # before the pump (which installs its own handlers meanwhile) until the entry is written.
    with _signals_held() if signals is None else contextlib.nullcontext():
        try:
            result = pump(ws, proto, local, close_output, reconnect=reconnect, first=first, tell=tell or stderr_line,
                          inspect=session.inspect_output if session.guard is not None else None,
                          chores=session.chores(), signals=signals)
            return result
        finally:
            instance_id = session.located.target.instance_id  # a replay may have moved it
            if result is None:
                audit.append("disconnect", id=conn_id, host=opts.host, instance_id=instance_id,
                             reason="internal-error", exit_code=70)
            else:
                err = result.error
                audit.append("disconnect", id=conn_id, host=opts.host, instance_id=instance_id,
                             bytes_up=result.bytes_up, bytes_down=result.bytes_down,
                             duration=round(result.duration, 3), reason=result.reason, exit_code=result.exit_code,
                             error=err.message if err is not None else None)
            # Before ssh's second SIGHUP can end this process: our ssh is done with the key.
            session.tunnel_ended()


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """SIGHUP/SIGTERM/SIGINT ignored while the block runs, except while someone inside has handlers of
    its own (the pump does, and puts ours back after). Main thread only."""
    import signal

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

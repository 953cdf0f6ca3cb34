"""One connection's session: the located target, the push, the slot, the WebSocket and its re-opening.

The state ``connection.prepare`` and ``connection.carry`` work on (one per connection; doctor's checks
use one too). Its constructor does no I/O.
"""
from __future__ import annotations

import logging
import os
import random
import socket
import time
from typing import Callable, Optional

from eic_proxy import clock
from eic_proxy.config import ConnectOptions

TYPE_CHECKING = False
if TYPE_CHECKING:
    from eic_proxy.aws.seams import AwsApi
    from eic_proxy.control.hostkey_guard import HostKeyGuard
    from eic_proxy.control.locate import Located, Locator
    from eic_proxy.control.resolve import HostSpec
    from eic_proxy.errors import EicProxyError, HandshakeError
    from eic_proxy.keys.lifecycle import KeyManager
    from eic_proxy.lifecycle.limiter import Slot
    from eic_proxy.model import Target
    from eic_proxy.tunnel.protocol import TunnelProtocol

log = logging.getLogger(__name__)

SERVICE_PORTS = (22, 3389)  # the endpoint's port rule (docs/protocol.md §3.2)


def port_rule_error(port: int, host: str, refused: HandshakeError) -> HandshakeError:
    """The endpoint's refusal of a port other than 22/3389, said as the rule and what to do instead."""

    return type(refused)(
        f"the endpoint accepts remote ports 22 and 3389 only, not {port} ({refused.message})",
        hint=f"reach port {port} through ssh over port 22: `ssh -N -L {port}:localhost:{port} {host}` "
             f"(or `eic-proxy tunnel {host} --local-port 2222 --remote-port 22`, then ssh -p 2222 -L …)",
        status=refused.status, error_code=refused.error_code)


class Session:
    """One connect: the located target, and how to open (and re-open) its tunnel."""

    def __init__(self, opts: ConnectOptions, aws: Optional[AwsApi] = None, located: Optional[Located] = None,
                 carrier_pid: Optional[int] = None) -> None:
        """Builds nothing and asks nothing: ``aws`` is made when first needed, ``locate()`` looks the
        target up (or ``located`` comes from the caller: doctor, or the process a prepared connection was
        handed to). ``carrier_pid``: the process that carries the tunnel (and rotates the key after
        it), when it is not this one (the helper's preparer prepares for its parent)."""
        self.opts = opts
        self._spec: Optional[HostSpec] = None
        self._locator: Optional[Locator] = None
        self._aws = aws
        self._located = located
        self.pushed_at: Optional[float] = None
        self._key_manager: Optional[KeyManager] = None
        self.slot: Optional[Slot] = None
        self.slot_endpoint: Optional[str] = None
        self.push_request_id: Optional[str] = None  # SendSSHPublicKey RequestId made (or reused) for this tunnel
        self.opened = False  # the tunnel was up (its end is audited by connection.carry)
        self.guard: Optional[HostKeyGuard] = None  # the host-key guard, when known_hosts is ours
        self.key_used = False  # our key was pushed for this tunnel: rotate it at the end if it is due
        self.carrier_pid = os.getpid() if carrier_pid is None else carrier_pid
        self.clock_offset: Optional[float] = None  # endpoint's time minus ours, once a refusal showed it
        self._early_push: Optional[float | Exception] = None  # a push made while the endpoint was looked up

    @property
    def aws(self) -> AwsApi:
        if self._aws is None:
            from eic_proxy.aws.client import make_aws

            opts = self.opts
            timeouts = {} if opts.timeout is None else {"connect_timeout": opts.timeout, "read_timeout": opts.timeout}
            self._aws = make_aws(self.spec.profile or opts.profile, self.spec.region or opts.region, **timeouts,
                                 use_cache=opts.use_cache)
        return self._aws

    @property
    def located(self) -> Located:
        if self._located is None:
            raise RuntimeError("Session.locate() was not called")
        return self._located

    @located.setter
    def located(self, value: Located) -> None:
        self._located = value

    def locate(self, push_meanwhile: bool = False) -> Located:
        """Look the target and its endpoint up (the cache first). ``push_meanwhile``: when the endpoint
        has to be asked from AWS, the key is pushed alongside (``prepare`` then finds it done, or raises
        what the push raised)."""
        meanwhile = self._push_early if push_meanwhile and self.opts.push else None
        self._located = self.locator.locate(self.spec, meanwhile)
        return self._located

    def _push_early(self, target: Target) -> Optional[Callable[[], None]]:
        """The key's push, to run alongside the endpoint's lookup (``Locator.locate``)."""
        if target.state != "running":  # --start: pushed once the instance runs
            return None

        def push() -> None:  # (its client is made in the thread: ~12 ms, while the other thread waits on AWS)
            try:
                self.push_key(target.instance_id)
                self._early_push = time.monotonic()
            except Exception as exc:  # noqa: BLE001 - raised again where the push belongs (prepare)
                self._early_push = exc
        return push

    @property
    def spec(self) -> HostSpec:
        if self._spec is None:
            from eic_proxy.control.resolve import parse_host

            self._spec = parse_host(self.opts.host)
        return self._spec

    @property
    def locator(self) -> Locator:
        if self._locator is None:
            from eic_proxy.control.locate import Locator
            from eic_proxy.store.cache import Cache

            opts = self.opts
            self._locator = Locator(self.aws, Cache() if opts.use_cache else None, opts.pick, opts.eice_id,
                                    allow_stopped=opts.start)
        return self._locator

    @property
    def cached(self) -> bool:
        return self.located.target_age is not None or self.located.endpoint_age is not None

    def prepare(self) -> None:
        """Everything before the WebSocket: the push when due (a cached location that proves stale is
        looked up again, once), the host-key guard (first contact: the console's keys, before ssh sees a
        byte) and the known_hosts link. Under the helper this runs in a process of its own
        (``handover``)."""
        from eic_proxy.errors import HostNotFound, InstanceStateError

        if self.opts.push:
            try:
                self._push()
            except (HostNotFound, InstanceStateError):
                if not self.cached:
                    raise
                self.relocate()
                self._push()
        self.prepare_host_keys()
        self.link_known_hosts()

    def _push(self) -> None:
        early, self._early_push = self._early_push, None
        if isinstance(early, Exception):
            raise early
        if early is None:
            self.push_key()
        self.pushed_at = time.monotonic() if early is None else early

    def open(self, push: bool = True) -> socket.socket:
        """Push (when due), take this process's slot, and open the WebSocket."""
        if self.opts.push and push:
            self._push()
        self.take_slot()
        return self.handshake()

    def handshake(self) -> socket.socket:
        """A fresh presigned URL and WebSocket (its TLS socket); 429/503 (endpoint full or busy) retried."""
        from eic_proxy.control.endpoint import dns_name_for
        from eic_proxy.errors import HandshakeError
        from eic_proxy.transport.handshake import open_websocket
        from eic_proxy.tunnel.signer import presign_url

        opts, aws, located = self.opts, self.aws, self.located
        dns = dns_name_for(located.endpoint, aws.use_fips, opts.ip_family)
        deadline = time.monotonic() + min(HANDSHAKE_RETRY_BUDGET, opts.queue_timeout)
        attempt = 0
        while True:
            attempt += 1
            url = presign_url(aws.frozen_credentials(), aws.region, dns, located.endpoint.endpoint_id, opts.port,
                              located.target.ip, opts.max_tunnel_duration,
                              now=clock.signing_time(self.signing_offset()))  # a fresh URL per attempt
            try:
                return open_websocket(url, aws.ca_bundle, max_duration_sent=opts.max_tunnel_duration is not None,
                                      **({} if opts.timeout is None else {"timeout": opts.timeout}))
            except HandshakeError as exc:
                if (exc.status == 400 and opts.port not in SERVICE_PORTS and "remoteport" in exc.message.lower()
                        and (exc.error_code or "").startswith(("InvalidParameter", "ValidationException"))):
                    raise port_rule_error(opts.port, opts.host, exc) from exc
                if self._clock_corrected(exc):
                    continue
                delay = random.uniform(0, min(4.0, 0.25 * 2 ** attempt))
                if exc.status not in (429, 503) or time.monotonic() + delay >= deadline:
                    raise
                log.info("endpoint busy (HTTP %s); retrying in %.1f s", exc.status, delay)
                time.sleep(delay)

    def signing_offset(self) -> Optional[float]:
        """How far AWS's time is from ours, once a refusal showed it (the handshake's, or an API call's)."""
        if self.clock_offset is not None:
            return self.clock_offset
        return getattr(self.aws, "clock_offset", None)

    def _clock_corrected(self, exc: HandshakeError) -> bool:
        """A refusal for the signing time (URL expired, or signed in the future) with the endpoint's own
        time in its Date header: sign once more with that time, as the AWS SDKs do, and say by how much
        this computer's clock is off. False when that cannot help; the error then names the clock."""
        from eic_proxy.clock import is_clock_refusal, off_by, offset_from, say_corrected

        offset = offset_from(exc.server_time) if is_clock_refusal(exc.error_code, exc.message) else None
        if offset is None:
            return False
        if self.signing_offset() is None:
            self.clock_offset = offset
            say_corrected(offset, "the endpoint's")
            return True
        exc.message += " (" + off_by(offset, "the endpoint's") + ")"
        return False

    def take_slot(self) -> None:
        """One of the endpoint's connection slots for this process (queued when all are taken)."""
        from eic_proxy.lifecycle.limiter import acquire

        eid = self.located.endpoint.endpoint_id
        if self.slot is not None and self.slot_endpoint == eid:
            return
        if self.slot is not None:
            self.slot.release()
        self.slot = acquire(eid, self.opts.max_connections, self.opts.queue_timeout)
        self.slot_endpoint = eid

    def push_key(self, instance_id: Optional[str] = None) -> None:
        """Make sure a fresh push of our key exists for (instance, user), and the agent holds the key."""
        from eic_proxy.control.push import ensure_pushed

        opts, iid = self.opts, instance_id or self.located.target.instance_id
        if opts.identity:
            from pathlib import Path

            from eic_proxy.keys.material import identity_key

            self.push_request_id = ensure_pushed(self.aws, identity_key(Path(opts.identity)), iid, opts.os_user,
                                                 opts.use_cache)
            return
        manager = self.key_manager()
        self.key_used = True
        key = manager.take(pid=self.carrier_pid)  # no lock is held across the push below
        self.push_request_id = ensure_pushed(self.aws, key, iid, opts.os_user, opts.use_cache)
        if opts.agent:
            from eic_proxy.keys.agent import load_key

            load_key(manager, key)

    def rotate_key_if_due(self) -> None:
        """Once our ssh is done with the key (at the tunnel's end, or past its authentication), replace
        it if it is due and nobody else used it lately."""
        if self.key_used:
            self.key_manager().rotate_if_due()

    def tunnel_ended(self) -> None:
        """At the tunnel's end (ssh's signals still held off): the due rotation, once."""
        if self.key_used:
            self.rotate_key_if_due()
            self.key_used = False

    def chores(self) -> list[tuple[float, Callable[[], None]]]:
        """What the pump does while the tunnel lives: the rotation of a due key once our ssh is past its
        authentication (a pushed key is honoured for 60 s), since the end may never run (Windows ends a
        ProxyCommand with TerminateProcess)."""
        from eic_proxy.keys.lifecycle import ROTATE_QUIET

        return [(time.monotonic() + ROTATE_QUIET, self.rotate_key_if_due)] if self.key_used else []

    def key_manager(self) -> KeyManager:
        if self._key_manager is None:
            from eic_proxy.keys.lifecycle import make_key_manager

            self._key_manager = make_key_manager(self.opts)
        return self._key_manager

    def open_healing(self) -> socket.socket:
        """After ``prepare``: the slot and the WebSocket, re-locating once when the endpoint says the
        cached endpoint is gone (every handshake message names "endpoint"; only one naming ours counts)."""
        from eic_proxy.errors import HandshakeError

        try:
            return self.open(push=False)
        except HandshakeError as exc:
            if not self.cached or self.located.endpoint.endpoint_id not in exc.message:
                raise
            self.relocate()
            self.follow_instance()
            return self.open()

    def relocate(self) -> bool:
        """Drop the cached location and look it up again; False when nothing changed."""
        old = self.located
        self.locator.forget(self.spec, old)
        self.located = self.locator.locate(self.spec)
        return (self.located.target.ip, self.located.endpoint.endpoint_id) != (old.target.ip,
                                                                              old.endpoint.endpoint_id)

    def reconnect(self) -> Optional[socket.socket]:
        """Called by the pump when the endpoint cannot reach a target we took from the cache."""
        if not self.relocate():
            return None
        log.info("instance %s moved to %s; reconnecting", self.located.target.instance_id, self.located.target.ip)
        self.follow_instance()
        return self.open()

    def follow_instance(self) -> None:
        """After a relocation: the guard and the known_hosts link of the instance located now."""
        if self.guard is not None and self.guard.instance_id != self.located.target.instance_id:
            self.prepare_host_keys()
        self.link_known_hosts()

    def link_known_hosts(self) -> None:
        """The name ssh looks up shows the keys of the instance located now (store/knownhosts.py)."""
        if self.opts.known_hosts_alias:
            from eic_proxy.store.knownhosts import show_under_name

            show_under_name(self.opts.known_hosts_alias, self.located.target.instance_id)

    def prepare_host_keys(self) -> Optional[HostKeyGuard]:
        """For ssh through the generated block (known_hosts per instance): the host-key guard of the
        instance located now, which fetches the console's keys on first contact (README: "Host keys")."""
        if not self.opts.known_hosts_alias or self.opts.port != 22:
            return None
        from eic_proxy.control.hostkey_guard import prepare
        from eic_proxy.transport.local import stderr_line

        self.guard = prepare(self.aws, self.located.target.instance_id, self.opts.host, self.opts.host_keys,
                             stderr_line)
        return self.guard

    def inspect_output(self, data: bytes) -> Optional[EicProxyError]:
        """Every byte for ssh passes the guard of the instance the tunnel reaches now (a replay may
        have moved it to another instance)."""
        return self.guard.inspect(data) if self.guard is not None else None

    def new_protocol(self, can_replay: bool = False) -> TunnelProtocol:
        """The tunnel's state machine for a WebSocket that opened just now, with this connect's settings."""
        from eic_proxy.tunnel.protocol import TunnelProtocol

        opts = self.opts
        return TunnelProtocol(time.monotonic(), max_duration=float(opts.max_tunnel_duration or 3600),
                              keepalive=opts.keepalive, warn_before=opts.expiry_warning or None,
                              expect_banner=opts.port == 22, banner_wait=opts.banner_wait, can_replay=can_replay)

    def start_and_probe(self) -> tuple[socket.socket, TunnelProtocol, bytes]:
        """--start: start the instance, then open tunnels until its server answers (or the deadline)."""
        from eic_proxy.control.locate import Located
        from eic_proxy.control.start import Progress, start_and_wait
        from eic_proxy.transport.probe import first_bytes

        progress = Progress()
        deadline = time.monotonic() + self.opts.start_timeout
        try:
            target = start_and_wait(self.aws, self.locator.ec2, self.located.target, deadline, progress)
            self.locator.remember(self.spec, target)
            self.located = Located(target, self.located.endpoint)
            while True:
                fresh = self.pushed_at is not None and time.monotonic() - self.pushed_at < PROBE_PUSH_REUSE
                ws = self.open(push=not fresh)
                proto = self.new_protocol()
                first = first_bytes(ws, proto, PROBE_WAIT)
                if first is not None:
                    progress.say(f"port {self.opts.port} on {target.instance_id} answers")
                    return ws, proto, first
                if time.monotonic() >= deadline:
                    from eic_proxy.errors import PortSilent

                    raise PortSilent(f"{target.instance_id} is running but nothing answers on port {self.opts.port}",
                                     hint="raise --start-timeout, or check that sshd starts on boot")
                progress.say(f"waiting for port {self.opts.port} on {target.instance_id} to answer")
                time.sleep(PROBE_INTERVAL)
        finally:
            progress.done()


# A handshake refused for load (429/503) is retried within this many seconds.
HANDSHAKE_RETRY_BUDGET = 20.0

# --start: how often to try the port, and how long one push serves the probes (the key lives 60 s).
PROBE_INTERVAL = 2.0
PROBE_WAIT = 10.0
PROBE_PUSH_REUSE = 40.0

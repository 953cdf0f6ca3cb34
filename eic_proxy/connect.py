"""``eic-proxy connect``: the ProxyCommand, from host alias to a running byte pump."""
from __future__ import annotations

import logging
import os
import random
import time
from dataclasses import dataclass
from typing import Any, Optional

from .errors import ExitCode, UsageError

log = logging.getLogger(__name__)

DEFAULT_OS_USER = "ec2-user"


@dataclass(frozen=True)
class ConnectOptions:
    host: str
    port: int = 22
    os_user: str = DEFAULT_OS_USER
    region: Optional[str] = None
    profile: Optional[str] = None
    eice_id: Optional[str] = None
    max_tunnel_duration: Optional[int] = None
    push: bool = True
    use_cache: bool = True
    pick: Optional[str] = None
    start: bool = False
    start_timeout: float = 300.0
    known_hosts_alias: Optional[str] = None  # ssh's %h: the name the generated block keys known_hosts on
    key_type: str = "ed25519"
    key_lifetime: Optional[float] = None
    key_store: Optional[str] = None  # file | keyring; default: keyring in agent mode when a backend exists
    agent: bool = False
    identity: Optional[str] = None
    max_connections: int = 20
    queue_timeout: float = 300.0
    timeout: Optional[float] = None  # API connect/read and WebSocket handshake, seconds
    keepalive: float = 30.0
    expiry_warning: float = 60.0
    banner_wait: float = 5.0  # port 22: warn when the instance has sent nothing this long after the upgrade


def validate(opts: ConnectOptions) -> None:
    if not 1 <= opts.port <= 65535:
        raise UsageError(f"port {opts.port} is out of range 1..65535")
    if opts.max_tunnel_duration is not None and not 1 <= opts.max_tunnel_duration <= 3600:
        raise UsageError(f"--max-tunnel-duration {opts.max_tunnel_duration} is out of range 1..3600 seconds",
                         hint="the endpoint allows at most 3600 s per connection")
    if opts.start_timeout <= 0:
        raise UsageError("--start-timeout must be positive")
    if opts.max_connections < 1:
        raise UsageError("--max-connections must be at least 1")
    if opts.timeout is not None and opts.timeout <= 0:
        raise UsageError("--timeout must be positive")
    if opts.keepalive < 0 or opts.expiry_warning < 0:
        raise UsageError("--keepalive and --expiry-warning must not be negative")


class Session:
    """One connect: the located target, and how to open (and re-open) its tunnel."""

    def __init__(self, opts: ConnectOptions, aws: Any = None, located: Any = None) -> None:
        """Locates the target now, unless ``aws`` and ``located`` come from the caller (doctor)."""
        from .aws import make_aws
        from .cache import Cache
        from .locate import Locator
        from .resolve import parse_host

        self.opts = opts
        self.spec = parse_host(opts.host)
        timeouts = {} if opts.timeout is None else {"connect_timeout": opts.timeout, "read_timeout": opts.timeout}
        self.aws = aws or make_aws(self.spec.profile or opts.profile, self.spec.region or opts.region, **timeouts,
                                   use_cache=opts.use_cache)
        self.locator = Locator(self.aws, Cache() if opts.use_cache else None, opts.pick, opts.eice_id,
                               allow_stopped=opts.start)
        self.located = located or self.locator.locate(self.spec)
        self.pushed_at: Optional[float] = None
        self._key_manager: Any = None
        self.slot: Any = None
        self.slot_endpoint: Optional[str] = None
        self.push_request_id: Optional[str] = None  # SendSSHPublicKey RequestId made (or reused) for this tunnel
        self.opened = False  # the tunnel was up (its end is audited by _run)

    @property
    def cached(self) -> bool:
        return self.located.target_age is not None or self.located.endpoint_age is not None

    def open(self, push: bool = True) -> Any:
        """Push (when due), take this process's slot, and open the WebSocket."""
        if self.opts.push and push:
            self.push_key()
            self.pushed_at = time.monotonic()
        self.take_slot()
        return self.handshake()

    def handshake(self) -> Any:
        """A fresh presigned URL and WebSocket (its TLS socket); 429/503 (endpoint full or busy) retried."""
        from .endpoint import dns_name_for
        from .errors import HandshakeError
        from .handshake import open_websocket
        from .signer import presign_url

        opts, aws, located = self.opts, self.aws, self.located
        dns = dns_name_for(located.endpoint, aws.use_fips)
        deadline = time.monotonic() + min(HANDSHAKE_RETRY_BUDGET, opts.queue_timeout)
        attempt = 0
        while True:
            attempt += 1
            url = presign_url(aws.frozen_credentials(), aws.region, dns, located.endpoint.endpoint_id, opts.port,
                              located.target.ip, opts.max_tunnel_duration)  # a fresh URL per attempt
            try:
                return open_websocket(url, aws.ca_bundle, max_duration_sent=opts.max_tunnel_duration is not None,
                                      **({} if opts.timeout is None else {"timeout": opts.timeout}))
            except HandshakeError as exc:
                delay = random.uniform(0, min(4.0, 0.25 * 2 ** attempt))
                if exc.status not in (429, 503) or time.monotonic() + delay >= deadline:
                    raise
                log.info("endpoint busy (HTTP %s); retrying in %.1f s", exc.status, delay)
                time.sleep(delay)

    def take_slot(self) -> None:
        """One of the endpoint's connection slots for this process (queued when all are taken)."""
        from .limiter import acquire

        eid = self.located.endpoint.endpoint_id
        if self.slot is not None and self.slot_endpoint == eid:
            return
        if self.slot is not None:
            self.slot.release()
        self.slot = acquire(eid, self.opts.max_connections, self.opts.queue_timeout)
        self.slot_endpoint = eid

    def push_key(self) -> None:
        """Make sure a fresh push of our key exists for (instance, user), and the agent holds the key."""
        from .push import ensure_pushed

        opts, iid = self.opts, self.located.target.instance_id
        if opts.identity:
            from pathlib import Path

            from .keys import identity_key

            self.push_request_id = ensure_pushed(self.aws, identity_key(Path(opts.identity)), iid, opts.os_user,
                                                 opts.use_cache)
            return
        manager = self.key_manager()
        with manager.using() as key:
            self.push_request_id = ensure_pushed(self.aws, key, iid, opts.os_user, opts.use_cache)
            manager.note_use()
            if opts.agent:
                from .agent import load_key

                load_key(manager, key)

    def key_manager(self) -> Any:
        if self._key_manager is None:
            self._key_manager = make_key_manager(self.opts)
        return self._key_manager

    def open_healing(self) -> Any:
        """open(), re-locating once when a cached location proves stale (instance or endpoint gone)."""
        from .errors import HandshakeError, HostNotFound, InstanceStateError

        try:
            return self.open()
        except (HostNotFound, InstanceStateError, HandshakeError) as exc:
            # Every handshake message names "endpoint"; only one naming our cached endpoint ID says it is gone.
            stale = not isinstance(exc, HandshakeError) or self.located.endpoint.endpoint_id in exc.message
            if not self.cached or not stale:
                raise
            self.relocate()
            return self.open()

    def relocate(self) -> bool:
        """Drop the cached location and look it up again; False when nothing changed."""
        old = self.located
        self.locator.forget(self.spec, old)
        self.located = self.locator.locate(self.spec)
        return (self.located.target.ip, self.located.endpoint.endpoint_id) != (old.target.ip,
                                                                              old.endpoint.endpoint_id)

    def reconnect(self) -> Optional[Any]:
        """Called by the pump when the endpoint cannot reach a target we took from the cache."""
        if not self.relocate():
            return None
        log.info("instance %s moved to %s; reconnecting", self.located.target.instance_id, self.located.target.ip)
        self.link_known_hosts()
        return self.open()

    def link_known_hosts(self) -> None:
        if self.opts.known_hosts_alias:
            from .knownhosts import link_known_hosts

            link_known_hosts(self.opts.known_hosts_alias, self.located.target.instance_id)

    def new_protocol(self, can_replay: bool = False) -> Any:
        """The tunnel's state machine for a WebSocket that opened just now, with this connect's settings."""
        from .protocol import TunnelProtocol

        opts = self.opts
        return TunnelProtocol(time.monotonic(), max_duration=float(opts.max_tunnel_duration or 3600),
                              keepalive=opts.keepalive, warn_before=opts.expiry_warning or None,
                              expect_banner=opts.port == 22, banner_wait=opts.banner_wait, can_replay=can_replay)

    def start_and_probe(self) -> tuple[Any, Any, bytes]:
        """--start: start the instance, then open tunnels until its server answers (or the deadline)."""
        from .locate import Located
        from .pump import first_bytes
        from .start import Progress, start_and_wait

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
                    from .errors import ExitCode, TunnelClosed

                    raise TunnelClosed(f"{target.instance_id} is running but nothing answers on port {self.opts.port}",
                                       hint="raise --start-timeout, or check that sshd starts on boot",
                                       exit_code=ExitCode.TIMEOUT)
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


def run(opts: ConnectOptions, in_fd: int = 0, out_fd: int = 1) -> int:
    """Locate, push, presign, open and pump. Returns the exit code; raises EicProxyError on failure.

    A cached location that proves stale (instance gone, endpoint gone, "Unable to connect to
    target" before the first byte) is dropped and looked up again once, automatically.
    """
    validate(opts)

    from . import audit
    from .errors import EicProxyError

    try:
        session = Session(opts)
    except EicProxyError as exc:
        audit.append("connect-failed", host=opts.host, port=opts.port, error=exc.message, exit_code=int(exc.exit_code))
        raise
    try:
        return _run(session, opts, in_fd, out_fd)
    except EicProxyError as exc:
        if not session.opened:
            audit.append("connect-failed", host=opts.host, port=opts.port, instance_id=session.located.target.instance_id,
                         error=exc.message, exit_code=int(exc.exit_code), push_request_id=session.push_request_id)
        raise
    finally:
        if session.slot is not None:
            session.slot.release()  # in a long-lived caller too, not only at process exit


def _run(session: "Session", opts: ConnectOptions, in_fd: int, out_fd: int) -> int:
    first, proto = b"", None
    if session.located.target.state != "running":
        ws, proto, first = session.start_and_probe()
    else:
        ws = session.open_healing()
    session.link_known_hosts()
    can_replay = session.cached and proto is None
    try:
        result = tunnel_audited(session, ws, in_fd, out_fd, proto or session.new_protocol(can_replay), first,
                                close_output=lambda: _close_quietly(out_fd),
                                reconnect=session.reconnect if can_replay else None)
    finally:
        if session._key_manager is not None:
            session._key_manager.rotate_if_due()  # our ssh is done with the key: the one safe moment
    if result.error is not None:
        result.error.exit_code = ExitCode(result.exit_code)  # a signal's 128+N wins over the error's class
        raise result.error
    return result.exit_code


def tunnel_audited(session: "Session", ws: Any, in_fd: int, out_fd: int, proto: Any, first: bytes = b"",
                   close_output: Optional[Any] = None, reconnect: Optional[Any] = None,
                   tell: Optional[Any] = None) -> Any:
    """Pump one open WebSocket, with a ``connect`` and a ``disconnect`` entry in the audit log."""
    from . import audit
    from .pump import pump, stderr_line

    opts, located = session.opts, session.located
    log.debug("= tunnel open to %s (%s:%d) via %s", located.target.instance_id, located.target.ip, opts.port,
              located.endpoint.endpoint_id)
    conn_id = os.urandom(6).hex()
    session.opened = True
    audit.append("connect", id=conn_id, host=opts.host, instance_id=located.target.instance_id,
                 os_user=opts.os_user if opts.push else None, port=opts.port, ip=located.target.ip,
                 endpoint_id=located.endpoint.endpoint_id, push_request_id=session.push_request_id,
                 profile=session.aws.profile, region=session.aws.region, pid=os.getpid())
    result = None
    try:
        result = pump(ws, proto, in_fd, out_fd, close_output or (lambda: None), reconnect=reconnect, first=first,
                      tell=tell or stderr_line)
        return result
    finally:
        if result is None:
            audit.append("disconnect", id=conn_id, host=opts.host, instance_id=session.located.target.instance_id,
                         reason="internal-error", exit_code=70)
        else:
            err = result.error
            audit.append("disconnect", id=conn_id, host=opts.host, instance_id=session.located.target.instance_id,
                         bytes_up=result.bytes_up, bytes_down=result.bytes_down, duration=round(result.duration, 3),
                         reason=result.reason, exit_code=result.exit_code,
                         error=err.message if err is not None else None)


def make_key_manager(opts: Any) -> Any:
    """The managed key for these settings: type, lifetime, and keyring storage in agent mode.

    ``opts`` is a ConnectOptions or a config.Settings: both carry key_type, key_lifetime, key_store
    and agent (unset values in Settings are None and mean the defaults).
    """
    from .keys import DEFAULT_LIFETIME, KeyManager, keyring_usable

    store = opts.key_store or ("keyring" if opts.agent and keyring_usable() else "file")
    if store == "keyring" and not opts.agent:
        raise UsageError("key-store = keyring needs the ssh-agent (--agent / agent = yes)",
                         hint="ssh can only use a key that is not on disk through the agent")
    return KeyManager(opts.key_type or "ed25519", float(opts.key_lifetime or DEFAULT_LIFETIME), store)


def _close_quietly(fd: int) -> None:
    """End our side of ssh's pipe so ssh sees EOF at once — without freeing the descriptor number.

    Closing fd 1 outright would let the next open() (a lock file, the key file) get number 1, and a
    late write meant for stdout would land in it. /dev/null takes its place instead.
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
    except OSError:
        return
    try:
        os.dup2(devnull, fd)
    except OSError:
        pass
    finally:
        os.close(devnull)

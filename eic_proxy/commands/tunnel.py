"""``eic-proxy tunnel``: a local listener for ports other tools connect to (RDP 3389, or 22 for
programs that cannot run a ProxyCommand). One WebSocket per accepted connection, each with a
fresh presigned URL (docs/protocol.md §3.1) and its own endpoint slot.

Binds loopback only (127.0.0.1 and ::1): anyone who can reach the port reaches the instance with
the user's AWS identity. A failed handshake ends that one connection, never the listener.
"""
from __future__ import annotations

import argparse
import logging
import selectors
import signal
import socket
import sys
import threading
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Callable, Optional

from eic_proxy.errors import EicProxyError, InstanceStateError, UsageError
from eic_proxy.options import KEY_FLAGS, LOOKUP_FLAGS, add_common, add_flags, add_remote_port, connect_options

if TYPE_CHECKING:
    from eic_proxy.lifecycle.connection import Plan

log = logging.getLogger(__name__)

DEFAULT_MAX_OPEN = 10  # the AWS CLI's own cap per listener; the endpoint allows 20 in all
SHUTDOWN_GRACE = 3.0


def _say(line: str) -> None:
    try:
        sys.stderr.write(f"eic-proxy: {line}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def bind_loopback(port: int) -> list[socket.socket]:
    """Listening sockets on 127.0.0.1 and ::1 with the same port (``0``: any free one)."""
    socks: list[socket.socket] = []
    v4 = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        v4.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        v4.bind(("127.0.0.1", port))
        v4.listen(64)
        socks.append(v4)
    except OSError as exc:
        v4.close()
        raise UsageError(f"cannot listen on 127.0.0.1:{port}: {exc.strerror or exc}",
                         hint="pick another --local-port (0 picks a free one)") from exc
    port = socks[0].getsockname()[1]
    if socket.has_ipv6:
        try:
            v6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            v6.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            v6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            v6.bind(("::1", port))
            v6.listen(64)
            socks.append(v6)
        except OSError as exc:  # no IPv6 loopback here: IPv4 alone is fine
            log.debug("not listening on [::1]:%d: %s", port, exc)
    return socks


class Listener:
    """Accepts on loopback; each connection is carried, in a thread of its own, on a plan of its own."""

    def __init__(self, plan: Plan, local_port: int, max_connections: int = DEFAULT_MAX_OPEN,
                 push: bool = True) -> None:
        if max_connections < 1:
            raise UsageError("--max-open must be at least 1")
        self.plan = plan
        self.push = push
        self.socks = bind_loopback(local_port)
        self.port = self.socks[0].getsockname()[1]
        self.capacity = threading.BoundedSemaphore(max_connections)
        self.max_connections = max_connections
        self.active: dict[int, socket.socket] = {}
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.counter = 0
        self.threads: list[threading.Thread] = []

    @property
    def addresses(self) -> list[str]:
        return [f"[{s.getsockname()[0]}]:{self.port}" if s.family == socket.AF_INET6 else f"{s.getsockname()[0]}:{self.port}"
                for s in self.socks]

    def serve(self, ready: Optional[Callable[["Listener"], None]] = None) -> int:
        sel = selectors.DefaultSelector()
        for s in self.socks:
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ)
        if ready is not None:
            ready(self)
        try:
            while not self.stopping.is_set():
                for key, _ in sel.select(timeout=0.5):
                    try:
                        conn, peer = key.fileobj.accept()  # type: ignore[union-attr]
                    except (BlockingIOError, InterruptedError):
                        continue
                    conn.setblocking(True)
                    self._start(conn, peer)
        finally:
            sel.close()
            self.shutdown()
        return 0

    def stop(self) -> None:
        self.stopping.set()

    def _start(self, conn: socket.socket, peer: Any) -> None:
        self.counter += 1
        n = self.counter
        t = threading.Thread(target=self._handle, args=(n, conn, peer), name=f"eic-conn-{n}", daemon=True)
        self.threads = [x for x in self.threads if x.is_alive()] + [t]
        t.start()

    def _handle(self, n: int, conn: socket.socket, peer: Any) -> None:
        from eic_proxy.lifecycle.connection import carry, for_another_connection, session_of
        from eic_proxy.transport.local import SocketEnd

        opts, located = self.plan.opts, self.plan.located
        where = f"{peer[0]}:{peer[1]}" if len(peer) == 2 else f"[{peer[0]}]:{peer[1]}"
        target = f"{located.target.instance_id} {located.target.ip}:{opts.port}"
        if not self.capacity.acquire(blocking=False):
            _say(f"[{n}] {where}: waiting, {self.max_connections} connections are open (--max-open)")
            if not self.capacity.acquire(timeout=opts.queue_timeout):
                _say(f"[{n}] {where}: refused, no connection slot within {opts.queue_timeout:.0f} s")
                conn.close()
                return
        with self.lock:
            self.active[n] = conn
        try:
            plan = for_another_connection(self.plan)
            if self.push and opts.push:  # this connection's own push (a burst reuses one: push.py)
                session = session_of(plan)
                session.push_key()
                plan = replace(plan, push_request_id=session.push_request_id, key_used=session.key_used)
            started = time.monotonic()
            result = carry(plan, SocketEnd(conn), close_output=lambda: _shut_write(conn),
                           tell=lambda line: _note(n, where, line), on_open=lambda: _say(f"[{n}] {where} -> {target}: open"),
                           replay=False)
            tail = f"up {result.bytes_up} B, down {result.bytes_down} B, {time.monotonic() - started:.1f} s"
            if result.error is not None:
                _say(f"[{n}] {where}: closed with error: {result.error.message} ({tail})")
            else:
                _say(f"[{n}] {where}: closed ({result.reason}; {tail})")
        except EicProxyError as exc:
            _say(f"[{n}] {where}: failed: {exc.message}" + (f" (hint: {exc.hint})" if exc.hint else ""))
        except Exception as exc:  # one connection's surprise never takes the listener down
            _say(f"[{n}] {where}: failed: {exc.__class__.__name__}: {exc}")
        finally:
            with self.lock:
                self.active.pop(n, None)
            try:
                conn.close()
            except OSError:
                pass
            self.capacity.release()

    def shutdown(self) -> None:
        """Stop listening, end every open connection (their pumps send CLOSE), wait briefly."""
        for s in self.socks:
            try:
                s.close()
            except OSError:
                pass
        with self.lock:
            conns = list(self.active.values())
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        deadline = time.monotonic() + SHUTDOWN_GRACE
        for t in self.threads:
            t.join(max(deadline - time.monotonic(), 0))


def _note(n: int, where: str, line: str) -> None:
    """A pump's warning goes out tagged with its connection; its error line is the "closed with error" below."""
    if not line.startswith("eic-proxy: error:"):
        _say(f"[{n}] {where}: {line.removeprefix('eic-proxy: ')}")


def _shut_write(conn: socket.socket) -> None:
    try:
        conn.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def run_tunnel(opts: Any, local_port: int, max_connections: int, push: Optional[bool]) -> int:
    """Locate the target once, then listen until Ctrl-C / SIGTERM; exit 0 after a clean shutdown."""
    from eic_proxy.config import validate
    from eic_proxy.lifecycle.connection import plan_of
    from eic_proxy.lifecycle.session import SERVICE_PORTS, Session

    validate(opts)
    if not 0 <= local_port <= 65535:
        raise UsageError(f"--local-port {local_port} is out of range 0..65535")
    session = Session(opts)
    target = session.locate().target
    if target.state != "running":
        raise InstanceStateError(f"{target.instance_id} is {target.state}",
                                 hint="start it first (or use `eic-proxy connect --start` once)")
    listener = Listener(plan_of(session), local_port, max_connections, opts.port == 22 if push is None else push)
    if opts.port not in SERVICE_PORTS:  # said once up front; each refused connection says it again
        _say(f"warning: the endpoint accepts remote ports 22 and 3389 only; port {opts.port} will likely be "
             f"refused (forward it through ssh instead: ssh -N -L {opts.port}:localhost:{opts.port} {opts.host})")
    previous = {}

    def on_signal(signum: int, _frame: Any) -> None:
        listener.stop()

    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, on_signal)
    try:
        return listener.serve(lambda lst: _say(
            f"listening on {' and '.join(lst.addresses)} -> {opts.host} ({target.instance_id}) "
            f"port {opts.port}; Ctrl-C stops"))
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _say("listener stopped")


def add_parser(sub: Any) -> None:
    t = sub.add_parser("tunnel", help="listen on a local port and tunnel each connection to HOST (RDP, tools)",
                       description="Listen on 127.0.0.1 and ::1 and tunnel every accepted connection to the "
                                   "instance's --remote-port through its endpoint (one WebSocket each). For RDP "
                                   "(3389), or port 22 for tools that cannot run a ProxyCommand. Ctrl-C stops it.")
    t.add_argument("host", metavar="HOST", help="instance ID, Name tag, tag:KEY=VALUE, IP or DNS name")
    t.add_argument("--local-port", type=int, required=True, metavar="N", help="local port (0: pick a free one)")
    add_remote_port(t, "; the endpoint accepts 22 and 3389 only: for other ports forward through ssh (ssh -L)")
    t.add_argument("--max-open", type=int, default=DEFAULT_MAX_OPEN, metavar="N",
                   help="connections open at once through this listener; more wait (default 10)")
    t.add_argument("--max-connections", dest="max_open", type=int, help=argparse.SUPPRESS)  # its name until 0.2
    t.add_argument("--push", dest="push", action="store_true", default=None,
                   help="push the managed key for every connection (default: only for port 22)")
    add_flags(t, "push", "os_user", "eice_id", "max_tunnel_duration", "queue_timeout", "timeout",
              helps={"os_user": "OS user for the key push on port 22 (default ec2-user)",
                     "push": "never push a key", "max_tunnel_duration": "per-connection duration cap (1..3600)"})
    add_flags(t, "max_connections", aliases=False)  # its old spelling means --max-open here
    add_flags(t, *KEY_FLAGS, *LOOKUP_FLAGS, "ip_family")
    add_common(t)


def run(args: argparse.Namespace) -> int:
    opts = connect_options(args, args.host, args.remote_port, args.os_user)
    return run_tunnel(opts, args.local_port, args.max_open, args.push)

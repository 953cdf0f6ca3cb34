"""``eic-proxy connect HOST [PORT [USER]]``: the ProxyCommand, from host alias to a running byte pump."""
from __future__ import annotations

import argparse
import logging
import os
from typing import Any, Callable, Optional

from eic_proxy.commands.options import DEFAULTS, add_common, add_host_keys, add_ip_family, add_key_options, add_lookup, connect_options
from eic_proxy.config import ConnectOptions, validate
from eic_proxy.errors import ExitCode
from eic_proxy.lifecycle.session import Session, tunnel_audited

log = logging.getLogger(__name__)


# Set by the helper's connection process in the process it forks to prepare: called with the prepared
# session, it hands the tunnel over (True) instead of carrying it here (``lifecycle/handover.py``).
hand_over: Optional[Callable[[Session], bool]] = None
HANDED_OVER = -1  # what connect() returns when another process carries the tunnel


def connect(opts: ConnectOptions, in_fd: int = 0, out_fd: int = 1) -> int:
    """Locate, push, presign, open and pump. Returns the exit code; raises EicProxyError on failure.

    A cached location that proves stale (instance gone, endpoint gone, "Unable to connect to
    target" before the first byte) is dropped and looked up again once, automatically.
    """
    validate(opts)

    from eic_proxy.errors import EicProxyError
    from eic_proxy.store import audit

    try:
        session = Session(opts)
    except EicProxyError as exc:
        audit.append("connect-failed", host=opts.host, port=opts.port, error=exc.message, exit_code=int(exc.exit_code))
        raise
    return _audited(session, lambda: _run(session, opts, in_fd, out_fd))


def carry(plan: Any, in_fd: int = 0, out_fd: int = 1) -> int:
    """The tunnel of a connection another process prepared (``handover.Plan``): open, pump, rotate."""
    from eic_proxy.lifecycle.handover import session_of

    session = session_of(plan)
    return _audited(session, lambda: _pump(session, session.open_healing(), in_fd, out_fd))


def _audited(session: Session, run: Callable[[], int]) -> int:
    """``run``, with a ``connect-failed`` entry when it fails before the tunnel was up, and the slot
    given back (in a long-lived caller too, not only at process exit)."""
    from eic_proxy.errors import EicProxyError
    from eic_proxy.store import audit

    try:
        return run()
    except EicProxyError as exc:
        if not session.opened:
            audit.append("connect-failed", host=session.opts.host, port=session.opts.port,
                         instance_id=session.located.target.instance_id, error=exc.message,
                         exit_code=int(exc.exit_code), push_request_id=session.push_request_id)
        raise
    finally:
        if session.slot is not None:
            session.slot.release()


def _run(session: Session, opts: ConnectOptions, in_fd: int, out_fd: int) -> int:
    if session.located.target.state != "running":
        ws, proto, first = session.start_and_probe()
        session.prepare_host_keys()
        session.link_known_hosts()
        return _pump(session, ws, in_fd, out_fd, proto, first)
    if hand_over is not None:
        session.carrier_pid = os.getppid()  # the preparer is a child of the process that will carry the tunnel
    session.prepare()
    if hand_over is not None and hand_over(session):
        return HANDED_OVER
    return _pump(session, session.open_healing(), in_fd, out_fd)


def _pump(session: Session, ws: Any, in_fd: int, out_fd: int, proto: Any = None, first: bytes = b"") -> int:
    can_replay = session.cached and proto is None
    try:
        from eic_proxy.transport.pump import LocalEnd

        result = tunnel_audited(session, ws, LocalEnd(in_fd, out_fd), proto or session.new_protocol(can_replay), first,
                                close_output=lambda: _close_quietly(out_fd),
                                reconnect=session.reconnect if can_replay else None,
                                inspect=session.inspect_output if session.guard is not None else None)
    finally:
        session.tunnel_ended()  # if the tunnel did not open: our ssh is done with the key all the same
    if result.error is not None:
        result.error.exit_code = ExitCode(result.exit_code)  # a signal's 128+N wins over the error's class
        raise result.error
    return result.exit_code


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


def add_parser(sub: Any) -> None:
    c = sub.add_parser("connect", help="tunnel stdin/stdout to HOST:PORT (use as ssh ProxyCommand)",
                       description="Tunnel stdin/stdout to an instance through its VPC's EICE. "
                                   "Meant for `ProxyCommand eic-proxy connect %%h %%p %%r`.")
    c.add_argument("host", metavar="HOST", help="instance ID, Name tag (or glob), tag:KEY=VALUE, private IP or "
                                                 "DNS name; append --REGION[--PROFILE] to pick account and region")
    c.add_argument("port", metavar="PORT", nargs="?", type=int, default=DEFAULTS.port, help="remote port (default 22)")
    c.add_argument("user", metavar="USER", nargs="?", help="remote user from ssh's %%r (sets the OS user)")
    c.add_argument("--os-user", help="OS user for the key push (default: USER, else ec2-user)")
    c.add_argument("--eice-id", help="use this EC2 Instance Connect Endpoint instead of discovering one")
    c.add_argument("--max-tunnel-duration", type=int, metavar="SECONDS",
                   help="ask the endpoint to cut the tunnel after SECONDS (1..3600); required by some IAM policies")
    c.add_argument("--no-push", dest="push", action="store_false",
                   help="do not push the key (you bring a key the instance already trusts)")
    c.add_argument("--start", action="store_true",
                   help="start the instance if it is stopped and wait until its port answers")
    c.add_argument("--start-timeout", type=float, default=DEFAULTS.start_timeout, metavar="SECONDS",
                   help="how long --start waits for the instance and its port (default 300)")
    c.add_argument("--typed", metavar="NAME", help=argparse.SUPPRESS)  # ssh's %n: the host with its original case
    c.add_argument("--identity", metavar="PATH", help="push the public half of this key of yours instead of ours")
    c.add_argument("--max-connections", dest="endpoint_connections", type=int, default=DEFAULTS.max_connections, metavar="N",
                   help="concurrent tunnels per endpoint before new ones queue (service limit: 20)")
    c.add_argument("--queue-timeout", type=float, default=DEFAULTS.queue_timeout, metavar="SECONDS",
                   help="how long a queued tunnel waits for a free slot (default 300)")
    c.add_argument("--timeout", type=float, metavar="SECONDS",
                   help="timeout for AWS API calls and the WebSocket handshake (default 10 / 15)")
    c.add_argument("--keepalive", type=float, default=DEFAULTS.keepalive, metavar="SECONDS",
                   help="WebSocket ping interval; 3 unanswered pings end the tunnel (0: off; default 30)")
    c.add_argument("--banner-wait", type=float, default=DEFAULTS.banner_wait, metavar="SECONDS",
                   help="port 22: warn when the instance has sent nothing this long after the tunnel opened "
                        "(default 5)")
    c.add_argument("--expiry-warning", type=float, default=DEFAULTS.expiry_warning, metavar="SECONDS",
                   help="warn this long before the maximum tunnel duration is reached (default 60; 0: off)")
    c.add_argument("--no-helper", dest="helper", action="store_false",
                   help="run in this process instead of the per-user helper (also: EIC_PROXY_HELPER=no, "
                        "helper = no in the config file)")
    add_host_keys(c)
    add_key_options(c)
    add_lookup(c)
    add_ip_family(c)
    add_common(c)


def run(args: argparse.Namespace) -> int:
    return connect(connect_options(args, args.host, args.port, args.os_user or args.user))

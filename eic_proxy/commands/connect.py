"""``eic-proxy connect HOST [PORT [USER]]``: the ProxyCommand, from host alias to a running byte pump
(``lifecycle/connection.py``)."""
from __future__ import annotations

import argparse
from typing import Any

from eic_proxy.config import ConnectOptions
from eic_proxy.options import CONNECT_DESCRIPTION, CONNECT_HELP, add_connect_arguments, connect_options_of


def connect(opts: ConnectOptions, in_fd: int = 0, out_fd: int = 1) -> int:
    """Locate, push, presign, open and pump, in this process. Returns the exit code (a signal's 128+N
    when one ended the tunnel); raises EicProxyError for what failed before the tunnel opened.

    A cached location that proves stale (instance gone, endpoint gone, "Unable to connect to
    target" before the first byte) is dropped and looked up again once, automatically.
    """
    from eic_proxy.lifecycle import connection
    from eic_proxy.transport.local import LocalEnd, close_quietly

    result = connection.connect(opts, LocalEnd(in_fd, out_fd), lambda: close_quietly(out_fd))
    return connection.exit_code_of(result)


def add_parser(sub: Any) -> None:
    add_connect_arguments(sub.add_parser("connect", help=CONNECT_HELP, description=CONNECT_DESCRIPTION))


def run(args: argparse.Namespace) -> int:
    return connect(connect_options_of(args))

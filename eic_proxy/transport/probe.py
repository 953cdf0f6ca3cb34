"""Probing a new tunnel for its first bytes: doctor's SSH banner check and ``--start``'s wait for sshd.

The same ``TunnelProtocol`` as the pump (one frame dispatch: a PING before the banner is answered,
not mistaken for garbage), driven synchronously before any thread exists; the protocol object then
goes on into ``pump`` with the bytes, so a frame split across reads is never lost.
"""
from __future__ import annotations

import socket
import ssl
import time
from typing import Optional

from eic_proxy.errors import ExitCode
from eic_proxy.transport.link import POLL, describe_socket_error, shutdown_socket
from eic_proxy.tunnel.effects import Send, Write
from eic_proxy.tunnel.protocol import TunnelProtocol

RECV_SIZE = 256 * 1024


def first_bytes(sock: socket.socket, proto: TunnelProtocol, wait: float) -> Optional[bytes]:
    """The first data through a new tunnel: bytes, b"" when the server waits for the client (not
    SSH), None when the endpoint cannot reach the target (or closed normally). Other failures raise.

    The doctor's banner check and ``--start``'s probe; the same protocol object goes on into
    ``pump`` (with the bytes as ``first``), so a frame split across reads is never lost.
    """
    deadline = time.monotonic() + wait
    buf = bytearray(RECV_SIZE)
    got = bytearray()

    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        sock.settimeout(min(left, POLL))
        try:
            n = sock.recv_into(buf)
        except (socket.timeout, ssl.SSLWantReadError):
            continue
        except OSError as exc:
            proto.connection_lost(describe_socket_error(exc), time.monotonic())
            n = -1
        if n == 0:
            proto.connection_lost("closed without a WebSocket close", time.monotonic())
        elif n > 0:
            proto.receive_bytes(bytes(buf[:n]), time.monotonic())
        for e in proto.take():
            if isinstance(e, Send):
                _send_now(sock, e.data)
            elif isinstance(e, Write):
                got += e.data
        if proto.finished:
            shutdown_socket(sock)
            err = proto.outcome.error if proto.outcome else None
            if err is None or err.exit_code == ExitCode.TARGET_UNREACHABLE:
                return None
            raise err
        if got:
            return bytes(got)
    return b""


def say_goodbye(sock: socket.socket) -> None:
    """End a probe's WebSocket politely (CLOSE 1000), then drop it; never blocks for long."""
    from eic_proxy.tunnel.wsframes import OP_CLOSE, close_payload, encode

    _send_now(sock, encode(OP_CLOSE, close_payload(1000)))
    shutdown_socket(sock)
    try:
        sock.close()
    except OSError:
        pass


def _send_now(sock: socket.socket, data: bytes) -> None:
    """A control frame during a probe (PONG), before any sender thread exists."""
    try:
        sock.settimeout(POLL)
        sock.sendall(data)
    except (OSError, ValueError):
        pass

"""The helper's messages: a 4-byte length and a ``marshal``-ed value, over a Unix stream socket.

Both ends are the same build (the first message carries the build's identity and the helper refuses
another), so ``marshal`` (built in, no import cost) is safe to use; the peer is the same user (checked
with SO_PEERCRED). Values are plain: dicts of str, lists of str, ints.

Conversation (client → helper main → forked child)::

    client: {"identity", "argv", "env", "cwd"}
    helper: ("other", identity)                  another build: the client runs the connection itself
        or  ("ready", child_pid)                 from the forked child
    client: b"G" + SCM_RIGHTS(stdin, stdout, stderr)  the child owns the connection from here
    client: b"H" / b"T" / b"I"                   ssh's SIGHUP / SIGTERM / SIGINT, from the waiter (helper/waiter.py)
    child:  b"CODE\n"                            the exit code as a text line, once the connection has ended
                                                 (written by the carrier the tunnel was handed to, if it was)

Inside the child, over a socketpair to the preparer it forks (values pickled: ``lifecycle/handover.py``)::

    preparer: ("plan", Plan)                     ready for its WebSocket: the child carries the tunnel
          or  ("code", exit_code)                ended before that (an error), or carried it itself

From a connection's process to a carrier of its group (helper/carrier.py; pickled)::

    child:   ("tunnel", Plan), then b"F" + SCM_RIGHTS(stdin, stdout, stderr, waiter's socket, slot)
    carrier: b"K"                                it will take it (or the socket closes: the child carries it)
    child:   b"G"                                let go: the carrier carries it (no b"G": the child does)
"""
from __future__ import annotations

import marshal
import sys

TYPE_CHECKING = False  # typing costs a ProxyCommand ~2 ms to import; annotations are strings here
if TYPE_CHECKING:
    from typing import Any

MAX_MESSAGE = 1 << 20  # an environment is a few KiB; anything larger is not ours


class WireError(Exception):
    """The peer closed, timed out or sent something that is not a message of ours."""


def send(sock: Any, value: Any, dumps: Any = marshal.dumps) -> None:
    data = dumps(value)
    sock.sendall(len(data).to_bytes(4, "big") + data)


def recv(sock: Any, loads: Any = marshal.loads) -> Any:
    """One message; WireError on EOF, timeout or garbage."""
    head = _exactly(sock, 4)
    size = int.from_bytes(head, "big")
    if size > MAX_MESSAGE:
        raise WireError(f"message of {size} bytes")
    try:
        return loads(_exactly(sock, size))
    except Exception as exc:  # noqa: BLE001 - whatever the decoder says of garbage: not a message of ours
        raise WireError(f"bad message: {exc}") from None


def _exactly(sock: Any, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        try:
            chunk = sock.recv(n - len(buf))
        except OSError as exc:  # socket.timeout included
            raise WireError(str(exc) or exc.__class__.__name__) from None
        if not chunk:
            raise WireError("closed")
        buf += chunk
    return buf


def descriptors(fds: list[int]) -> bytes:
    """``SCM_RIGHTS``' data for ``fds``: C ints in this machine's byte order (``array`` without its import)."""
    return b"".join(fd.to_bytes(4, sys.byteorder, signed=True) for fd in fds)

"""ssh's side of a tunnel: a ProxyCommand's descriptors (``LocalEnd``) or a listener's socket
(``SocketEnd``), and the few descriptor chores around them."""
from __future__ import annotations

import os
import socket
import sys

from eic_proxy import console


def stderr_line(text: str) -> None:
    """Write one line straight to this connection's stderr (fd 2, or its own in a carrier of several:
    ``console.py``): no Python buffering, safe from any thread."""
    console.current().write(text + "\n")


def close_quietly(fd: int) -> None:
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


def write_all(fd: int, data: bytes) -> None:
    mv = memoryview(data)
    while mv:
        mv = mv[os.write(fd, mv):]


class LocalEnd:
    """ssh's side of a tunnel: a ProxyCommand's two descriptors (stdin, stdout).

    A listener's accepted connection is a ``SocketEnd`` instead: on Windows a socket is a handle, not a
    C-runtime descriptor, and ``os.read``/``os.write`` refuse it.
    """

    def __init__(self, in_fd: int = 0, out_fd: int = 1) -> None:
        self.in_fd, self.out_fd = in_fd, out_fd

    def readinto(self, buf: bytearray) -> int:
        return _readinto(self.in_fd, buf)

    def write(self, data: bytes) -> None:
        write_all(self.out_fd, data)

    def grow(self, size: int) -> None:
        """Let ssh's pipes hold ``size`` bytes, so a bulk transfer needs fewer wake-ups."""
        for fd in (self.in_fd, self.out_fd):
            _grow_pipe(fd, size)


class SocketEnd(LocalEnd):
    """A connection a local listener accepted: read and written through the socket object."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(-1, -1)
        self.sock = sock

    def readinto(self, buf: bytearray) -> int:
        return self.sock.recv_into(buf)

    def write(self, data: bytes) -> None:
        self.sock.sendall(data)

    def grow(self, size: int) -> None:
        pass


def _grow_pipe(fd: int, size: int) -> None:
    """Make a pipe between ssh and us hold ``size`` bytes (Linux; elsewhere, or for a socket or tty, nothing)."""
    if sys.platform != "linux":
        return
    try:
        import fcntl

        if fcntl.fcntl(fd, getattr(fcntl, "F_GETPIPE_SZ", -1)) < size:
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, size)
    except (ImportError, OSError, ValueError, AttributeError):
        pass


def _readinto(fd: int, buf: bytearray) -> int:
    if hasattr(os, "readv"):
        return os.readv(fd, [buf])
    data = os.read(fd, len(buf))  # pragma: no cover - Windows
    buf[: len(data)] = data
    return len(data)

"""The socket to the endpoint and its one writer: frames leave in order, blocked sends are watched.

Part of the tunnel core (docs/architecture.md): ``pump.Driver`` feeds it what ``TunnelProtocol``
wants sent; ``close()`` shuts the descriptor down under any thread blocked in it.
"""
from __future__ import annotations

import collections
import socket
import ssl
import threading
import time
from typing import Any, Callable, Deque, Optional

from eic_proxy.tunnel.effects import Send
from eic_proxy.tunnel.protocol import MAX_FRAME

POLL = 0.5               # how often a waiting thread looks at the closed flag; a probe's recv timeout
HIGH_WATER = 4 * MAX_FRAME   # bytes queued for the socket before the uplink stops reading ssh


class Link:
    """The socket to the endpoint (replaceable once, for the replay) and its single sender thread.

    Frames are queued in protocol order and sent by one thread, so SSL never sees two writers. The
    timer reads ``blocked_since`` to tell a slow endpoint from one that stopped reading.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.generation = 0
        self.closed = False
        self._queue: Deque[Send] = collections.deque()
        self._queued = 0
        self._cond = threading.Condition()
        self._in_send_since: Optional[float] = None
        self._replaced: list[socket.socket] = []
        self.on_error: Callable[[str], None] = lambda detail: None
        sock.settimeout(None)  # blocking: close() shuts the descriptor down under a blocked thread

    # -- for the protocol's users --
    def enqueue(self, frames: list[Send]) -> None:
        if not frames:
            return
        with self._cond:
            self._queue.extend(frames)
            self._queued += sum(len(f.data) for f in frames)
            self._cond.notify_all()

    def wait_for_room(self) -> None:
        """Backpressure for the uplink: wait while the socket is behind (or until the link closes)."""
        with self._cond:
            while self._queued > HIGH_WATER and not self.closed:
                self._cond.wait(POLL)

    def blocked_since(self) -> Optional[float]:
        return self._in_send_since

    def swap(self, sock: socket.socket) -> None:
        """A new WebSocket continues the stream: frames still queued for the old one are dropped."""
        old = self.sock
        sock.settimeout(None)
        with self._cond:
            self.sock = sock
            self.generation += 1
            self._replaced.append(old)
        shutdown_socket(old)

    # -- the sender thread --
    def run_sender(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self.closed:
                    self._cond.wait()
                if self.closed and not self._queue:
                    return
                frame = self._queue.popleft()
                sock, generation = self.sock, self.generation
            try:
                if frame.generation == generation:
                    self._send(sock, frame.data)
            except (OSError, ValueError) as exc:
                if self.closed:
                    return
                if self.generation == generation:  # not an old socket we already replaced
                    self.on_error(describe_socket_error(exc))
                    return
            finally:
                with self._cond:
                    self._queued -= len(frame.data)
                    self._cond.notify_all()

    def _send(self, sock: socket.socket, data: bytes) -> None:
        mv = memoryview(data)
        self._in_send_since = time.monotonic()
        try:
            while mv:  # send, not sendall: each record that leaves is progress the timer can see
                mv = mv[sock.send(mv):]
                self._in_send_since = time.monotonic()
        finally:
            self._in_send_since = None

    def drain(self, timeout: float) -> None:
        """Give what is queued (our CLOSE) a moment to leave."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._queued > 0 and not self.closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self._cond.wait(left)

    def release(self) -> None:
        """Close the descriptor, once no thread of ours can be inside it any more."""
        for sock in [*self._replaced, self.sock]:
            try:
                sock.close()
            except OSError:
                pass

    def close(self) -> None:
        """Release every thread blocked on this link, at once."""
        with self._cond:
            self.closed = True
            self._cond.notify_all()
        shutdown_socket(self.sock)


def shutdown_socket(sock: Any) -> None:
    """SHUT_RDWR on the connection under a (TLS) socket: wakes any thread blocked in recv or send.

    The plain socket's ``shutdown``, called on the TLS socket: ``SSLSocket.shutdown`` would drop the
    SSL object under the feet of the other threads. No descriptor is duplicated (Windows refuses
    ``os.dup`` of a socket handle).
    """
    try:
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except (OSError, ValueError, TypeError):
        pass


def describe_socket_error(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return f"TLS error: {exc.reason or exc.__class__.__name__}"
    if isinstance(exc, ConnectionResetError):
        return "reset by the peer"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return exc.__class__.__name__

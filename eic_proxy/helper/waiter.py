"""ssh's signals as the client's waiter passes them on: one byte per signal on the connection's socket.

ssh ends its ProxyCommand with SIGHUP (or SIGTERM; SIGINT from a terminal). Under the helper that
process is the waiter (``helper/client.py``), and the tunnel may be one of several in a carrier
process (``helper/carrier.py``), where a signal to the process would end them all: the waiter writes
the signal's letter to its socket instead, and this reads it for the one tunnel it belongs to. The
socket's end (the waiter was killed outright) counts as a hang-up.
"""
from __future__ import annotations

import os
import select
import signal
import socket
import threading
from typing import Callable, Optional

from eic_proxy import console

HANGUP = int(getattr(signal, "SIGHUP", 1))  # (no SIGHUP on Windows, where there is no helper)
LETTERS = {ord("H"): HANGUP, ord("T"): int(signal.SIGTERM), ord("I"): int(signal.SIGINT)}


class WaiterSignals:
    """Reads the waiter's socket in a thread of its own. Each signal goes to what is attached (the
    preparer's process, then the tunnel's pump); one that comes while nothing is attached is kept for
    the next, and also given to ``unattached`` (the tunnel's own process ends by it, as it would by
    the signal itself, before its pump runs)."""

    def __init__(self, sock: socket.socket, unattached: Optional[Callable[[int], None]] = None) -> None:
        self.sock = sock
        self.unattached = unattached
        self._deliver: Optional[Callable[[int], None]] = None
        self._kept: list[int] = []
        self._lock = threading.Lock()
        self.thread: Optional[threading.Thread] = None

    def start(self) -> "WaiterSignals":
        """Read in a thread until ``pause``; the socket itself is never shut down here (a carrier that
        takes the tunnel reads it next)."""
        self._wake_r, self._wake_w = os.pipe()
        self.thread = console.thread(self._read, "eic-waiter", (self._wake_r,))
        self.thread.start()
        return self

    def _read(self, wake: int) -> None:
        while True:
            try:
                ready, _, _ = select.select([self.sock.fileno(), wake], [], [])
                if wake in ready:
                    return
                data = self.sock.recv(64)
            except (OSError, ValueError):
                return  # closed by us: the connection is over
            if not data:
                self._got(HANGUP)
                return
            for letter in data:
                if letter in LETTERS:
                    self._got(LETTERS[letter])

    def pause(self) -> None:
        """Stop reading (what was read and not delivered stays ``kept``); ``start`` reads again."""
        thread, self.thread = self.thread, None
        if thread is None:
            return
        os.write(self._wake_w, b"x")
        thread.join()
        os.close(self._wake_r)
        os.close(self._wake_w)

    @property
    def kept(self) -> bool:
        with self._lock:
            return bool(self._kept)

    def notify(self, signum: int) -> None:
        """A signal for this tunnel from elsewhere (one sent to the whole process: ``every``)."""
        self._got(signum)

    def _got(self, signum: int) -> None:
        with self._lock:
            deliver = self._deliver
            if deliver is None:
                self._kept.append(signum)
        if deliver is not None:
            deliver(signum)
        elif self.unattached is not None:
            self.unattached(signum)

    def attach(self, deliver: Callable[[int], None]) -> None:
        with self._lock:
            self._deliver, kept, self._kept = deliver, self._kept, []
        for signum in kept:
            deliver(signum)

    def detach(self) -> None:
        with self._lock:
            self._deliver = None

    def stop(self) -> None:
        """No more reading, nothing more delivered (the outcome is about to be written)."""
        self.unattached = None
        self.detach()
        self.pause()


# The tunnels of this process, for a signal sent to the process itself (not by ssh, whose signals come as
# letters): every tunnel in it ends by it, as one process per tunnel would.
every: list[WaiterSignals] = []


def to_every_tunnel(signum: int, _frame: object) -> None:
    for tunnel in list(every):
        tunnel.notify(signum)

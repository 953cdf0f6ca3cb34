"""The endpoint slot and the TLS connection, opened while the connection is still being prepared.

Under the helper, the preparer tells the process that will carry the tunnel which endpoint it found
(a ``Hint``) as soon as it knows, before the key push and the host keys; the carrier takes the slot
and opens TCP + TLS meanwhile, so that only the HTTP upgrade is left when the plan arrives
(bench/RESULTS.md). What it opened for an endpoint the plan does not use (a location that proved
stale) is given back; what it met opening is what opening would have met, and is raised as such.
"""
from __future__ import annotations

import socket
import threading
from dataclasses import dataclass
from typing import Any, Optional


@dataclass(frozen=True)
class Hint:
    endpoint_id: str
    host: str  # the name to connect to and to sign for (dual-stack, FIPS: endpoint.dns_name_for)
    ca_bundle: Optional[str]
    timeout: float
    max_connections: int
    queue_timeout: float


class EarlyLink:
    """Takes the slot and connects in a thread of its own, from the moment it is made."""

    def __init__(self, hint: Hint) -> None:
        self.hint = hint
        self.slot: Any = None
        self.sock: Optional[socket.socket] = None
        self.error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._open, name="eic-early", daemon=True)
        self._thread.start()

    def _open(self) -> None:
        from eic_proxy.path.handshake import connect_tls
        from eic_proxy.path.limiter import acquire

        h = self.hint
        try:
            self.slot = acquire(h.endpoint_id, h.max_connections, h.queue_timeout)
            self.sock = connect_tls(h.host, 443, h.ca_bundle, h.timeout)
        except BaseException as exc:  # noqa: BLE001 - handed to the thread that claims it
            self.error = exc

    def claim(self, endpoint_id: str, host: str) -> tuple[Any, Optional[socket.socket], Optional[BaseException]]:
        """(slot, TLS socket, error) when opened for this endpoint and name; (None, None, None) after
        giving back what was opened for another one."""
        self._thread.join()
        if (endpoint_id, host) != (self.hint.endpoint_id, self.hint.host):
            self.discard()
            return None, None, None
        return self.slot, self.sock, self.error

    def discard(self) -> None:
        self._thread.join()
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.slot is not None:
            self.slot.release()
            self.slot = None

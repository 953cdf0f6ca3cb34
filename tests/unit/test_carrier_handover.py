"""The hand-over to a carrier (helper/carrier.py), step by step: a tunnel is carried only once its process
has let it go (K, then G), never twice, never dropped; a full or closing carrier takes none."""
from __future__ import annotations

import array
import os
import socket
import sys
import threading

import pytest

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the helper is POSIX-only (Linux: /proc for long paths)")


@pytest.fixture
def host(tmp_path, monkeypatch):
    from eic_proxy.helper import carrier

    taken: list[tuple[object, list[int]]] = []
    carried = threading.Event()

    def carry(plan, fds):
        taken.append((plan, fds))
        carried.set()

    monkeypatch.setattr(carrier, "_carry_hosted", carry)
    monkeypatch.setattr("eic_proxy.lifecycle.connection.Plan", dict)  # any plan-shaped message will do here
    monkeypatch.setattr(sys, "stderr", sys.stderr)  # Host.open makes it a ConsoleStream; put back afterwards
    h = carrier.Host.open(str(tmp_path), "group")
    assert h is not None
    yield h, taken, carried, tmp_path
    h.finish()


def offer(directory, fds: list[int]) -> socket.socket:
    from eic_proxy.helper import carrier, wire
    from eic_proxy.lifecycle.handover import dumps

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(5)
    with carrier._address(str(directory), carrier._name("group", 0)) as address:
        sock.connect(address)
    wire.send(sock, ("tunnel", {"a": "plan"}), dumps=dumps)
    sock.sendmsg([b"F"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())])
    return sock


def five_pipes() -> tuple[list[int], list[int]]:
    pipes = [os.pipe() for _ in range(5)]
    return [r for r, _ in pipes], [w for _, w in pipes]


def test_carried_once_let_go(host):
    h, taken, carried, directory = host
    reads, writes = five_pipes()
    sock = offer(directory, reads)
    assert sock.recv(1) == b"K" and not taken
    sock.sendall(b"G")
    assert carried.wait(5) and len(taken) == 1 and len(taken[0][1]) == 5
    for fd in (*reads, *writes, *taken[0][1]):
        os.close(fd)
    sock.close()


def test_not_carried_when_its_process_gave_up_waiting(host):
    """The connection's process stopped waiting for K and carries the tunnel itself: no G, so the carrier
    gives the descriptors back (closes its copies) and never carries it."""
    h, taken, carried, directory = host
    reads, writes = five_pipes()
    sock = offer(directory, reads)
    assert sock.recv(1) == b"K"
    sock.close()  # no G
    for fd in reads:
        os.close(fd)
    h.finish()  # waits for the acceptor: the offer has been dealt with
    assert not taken
    with pytest.raises(BrokenPipeError):  # every copy of the read ends is closed: the carrier's too
        os.write(writes[0], b"x")
    for fd in writes:
        os.close(fd)


def test_a_closing_carrier_takes_none(host):
    h, taken, carried, directory = host
    with h.lock:
        h.closing = True
    reads, writes = five_pipes()
    sock = offer(directory, reads)
    assert sock.recv(1) == b""  # closed without K: the connection's process carries it
    sock.close()
    assert not taken
    for fd in (*reads, *writes):
        os.close(fd)

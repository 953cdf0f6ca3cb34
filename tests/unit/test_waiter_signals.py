"""ssh's signals as the waiter's letters (helper/waiter.py): each reaches what is attached, a letter read
while nothing is attached is kept for the next, and the socket's end is a hang-up."""
from __future__ import annotations

import signal
import socket
import threading

import pytest

from eic_proxy.helper.waiter import WaiterSignals

pytestmark = pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="the helper is POSIX-only")


def collector() -> tuple[list[int], threading.Event, callable]:
    got: list[int] = []
    seen = threading.Event()

    def deliver(signum: int) -> None:
        got.append(signum)
        seen.set()
    return got, seen, deliver


def test_letters_reach_what_is_attached_and_wait_while_nothing_is():
    ours, theirs = socket.socketpair()
    unattached, read_unattached, note = collector()
    signals = WaiterSignals(theirs, unattached=note).start()
    try:
        got, seen, deliver = collector()
        signals.attach(deliver)
        ours.sendall(b"T")
        assert seen.wait(5) and got == [signal.SIGTERM] and not unattached
        signals.detach()
        ours.sendall(b"xI")  # what is not a letter of ours is ignored
        assert read_unattached.wait(5) and unattached == [signal.SIGINT]
        signals.pause()
        assert signals.kept
        later, seen2, deliver2 = collector()
        signals.start()
        signals.attach(deliver2)  # the kept one first
        assert later == [signal.SIGINT]
        ours.close()  # the waiter was killed outright: a hang-up
        signals.thread.join(5)
        assert later == [signal.SIGINT, signal.SIGHUP]
    finally:
        signals.stop()
        theirs.close()


def test_pause_leaves_the_socket_to_the_next_reader():
    """A tunnel handed to a carrier: the letters that come after the hand-over are the carrier's to read."""
    ours, theirs = socket.socketpair()
    signals = WaiterSignals(theirs).start()
    signals.pause()
    ours.sendall(b"H")
    theirs.settimeout(5)
    assert theirs.recv(1) == b"H"  # not shut down, not read by the paused reader
    assert not signals.kept
    ours.close()
    theirs.close()


def test_unattached_signals_go_to_the_fallback_too():
    ours, theirs = socket.socketpair()
    fallback, seen, deliver = collector()
    signals = WaiterSignals(theirs, unattached=deliver).start()
    try:
        ours.sendall(b"H")
        assert seen.wait(5) and fallback == [signal.SIGHUP] and signals.kept
    finally:
        signals.stop()
        ours.close()
        theirs.close()

"""The I/O driver over a real socket pair: pipelining, chunking, backpressure, a stuck endpoint."""
from __future__ import annotations

import os
import socket
import threading
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eic_proxy.errors import ExitCode
from eic_proxy.transport.local import LocalEnd
from eic_proxy.transport.probe import first_bytes
from eic_proxy.transport.pump import pump
from eic_proxy.tunnel.protocol import MAX_FRAME, TunnelProtocol
from tests.unit.wsserver import ClientFrames, close_frame, server_frame


class Endpoint:
    """The server half of a socketpair: records client frames, echoes CLOSE, sends what it is given."""

    def __init__(self, replies: list[bytes] = (), read: bool = True) -> None:
        self.client, self.server = socket.socketpair()
        self.frames = ClientFrames()
        self.replies = list(replies)
        self.read = read
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        for r in self.replies:
            self.server.sendall(r)
        if not self.read:
            return
        while True:
            try:
                data = self.server.recv(1 << 16)
            except OSError:
                return
            if not data:
                return
            self.frames.feed(data)
            if 0x8 in self.frames.opcodes():
                try:
                    self.server.sendall(close_frame(1000))
                except OSError:
                    pass
                return


def _run_pump(ep: Endpoint, up_chunks: list[bytes], proto: TunnelProtocol, hold_stdin: bool = False):
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    received = bytearray()

    def read_out() -> None:
        while True:
            data = os.read(out_r, 1 << 16)
            if not data:
                return
            received.extend(data)

    def feed() -> None:
        try:
            for c in up_chunks:
                os.write(in_w, c)
        except OSError:  # the pump ended first (a stuck endpoint) and the test closed the pipe
            return
        if not hold_stdin:
            os.close(in_w)

    reader = threading.Thread(target=read_out, daemon=True)
    writer = threading.Thread(target=feed, daemon=True)
    reader.start()
    writer.start()
    closed = []
    result = pump(ep.client, proto, LocalEnd(in_r, out_w), lambda: (closed.append(1), os.close(out_w)), tell=lambda s: None)
    reader.join(10)
    os.close(in_r)
    os.close(out_r)
    if hold_stdin:
        os.close(in_w)
    return result, bytes(received), closed


def quiet(**kw) -> TunnelProtocol:
    kw.setdefault("keepalive", 0)
    return TunnelProtocol(time.monotonic(), warn_before=None, **kw)


def test_uplink_is_pipelined_in_full_frames_without_waiting_for_the_endpoint():
    payload = os.urandom(1 << 20)
    ep = Endpoint()  # never answers until our CLOSE
    result, _, closed = _run_pump(ep, [payload], quiet())
    ep.thread.join(5)
    assert result.error is None and result.exit_code == 0 and closed == [1]
    assert ep.frames.data() == payload
    sizes = [len(p) for op, p, _, _ in ep.frames.frames if op == 2]
    assert max(sizes) <= MAX_FRAME and len(sizes) >= len(payload) // MAX_FRAME
    assert result.bytes_up == len(payload) and result.bytes_down == 0


chunks = st.lists(st.binary(min_size=1, max_size=70_000), max_size=8)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(up=chunks, down=chunks)
def test_any_chunking_both_ways_arrives_intact_and_in_order(up, down):
    ep = Endpoint([b"".join(server_frame(2, d) for d in down)])
    result, received, _ = _run_pump(ep, up, quiet())
    ep.thread.join(5)
    assert ep.frames.data() == b"".join(up)
    assert received == b"".join(down)
    assert result.bytes_up == len(b"".join(up)) and result.bytes_down == len(received)


def test_endpoint_close_error_is_said_before_the_output_closes():
    ep = Endpoint([server_frame(2, b"SSH-2.0-x\r\n") + close_frame(1011, "Internal error")], read=False)
    order: list[str] = []
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    proto = quiet()
    result = pump(ep.client, proto, LocalEnd(in_r, out_w), lambda: (order.append("close"), os.close(out_w)),
                  tell=lambda line: order.append(line))
    assert os.read(out_r, 100) == b"SSH-2.0-x\r\n"
    assert len(order) == 2 and "1011" in order[0] and order[1] == "close"
    assert result.exit_code == ExitCode.TUNNEL_CLOSED and result.error.reported
    for fd in (in_r, in_w, out_r):
        os.close(fd)


def test_an_endpoint_that_stops_reading_is_found_and_nothing_hangs():
    ep = Endpoint(read=False)
    ep.client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
    start = time.monotonic()
    big = [os.urandom(1 << 20)] * 8
    result, _, _ = _run_pump(ep, big, quiet(keepalive=0.3), hold_stdin=True)
    assert result.reason == "send-stalled" and result.exit_code == ExitCode.TIMEOUT
    assert "stopped reading" in result.error.message
    assert time.monotonic() - start < 5


def test_probe_answers_a_ping_before_the_banner():
    ep = Endpoint([server_frame(0x9, b"p") + server_frame(2, b"SSH-2.0-x\r\n")])
    proto = quiet()
    assert first_bytes(ep.client, proto, 5) == b"SSH-2.0-x\r\n"
    time.sleep(0)  # the PONG went out synchronously
    deadline = time.monotonic() + 5
    while 0xA not in ep.frames.opcodes() and time.monotonic() < deadline:
        ep.thread.join(0.05)
    assert 0xA in ep.frames.opcodes()


def test_probe_of_an_unreachable_target_is_none_and_a_silent_server_is_empty():
    ep = Endpoint([close_frame(1011, "Unable to connect to target")], read=False)
    assert first_bytes(ep.client, quiet(), 5) is None
    ep2 = Endpoint(read=False)
    assert first_bytes(ep2.client, quiet(), 0.3) == b""


def test_ssh_pipes_are_grown_and_other_descriptors_are_left_alone():
    """A bulk transfer reads four frames at a time from ssh: its pipe must hold them (Linux)."""
    import fcntl

    from eic_proxy.transport.local import _grow_pipe
    from eic_proxy.transport.pump import UPLINK_FRAMES

    r, w = os.pipe()
    try:
        _grow_pipe(r, UPLINK_FRAMES * MAX_FRAME)
        assert fcntl.fcntl(r, fcntl.F_GETPIPE_SZ) >= UPLINK_FRAMES * MAX_FRAME
    finally:
        os.close(r)
        os.close(w)
    a, b = socket.socketpair()
    try:
        _grow_pipe(a.fileno(), 1 << 20)  # a socket (the listener's connections): nothing happens, nothing raised
    finally:
        a.close()
        b.close()

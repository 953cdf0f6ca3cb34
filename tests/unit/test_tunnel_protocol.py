"""TunnelProtocol with data only: no socket, thread, clock or sleep."""
from __future__ import annotations

import signal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eic_proxy.errors import ExitCode
from eic_proxy.tunnel.effects import Done, Note, Say, Send, Write
from eic_proxy.tunnel.protocol import MAX_FRAME, TunnelProtocol
from tests.unit.wsserver import ClientFrames, close_frame, server_frame

BIN, CONT, TEXT, CLOSE, PING, PONG = 0x2, 0x0, 0x1, 0x8, 0x9, 0xA


def proto(**kw) -> TunnelProtocol:
    kw.setdefault("keepalive", 0)
    kw.setdefault("warn_before", None)
    return TunnelProtocol(0.0, **kw)


def sent(effects) -> ClientFrames:
    frames = ClientFrames()
    for e in effects:
        if isinstance(e, Send):
            frames.feed(e.data)
    return frames


def written(effects) -> bytes:
    return b"".join(e.data for e in effects if isinstance(e, Write))


def kinds(effects) -> list[str]:
    return [type(e).__name__ for e in effects]


def outcome_of(effects):
    done = [e for e in effects if isinstance(e, Done)]
    assert len(done) <= 1
    return done[0].outcome if done else None


class TestData:
    def test_local_bytes_go_up_as_masked_binary_frames_of_at_most_65000(self):
        p = proto()
        p.local_data(b"x" * 150_000, 1.0)
        frames = sent(p.take())
        assert frames.data() == b"x" * 150_000
        assert all(op == BIN and masked and len(pl) <= MAX_FRAME for op, pl, _, masked in frames.frames)
        assert p.bytes_up == 150_000

    def test_binary_frames_split_anywhere_are_delivered_in_order(self):
        p = proto()
        stream = server_frame(BIN, b"hello ") + server_frame(BIN, b"world")
        for i in range(len(stream)):
            p.receive_bytes(stream[i:i + 1], 1.0)
        assert written(p.take()) == b"hello world" and p.outcome is None

    def test_ping_before_any_data_is_answered_and_is_no_error(self):
        p = proto(expect_banner=True)
        p.receive_bytes(server_frame(PING, b"are-you-there") + server_frame(BIN, b"SSH-2.0-x\r\n"), 1.0)
        effects = p.take()
        assert [(op, pl) for op, pl, _, _ in sent(effects).frames] == [(PONG, b"are-you-there")]
        assert written(effects) == b"SSH-2.0-x\r\n" and p.outcome is None

    def test_a_4_mib_message_is_streamed_not_buffered(self):
        p = proto()
        payload = bytes(range(256)) * (4 * 4096)
        stream = server_frame(BIN, payload)
        out = bytearray()
        for i in range(0, len(stream), 16384):
            p.receive_bytes(stream[i:i + 16384], 1.0)
            pieces = [e.data for e in p.take() if isinstance(e, Write)]
            assert all(len(x) <= 16384 for x in pieces)  # nothing waits for the whole message
            out += b"".join(pieces)
        assert bytes(out) == payload and p.outcome is None

    def test_fragmented_message_is_delivered(self):
        p = proto()
        p.receive_bytes(server_frame(BIN, b"ab", fin=False) + server_frame(CONT, b"cd", fin=False)
                        + server_frame(CONT, b"ef"), 1.0)
        assert written(p.take()) == b"abcdef" and p.outcome is None


def assert_protocol_error(p, *words, close_code=None):
    effects = p.take()
    k = kinds(effects)
    assert "Say" in k and k.index("Say") < k.index("CloseOutput") < k.index("Done")
    line = next(e.text for e in effects if isinstance(e, Say))
    assert line.startswith("eic-proxy: error: ") and "\n" not in line
    for w in words:
        assert w in line
    assert p.outcome.exit_code == ExitCode.PROTOCOL
    if close_code is not None:
        closes = [pl for op, pl, _, _ in sent(effects).frames if op == CLOSE]
        assert closes and int.from_bytes(closes[0][:2], "big") == close_code
    return effects


class TestViolations:
    def test_text_frame_after_the_banner(self):
        p = proto()
        p.receive_bytes(server_frame(BIN, b"SSH-2.0-x\r\n") + server_frame(TEXT, b"hi"), 1.0)
        effects = assert_protocol_error(p, "TEXT frame", close_code=1003)
        assert written(effects) == b"SSH-2.0-x\r\n"  # what came before is delivered, and first

    @pytest.mark.parametrize("raw, words", [
        (b"\x83\x00", ["reserved opcode 0x3"]),
        (b"\xc2\x01x", ["reserved bits", "RSV"]),
        (b"\x82\x81abcdx", ["masked"]),
        (b"\x89\x7e\x00\xc8" + b"p" * 200, ["control frame"]),
        (b"\x82\x7f" + (1 << 40).to_bytes(8, "big"), ["over the", "limit"]),
    ])
    def test_garbage_frames_are_named(self, raw, words):
        p = proto()
        p.receive_bytes(raw, 1.0)
        assert_protocol_error(p, *words)

    def test_endless_continuation_frames_are_capped(self):
        p = proto(max_message=100_000)
        p.receive_bytes(server_frame(BIN, b"a" * 1000, fin=False), 1.0)
        for _ in range(99):
            p.receive_bytes(server_frame(CONT, b"a" * 1000, fin=False), 1.0)
            assert p.outcome is None
        p.take()
        p.receive_bytes(server_frame(CONT, b"a" * 1000, fin=False), 1.0)
        assert_protocol_error(p, "more than 100000 bytes", close_code=1009)

    def test_continuation_without_a_message_and_interleaved_message(self):
        p = proto()
        p.receive_bytes(server_frame(CONT, b"x"), 1.0)
        assert_protocol_error(p, "continuation")
        p = proto()
        p.receive_bytes(server_frame(BIN, b"x", fin=False) + server_frame(BIN, b"y"), 1.0)
        assert_protocol_error(p, "new message")


class TestCloses:
    def test_1011_right_after_the_upgrade_is_said_before_the_output_closes(self):
        p = proto()
        p.receive_bytes(close_frame(1011, "Internal error"), 0.1)
        effects = p.take()
        assert kinds(effects) == ["Say", "CloseOutput", "Send", "Done"]
        assert "1011" in effects[0].text and "Internal error" in effects[0].text
        assert p.outcome.exit_code == ExitCode.TUNNEL_CLOSED

    def test_normal_close_delivers_data_then_ends_quietly(self):
        p = proto()
        p.receive_bytes(server_frame(BIN, b"bye") + close_frame(1000), 1.0)
        effects = p.take()
        assert kinds(effects) == ["Write", "CloseOutput", "Send", "Done"]
        assert p.outcome.exit_code == 0 and p.outcome.error is None

    def test_close_reason_with_escape_sequences_is_one_clean_line(self):
        p = proto()
        p.receive_bytes(close_frame(4000, "evil\x1b[2J\neic-proxy: error: fake"), 1.0)
        line = next(e.text for e in p.take() if isinstance(e, Say))
        assert "\x1b" not in line and "\n" not in line and "\\x1b" in line

    def test_unable_to_connect_before_any_answer_asks_for_one_replay(self):
        p = proto(can_replay=True)
        p.local_data(b"SSH-2.0-client\r\n", 0.1)
        p.take()
        p.receive_bytes(close_frame(1011, "Unable to connect to target"), 0.2)
        assert kinds(p.take()) == ["Reconnect"]
        p.local_data(b"more", 0.3)  # arrives while the new WebSocket opens: kept, not sent
        assert p.take() == []
        p.reconnected(0.5)
        effects = p.take()
        assert sent(effects).data() == b"SSH-2.0-client\r\nmore"
        assert {e.generation for e in effects if isinstance(e, Send)} == {1}
        p.receive_bytes(server_frame(BIN, b"SSH-2.0-server\r\n"), 0.6)
        assert written(p.take()) == b"SSH-2.0-server\r\n" and p.outcome is None

    def test_unable_to_connect_twice_or_after_data_is_the_error(self):
        p = proto(can_replay=True)
        p.receive_bytes(close_frame(1011, "Unable to connect to target"), 0.2)
        p.take()
        p.reconnect_failed(None, 0.3)
        assert p.outcome.exit_code == ExitCode.TARGET_UNREACHABLE
        p = proto(can_replay=True)
        p.receive_bytes(server_frame(BIN, b"x") + close_frame(1011, "Unable to connect to target"), 0.2)
        assert p.outcome.exit_code == ExitCode.TARGET_UNREACHABLE

    def test_close_at_the_maximum_duration_is_expiry(self):
        p = proto(max_duration=60)
        p.receive_bytes(close_frame(1000), 59.5)
        assert p.outcome.exit_code == ExitCode.TUNNEL_EXPIRED

    def test_one_byte_close_payload_is_a_protocol_error(self):
        p = proto()
        p.receive_bytes(server_frame(CLOSE, b"\x03"), 1.0)
        assert_protocol_error(p, "malformed close")

    def test_local_eof_sends_close_and_waits_briefly_for_the_echo(self):
        p = proto()
        p.local_eof(1.0)
        assert sent(p.take()).opcodes() == [CLOSE]
        assert p.next_deadline() == pytest.approx(1.5)
        p.receive_bytes(server_frame(BIN, b"tail"), 1.1)  # queued before the echo: still delivered
        p.receive_bytes(close_frame(1000), 1.2)
        effects = p.take()
        assert written(effects) == b"tail" and outcome_of(effects).reason == "eof"
        assert CLOSE not in sent(effects).opcodes()  # the echo is not echoed again
        p2 = proto()
        p2.local_eof(1.0)
        p2.tick(1.4)
        assert p2.outcome is None
        p2.tick(1.5)
        assert p2.outcome.reason == "eof" and p2.outcome.exit_code == 0

    def test_connection_lost_names_what_moved(self):
        p = proto()
        p.receive_bytes(server_frame(BIN, b"x" * 2048), 1.0)
        p.connection_lost("reset by the peer", 2.0)
        line = next(e.text for e in p.take() if isinstance(e, Say))
        assert "reset by the peer" in line and "2.0 KiB down" in line
        assert p.outcome.exit_code == ExitCode.NETWORK


class TestTime:
    def test_keepalive_pings_then_declares_a_silent_endpoint_dead(self):
        p = proto(keepalive=1.0)
        assert p.next_deadline() == 0.0  # the first PING at once: does this endpoint answer PINGs?
        p.tick(0.0)
        assert sent(p.take()).opcodes() == [PING]
        p.receive_bytes(server_frame(PONG, b"eic"), 0.1)
        for t in (1.0, 2.0, 3.0, 4.0):
            p.tick(t)
            assert p.outcome is None
        p.tick(4.5)
        p.tick(5.0)
        assert p.outcome is not None and p.outcome.exit_code == ExitCode.TIMEOUT
        assert "stopped answering" in next(e.text for e in p.take() if isinstance(e, Say))

    def test_an_endpoint_that_never_answers_pings_is_left_to_ssh(self):
        p = proto(keepalive=1.0)
        for t in range(1, 20):
            p.tick(float(t))
        assert p.outcome is None
        assert sent(p.take()).opcodes().count(PING) <= 4

    def test_banner_warning_once_when_the_instance_says_nothing(self):
        p = proto(expect_banner=True, banner_wait=10)
        assert p.next_deadline() == 10
        p.tick(9.9)
        assert p.take() == []
        p.tick(10.0)
        notes = [e.text for e in p.take() if isinstance(e, Note)]
        assert len(notes) == 1 and "sent nothing for 10 s" in notes[0] and "doctor" in notes[0]
        p.tick(20.0)
        assert p.take() == [] and p.outcome is None

    def test_expiry_warning(self):
        p = proto(max_duration=600, warn_before=60)
        p.tick(539)
        assert p.take() == []
        p.tick(540)
        assert "close this tunnel in 60 s" in next(e.text for e in p.take() if isinstance(e, Note))

    def test_a_send_without_progress_for_the_keepalive_window_ends_the_tunnel(self):
        p = proto(keepalive=2.0)
        p.receive_bytes(server_frame(PONG, b""), 0.5)
        p.tick(5.0, send_blocked_since=0.0)
        assert p.outcome is None
        p.tick(6.5, send_blocked_since=0.0)
        assert p.outcome.reason == "send-stalled" and p.outcome.exit_code == ExitCode.TIMEOUT


class TestSignals:
    def test_sighup_is_a_quiet_normal_end(self):
        p = proto()
        p.receive_bytes(server_frame(BIN, b"x"), 0.5)
        p.signal(signal.SIGHUP, 1.0)
        effects = p.take()
        assert "Say" not in kinds(effects) and p.outcome.exit_code == 0

    def test_sigterm_and_sigint_exit_128_plus_n(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            p = proto()
            p.signal(sig, 1.0)
            assert p.outcome.exit_code == 128 + sig

    def test_hangup_while_the_endpoint_is_stalled_says_for_how_long(self):
        p = proto()
        p.receive_bytes(server_frame(BIN, b"x" * 5000), 0.5)
        p.local_data(b"ssh keepalive", 1.0)
        p.take()
        p.signal(signal.SIGHUP, 21.0)
        line = next(e.text for e in p.take() if isinstance(e, Say))
        assert "had not answered for 20 s" in line and "4.9 KiB received" in line
        assert p.outcome.exit_code == ExitCode.TIMEOUT

    def test_hangup_before_the_banner_points_at_the_chain(self):
        p = proto(expect_banner=True)
        p.local_eof(12.0)
        line = next(e.text for e in p.take() if isinstance(e, Say))
        assert "before the instance sent anything" in line and "doctor" in line

    def test_after_the_outcome_signals_change_nothing(self):
        p = proto()
        p.receive_bytes(close_frame(1011, "boom"), 0.5)
        first = p.outcome
        p.take()
        p.signal(signal.SIGHUP, 0.6)
        p.local_eof(0.6)
        assert p.take() == [] and p.outcome is first


# ---- random sequences ------------------------------------------------------------------------------
server_events = st.one_of(
    st.tuples(st.just("data"), st.binary(min_size=1, max_size=3000), st.booleans()),
    st.tuples(st.just("ping"), st.binary(max_size=20), st.just(True)),
)
steps = st.lists(st.one_of(
    st.tuples(st.just("local"), st.binary(min_size=1, max_size=70_000)),
    st.tuples(st.just("server"), server_events),
    st.tuples(st.just("tick"), st.floats(0.01, 5)),
    st.tuples(st.just("split"), st.integers(1, 50)),
), max_size=40)
endings = st.sampled_from(["eof", "close1000", "close1011", "sighup", "sigterm", "lost", "text", "none"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=steps, ending=endings, keepalive=st.sampled_from([0, 1.0, 3.0]))
def test_random_sequences_keep_the_invariants(steps, ending, keepalive):
    p = TunnelProtocol(0.0, keepalive=keepalive, warn_before=None, expect_banner=True, max_duration=3600)
    now, effects, up, down = 0.0, [], bytearray(), bytearray()
    pending, chunk = bytearray(), 7
    fragmenting = False

    def flush():
        while pending:
            p.receive_bytes(bytes(pending[:chunk]), now)
            del pending[:chunk]
            effects.extend(p.take())

    for kind, arg in steps:
        if kind == "local":
            p.local_data(arg, now)
            if p.outcome is None:
                up.extend(arg)
        elif kind == "server":
            what, payload, fin = arg
            if what == "data":
                pending.extend(server_frame(CONT if fragmenting else BIN, payload, fin=fin))
                fragmenting = not fin
                down.extend(payload)
            else:
                pending.extend(server_frame(PING, payload))
        elif kind == "split":
            chunk = arg
            flush()
        else:
            now += arg
            p.tick(now)
        effects.extend(p.take())
    if fragmenting:
        pending.extend(server_frame(CONT, b""))
    flush()
    if ending == "eof":
        p.local_eof(now)
        p.tick(now + 1)
    elif ending.startswith("close"):
        p.receive_bytes(close_frame(int(ending[5:]), "r"), now)
    elif ending in ("sighup", "sigterm"):
        p.signal(signal.SIGHUP if ending == "sighup" else signal.SIGTERM, now)
    elif ending == "lost":
        p.connection_lost("reset", now)
    elif ending == "text":
        p.receive_bytes(server_frame(TEXT, b"t"), now)
    effects.extend(p.take())
    k = kinds(effects)
    assert k.count("Done") <= 1 and k.count("Say") <= 1 and k.count("CloseOutput") <= 1
    if ending != "none" or p.outcome is not None:
        assert k.count("Done") == 1 and k[-1] == "Done"
    if "Done" in k:
        assert "Write" not in k[k.index("CloseOutput"):]
        if p.outcome.error is not None:
            assert k.index("Say") < k.index("CloseOutput")
        else:
            assert "Say" not in k
    got = written(effects)
    assert bytes(down).startswith(got)  # every byte once, in order; all of it unless the tunnel failed first
    if p.outcome is None or p.outcome.reason in ("eof", "closed", "signal:1"):
        assert got == bytes(down)
    frames = sent(effects)
    assert bytes(up).startswith(frames.data()) or frames.data() == bytes(up)
    assert all(masked for _, _, _, masked in frames.frames)
    assert all(len(pl) <= MAX_FRAME for op, pl, _, _ in frames.frames if op == BIN)
    assert p.bytes_down == len(got)

"""Issue 7's hot-path rules: masking in C (wsaccel), large reads, pipelined sends (no stop-and-wait)."""
from __future__ import annotations

import os
import threading

import websocket

from eic_proxy import tunnel
from eic_proxy.protocol import MAX_FRAME
from tests.unit.test_properties import FakeWs


def test_frames_are_masked_by_wsaccel():
    assert "XorMaskerSimple" in websocket._abnf._mask.__code__.co_names


def test_uplink_is_pipelined_in_full_frames_without_waiting_for_the_endpoint():
    """1 MiB goes up while the endpoint sends nothing back: no per-frame acknowledgement is awaited."""
    payload = os.urandom(1 << 20)
    ws = FakeWs([])  # never answers until our CLOSE
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()

    def feed() -> None:
        os.write(in_w, payload)
        os.close(in_w)

    threading.Thread(target=feed, daemon=True).start()
    result = tunnel.pump(ws, in_r, out_w, keepalive=0, warn_before=None)
    os.close(in_r)
    os.close(out_w)
    os.close(out_r)
    assert result.error is None and bytes(ws.sent) == payload
    assert max(ws.sizes) <= MAX_FRAME and len(ws.sizes) >= len(payload) // MAX_FRAME
    assert result.bytes_up == len(payload) and result.bytes_down == 0


def test_every_command_is_known_to_the_one_command_parser():
    """main() sets up only the sub-parser it needs; COMMANDS must name every one of them."""
    from eic_proxy.cli import COMMANDS, build_parser

    full = build_parser()
    choices = next(a for a in full._actions if a.dest == "command").choices
    assert sorted(choices) == sorted(COMMANDS)
    for name in COMMANDS:
        one = build_parser(name)
        assert list(next(a for a in one._actions if a.dest == "command").choices) == [name]

"""Property-based tests (issue 6): the pump keeps any chunking intact and in order; config round trips."""
from __future__ import annotations

import os
import threading

from hypothesis import HealthCheck, given, settings, strategies as st

from eic_proxy import config, tunnel
from eic_proxy.resolve import parse_host

chunks = st.lists(st.binary(min_size=1, max_size=70_000), max_size=12)


class FakeWs:
    """Just enough of a websocket-client connection: records frames sent, serves frames received."""

    def __init__(self, frames: list[bytes]) -> None:
        self.frames = list(frames)
        self.sent = bytearray()
        self.sizes: list[int] = []
        self.closed = threading.Event()

    def send_binary(self, data: bytes) -> None:
        self.sent += data
        self.sizes.append(len(data))

    def recv_data(self, control_frame: bool = False):
        if self.frames:
            return 2, self.frames.pop(0)
        self.closed.wait(10)          # the endpoint echoes our CLOSE once we sent it
        return 8, b"\x03\xe8"

    def send_close(self, code: int = 1000, reason: bytes = b"") -> None:
        self.closed.set()

    def ping(self, payload: bytes = b"") -> None:
        pass

    def shutdown(self) -> None:
        pass


def _read_all(fd: int, into: bytearray) -> None:
    while True:
        data = os.read(fd, 1 << 16)
        if not data:
            return
        into += data


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(up=chunks, down=chunks)
def test_pump_delivers_any_chunking_intact_and_in_order(up, down):
    ws = FakeWs(down)
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    received = bytearray()
    reader = threading.Thread(target=_read_all, args=(out_r, received), daemon=True)
    reader.start()

    def feed() -> None:
        for c in up:
            os.write(in_w, c)
        os.close(in_w)

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    result = tunnel.pump(ws, in_r, out_w, None, on_close_out=lambda: os.close(out_w), keepalive=0, warn_before=None)
    writer.join(10)
    reader.join(10)
    os.close(in_r)
    os.close(out_r)
    assert result.error is None
    assert bytes(ws.sent) == b"".join(up)
    assert all(0 < n <= tunnel.MAX_FRAME for n in ws.sizes)  # never an empty or oversized frame
    assert bytes(received) == b"".join(down)
    assert result.bytes_up == len(ws.sent) and result.bytes_down == len(received)


names = st.from_regex(r"[a-z][a-z0-9-]{0,20}[a-z0-9]", fullmatch=True)
regions = st.sampled_from(["us-east-1", "eu-west-1", "ap-southeast-2", "us-gov-west-1"])
values = st.from_regex(r"[A-Za-z0-9_.-]{1,20}", fullmatch=True)


@given(name=names, region=st.none() | regions, profile=st.none() | values)
def test_host_suffix_round_trip(name, region, profile):
    text = name + (f"--{region}" if region else "") + (f"--{profile}" if region and profile else "")
    spec = parse_host(text)
    assert spec.alias == name and spec.region == region
    assert spec.profile == (profile if region else None)


settings_st = st.builds(
    config.Settings,
    profile=st.none() | values, region=st.none() | regions, os_user=st.none() | values,
    eice_id=st.none() | st.from_regex(r"eice-[0-9a-f]{17}", fullmatch=True),
    max_tunnel_duration=st.none() | st.integers(1, 3600),
    key_type=st.none() | st.sampled_from(["ed25519", "rsa-2048", "rsa-4096"]),
    key_lifetime=st.none() | st.integers(300, 86400), key_store=st.none() | st.sampled_from(["file", "keyring"]),
    agent=st.none() | st.booleans(), identity=st.none() | st.from_regex(r"/[a-z]{1,10}/id_[a-z0-9]{1,8}", fullmatch=True),
)


def _render(s: config.Settings) -> str:
    out = []
    for key, name in config.KEYS.items():
        v = getattr(s, name)
        if v is not None:
            out.append(f"{key} = {('yes' if v else 'no') if isinstance(v, bool) else v}")
    return "\n".join(out)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(defaults=settings_st, host=settings_st, pattern=names)
def test_config_round_trip_and_layering(tmp_path, defaults, host, pattern):
    path = tmp_path / "c.ini"
    path.write_text(f"[defaults]\n{_render(defaults)}\n\n[host {pattern}]\n{_render(host)}\n")
    cfg = config.load(path)
    assert cfg.defaults == defaults
    assert cfg.for_host(pattern) == host.over(defaults)
    assert cfg.for_host(pattern + "-other-x") == defaults

"""Test helpers: the server side of RFC 6455 framing (unmasked frames out, masked frames in)."""
from __future__ import annotations

import struct


def server_frame(opcode: int, payload: bytes = b"", fin: bool = True, rsv: int = 0) -> bytes:
    """A frame as an endpoint sends it: never masked."""
    b1 = (0x80 if fin else 0) | rsv | opcode
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", b1, n)
    elif n < 65536:
        head = struct.pack("!BBH", b1, 126, n)
    else:
        head = struct.pack("!BBQ", b1, 127, n)
    return head + payload


def close_frame(code: int, reason: str = "") -> bytes:
    return server_frame(0x8, struct.pack("!H", code) + reason.encode())


class ClientFrames:
    """Decodes what a client sent (masked frames) from a byte stream fed in pieces."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.frames: list[tuple[int, bytes, bool, bool]] = []  # opcode, payload, fin, masked

    def feed(self, data: bytes) -> None:
        self.buf += data
        while len(self.buf) >= 2:
            b1, b2 = self.buf[0], self.buf[1]
            n, pos = b2 & 0x7F, 2
            if n == 126:
                if len(self.buf) < 4:
                    return
                n, pos = struct.unpack_from("!H", self.buf, 2)[0], 4
            elif n == 127:
                if len(self.buf) < 10:
                    return
                n, pos = struct.unpack_from("!Q", self.buf, 2)[0], 10
            masked = bool(b2 & 0x80)
            if len(self.buf) < pos + (4 if masked else 0) + n:
                return
            key = bytes(self.buf[pos:pos + 4]) if masked else b"\0\0\0\0"
            pos += 4 if masked else 0
            payload = bytes(b ^ key[i % 4] for i, b in enumerate(self.buf[pos:pos + n])) if masked and n < 4096 \
                else _unmask(bytes(self.buf[pos:pos + n]), key)
            self.frames.append((b1 & 0x0F, payload, bool(b1 & 0x80), masked))
            del self.buf[:pos + n]

    def data(self) -> bytes:
        return b"".join(p for op, p, _, _ in self.frames if op in (0, 2))

    def opcodes(self) -> list[int]:
        return [op for op, _, _, _ in self.frames]


def _unmask(data: bytes, key: bytes) -> bytes:
    n = len(data)
    whole = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(whole, "little")).to_bytes(n, "little")

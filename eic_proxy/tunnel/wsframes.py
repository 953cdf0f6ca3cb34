"""RFC 6455 framing without I/O: bytes from the endpoint in, frames out; frames to send, bytes out.

Our own codec instead of a library's reader, for three reasons (docs/protocol.md §4.2):
payloads are *streamed* (a 4 MiB message or endless continuation frames never pile up in memory),
every violation is named (reserved opcode, RSV bits, a masked or oversized frame) instead of
surfacing as a library exception, and the same bytes-in/frames-out object serves the pump and the
probes. ``handshake.py`` does the TLS and the HTTP upgrade (and proxies).

A data frame is handed on as it arrives: when only part of its payload is here, the parser emits
that part as a fragment (``fin=False``) and the rest as ``CONT`` frames. That is the same message
under RFC 6455 §5.4, so the consumer sees one rule for big frames and for fragmented messages.
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Callable, Optional, Union


class Opcode(IntEnum):
    """RFC 6455 §5.2 frame opcodes (the parser hands out plain ints; these compare equal to them)."""

    CONT = 0x0
    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA


class CloseCode(IntEnum):
    """RFC 6455 §7.4.1 close codes (and the IANA registry's 1012-1014)."""

    NORMAL = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    NO_STATUS = 1005
    ABNORMAL = 1006
    INVALID_DATA = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    MANDATORY_EXTENSION = 1010
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013
    BAD_GATEWAY = 1014


OP_CONT, OP_TEXT, OP_BINARY = Opcode.CONT, Opcode.TEXT, Opcode.BINARY
OP_CLOSE, OP_PING, OP_PONG = Opcode.CLOSE, Opcode.PING, Opcode.PONG
KNOWN_OPCODES = frozenset((OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG))
CONTROL_MAX = 125


@dataclass(frozen=True)
class Frame:
    opcode: int
    payload: bytes
    fin: bool = True


class FrameError(Exception):
    """The endpoint broke RFC 6455. ``what`` is a short user-facing phrase; ``close_code`` is what we answer."""

    def __init__(self, what: str, close_code: int = CloseCode.PROTOCOL_ERROR) -> None:
        super().__init__(what)
        self.what = what
        self.close_code = close_code


class FrameParser:
    """Bytes from the server → frames, with data payloads streamed; raises FrameError on a violation.

    ``max_frame`` bounds the length a frame header may announce (a garbage header must not make us
    wait for a terabyte); payload bytes are never buffered beyond what one ``feed`` brought.
    """

    def __init__(self, max_frame: int) -> None:
        self.max_frame = max_frame
        self._buf = bytearray()
        self._opcode: int = OP_BINARY
        self._remaining = 0        # payload bytes still due for the data frame being streamed
        self._fin = True            # that frame's FIN bit
        self._started = False       # a first fragment of that frame has been emitted

    @property
    def mid_frame(self) -> bool:
        """A data frame has started and more of its payload is due."""
        return self._remaining > 0

    def feed(self, data: Union[bytes, memoryview]) -> list[Frame]:
        """Frames (or pieces of one) in ``data``; payload bytes are copied once, straight from ``data``."""
        if self._buf:  # a header was cut at the end of the last read: rare, so the join is cheap
            self._buf += data
            buf: Union[bytes, memoryview] = memoryview(bytes(self._buf))
            self._buf.clear()
        else:
            buf = memoryview(data) if not isinstance(data, memoryview) else data
        out: list[Frame] = []
        pos = 0
        n = len(buf)
        while True:
            if self._remaining:
                take = min(self._remaining, n - pos)
                if take == 0:
                    break
                self._remaining -= take
                last = self._remaining == 0
                out.append(Frame(OP_CONT if self._started else self._opcode, bytes(buf[pos:pos + take]),
                                 self._fin and last))
                self._started = True
                pos += take
                continue
            if n - pos < 2:
                break
            b1, b2 = buf[pos], buf[pos + 1]
            fin, rsv, opcode = bool(b1 & 0x80), b1 & 0x70, b1 & 0x0F
            if rsv:
                raise FrameError(f"a frame with reserved bits set (RSV {rsv >> 4:#05b}) no extension was agreed for")
            if opcode not in KNOWN_OPCODES:
                raise FrameError(f"a frame with the reserved opcode {opcode:#x}")
            if b2 & 0x80:
                raise FrameError("a masked frame (a server must not mask)")
            length = b2 & 0x7F
            head = 2
            if length == 126:
                head = 4
                if n - pos < head:
                    break
                length = struct.unpack_from("!H", buf, pos + 2)[0]
            elif length == 127:
                head = 10
                if n - pos < head:
                    break
                length = struct.unpack_from("!Q", buf, pos + 2)[0]
            if opcode >= OP_CLOSE:
                if length > CONTROL_MAX or not fin:
                    raise FrameError("a control frame that is fragmented or longer than 125 bytes")
                if n - pos < head + length:
                    break
                out.append(Frame(opcode, bytes(buf[pos + head:pos + head + length]), True))
                pos += head + length
                continue
            if length > self.max_frame:
                raise FrameError(f"a frame of {length} bytes, over the {self.max_frame}-byte limit", CloseCode.MESSAGE_TOO_BIG)
            pos += head
            if length == 0:
                out.append(Frame(opcode, b"", fin))
                continue
            self._opcode, self._fin, self._remaining, self._started = opcode, fin, length, False
        if pos < n:
            self._buf += buf[pos:]
        return out


def _xor_mask() -> Callable[[bytes, bytes], bytes]:
    """Masking is the uplink's only per-byte cost: wsaccel's C loop when it is there."""
    try:
        from wsaccel.xormask import XorMaskerSimple

        return lambda key, data: XorMaskerSimple(key).process(data)
    except ImportError:  # pragma: no cover - PyPy or no compiler: the pure-Python fallback
        def mask(key: bytes, data: bytes) -> bytes:
            n = len(data)
            if not n:
                return b""
            whole = (key * (n // 4 + 1))[:n]
            return (int.from_bytes(data, "little") ^ int.from_bytes(whole, "little")).to_bytes(n, "little")

        return mask


_mask = _xor_mask()
MASKER = "python" if _mask.__name__ == "mask" else "wsaccel"


def encode(opcode: int, payload: bytes = b"", mask_key: Optional[bytes] = None) -> bytes:
    """One masked client frame with FIN set (clients must mask, RFC 6455 §5.3)."""
    key = mask_key if mask_key is not None else os.urandom(4)
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    return head + key + _mask(key, payload)


def close_payload(code: Optional[int], reason: str = "") -> bytes:
    return b"" if code is None else struct.pack("!H", code) + reason.encode("utf-8")[:123]

"""Host keys without trust-on-first-use: what the console printed at boot, and what the server presents.

No AWS API returns an instance's SSH host keys, but cloud-init prints them to the console at boot
and ``ec2:GetConsoleOutput`` returns the console (docs/protocol.md §8): a block of full public keys
between ``-----BEGIN SSH HOST KEY KEYS-----`` and ``-----END SSH HOST KEY KEYS-----`` and a block of
fingerprints (``SHA256:…``). Lines may carry a prefix (``ec2: `` on Amazon Linux, a kernel timestamp
and ``cloud-init[N]: `` elsewhere), end in CRLF, repeat once per boot, or be cut off where the
console scrolled. Both functions here are pure; the fetching is in ``session``/``store.knownhosts``.

``KexSniffer`` reads the server's side of the SSH transport as it passes through the tunnel, up to
the key-exchange reply, which carries the server's host key in clear (RFC 4253 §7–8, RFC 5656 §4):
so the key the server presents is checked against the console's before ssh sees it.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from dataclasses import dataclass, field
from typing import Optional

BEGIN_KEYS = "-----BEGIN SSH HOST KEY KEYS-----"
END_KEYS = "-----END SSH HOST KEY KEYS-----"
BEGIN_FPS = "-----BEGIN SSH HOST KEY FINGERPRINTS-----"
END_FPS = "-----END SSH HOST KEY FINGERPRINTS-----"
KEY_TYPES = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521", "ssh-rsa",
             "ssh-dss")


@dataclass(frozen=True)
class HostKey:
    key_type: str
    blob: bytes

    @property
    def line(self) -> str:
        return f"{self.key_type} {base64.b64encode(self.blob).decode()}"

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.blob)


def fingerprint(blob: bytes) -> str:
    """OpenSSH's ``SHA256:…`` fingerprint of a public key blob."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def key_from_line(line: str) -> Optional[HostKey]:
    """``TYPE BASE64 [comment]`` → HostKey, or None when the line is not a whole, well-formed key."""
    parts = line.split()
    start = next((i for i, word in enumerate(parts) if word in KEY_TYPES), None)  # past any line prefix
    if start is None:
        return None
    parts = parts[start:]
    if len(parts) < 2:
        return None
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError):
        return None
    fields = _fields(blob)
    if fields is None or len(fields) != _FIELDS[parts[0]] or fields[0] != parts[0].encode():
        return None  # the type inside the blob must match, and a cut-off key is no key
    return HostKey(parts[0], blob)


_FIELDS = {"ssh-ed25519": 2, "ecdsa-sha2-nistp256": 3, "ecdsa-sha2-nistp384": 3, "ecdsa-sha2-nistp521": 3,
           "ssh-rsa": 3, "ssh-dss": 5}


def _fields(blob: bytes) -> Optional[list[bytes]]:
    """The length-prefixed fields of a key blob, or None unless they fill it exactly."""
    out, pos = [], 0
    while pos < len(blob):
        if pos + 4 > len(blob):
            return None
        (n,) = struct.unpack(">I", blob[pos:pos + 4])
        if pos + 4 + n > len(blob):
            return None
        out.append(blob[pos + 4:pos + 4 + n])
        pos += 4 + n
    return out


@dataclass
class ConsoleKeys:
    """The host keys of the most recent complete block, and why there are none when there are none."""

    keys: list[HostKey] = field(default_factory=list)
    why_none: str = ""


def _blocks(lines: list[str], begin: str, end: str) -> list[tuple[list[str], bool]]:
    """Every ``begin``…``end`` block: its lines (the marker's prefix stripped), and whether it ended."""
    out: list[tuple[list[str], bool]] = []
    current: Optional[list[str]] = None
    prefix = ""
    for raw in lines:
        if begin in raw:
            prefix = raw[: raw.index(begin)]
            current = []
            out.append((current, False))
            continue
        if current is None:
            continue
        if end in raw:
            out[-1] = (current, True)
            current = None
            continue
        current.append(raw[len(prefix):] if prefix and raw.startswith(prefix) else raw.strip())
    return out


def parse_console(text: str) -> ConsoleKeys:
    """The host keys cloud-init printed, cross-checked with its fingerprint block when there is one."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    blocks = _blocks(lines, BEGIN_KEYS, END_KEYS)
    if not blocks:
        return ConsoleKeys(why_none="the console output has no SSH host key block (not a cloud-init "
                                    "instance, a Windows instance, or the boot messages scrolled away)")
    complete = [b for b, done in blocks if done]
    chosen = complete[-1] if complete else blocks[-1][0]
    keys = [k for k in (key_from_line(line) for line in chosen) if k is not None]
    fp_blocks = [b for b, done in _blocks(lines, BEGIN_FPS, END_FPS) if done]
    if fp_blocks:
        listed = {word for line in fp_blocks[-1] for word in line.split() if word.startswith("SHA256:")}
        keys = [k for k in keys if k.fingerprint in listed]
    if not keys:
        return ConsoleKeys(why_none="the console's SSH host key block is cut off or holds no usable key")
    seen: set[bytes] = set()
    unique = [k for k in keys if not (k.blob in seen or seen.add(k.blob))]  # type: ignore[func-returns-value]
    return ConsoleKeys(unique)


# SSH transport: the server's key-exchange reply (KEXDH_REPLY / KEX_ECDH_REPLY / hybrid KEMs = 31,
# KEX_DH_GEX_REPLY = 33) starts with the host key K_S; in group exchange 31 is the group (two mpints),
# told apart by its first field not being a key. Before NEWKEYS (21) nothing is encrypted.
_KEX_REPLIES = (31, 33)
_NEWKEYS = 21
SNIFF_LIMIT = 256 * 1024


class KexSniffer:
    """Feed it what the server sends; ``host_key`` is set once the key-exchange reply has gone by.

    ``done`` turns true at the host key, at NEWKEYS, on anything that is not an SSH transport, or
    past ``SNIFF_LIMIT`` bytes: from then on it costs nothing.
    """

    def __init__(self) -> None:
        self.buf = bytearray()
        self.banner_seen = False
        self.host_key: Optional[HostKey] = None
        self.done = False
        self.seen = 0

    def feed(self, data: bytes) -> None:
        if self.done:
            return
        self.seen += len(data)
        self.buf += data
        if self.seen > SNIFF_LIMIT:
            self.done = True
        while not self.done:
            if not self.banner_seen:
                nl = self.buf.find(b"\n")
                if nl < 0:
                    return
                line = bytes(self.buf[:nl])
                del self.buf[:nl + 1]
                self.banner_seen = line.startswith(b"SSH-")  # RFC 4253 §4.2: other lines may come first
                continue
            if len(self.buf) < 6:
                return
            (length,) = struct.unpack(">I", self.buf[:4])
            if length > 35000 or length < 2:
                self.done = True  # not an SSH binary packet: nothing to learn here
                return
            if len(self.buf) < 4 + length:
                return
            padding = self.buf[4]
            payload = bytes(self.buf[5:4 + length - padding])
            del self.buf[:4 + length]
            self._packet(payload)

    def _packet(self, payload: bytes) -> None:
        if not payload:
            return
        if payload[0] == _NEWKEYS:
            self.done = True
        elif payload[0] in _KEX_REPLIES and len(payload) >= 9:
            (n,) = struct.unpack(">I", payload[1:5])
            blob = payload[5:5 + n]
            (t,) = struct.unpack(">I", blob[:4]) if len(blob) >= 4 else (0,)
            key_type = blob[4:4 + t].decode("ascii", "replace")
            if len(blob) == n and (key_type in KEY_TYPES or key_type.endswith("-cert-v01@openssh.com")):
                self.host_key = HostKey(key_type, blob)
                self.done = True

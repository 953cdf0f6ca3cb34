"""A minimal ssh-agent client: add our key with a lifetime, list, remove — the agent protocol itself.

No shelling out to ssh-add: it may be missing, would need the private key in a file (keyring mode
has none), and cannot be told the key's remaining life without a second process. The protocol is
draft-miller-ssh-agent: uint32 length + type byte + payload.
"""
from __future__ import annotations

import os
import socket
import struct
import sys
from typing import Any, Optional

from eic_proxy.errors import AgentError

SSH_AGENT_SUCCESS = 6
SSH_AGENTC_REQUEST_IDENTITIES = 11
SSH_AGENT_IDENTITIES_ANSWER = 12
SSH_AGENTC_REMOVE_IDENTITY = 18
SSH_AGENTC_ADD_ID_CONSTRAINED = 25
SSH_AGENT_CONSTRAIN_LIFETIME = 1
WINDOWS_PIPE = r"\\.\pipe\openssh-ssh-agent"
MAX_REPLY = 256 * 1024




def _string(b: bytes) -> bytes:
    return struct.pack(">I", len(b)) + b


def _mpint(n: int) -> bytes:
    if n == 0:
        return _string(b"")
    raw = n.to_bytes((n.bit_length() + 8) // 8, "big")  # one spare bit keeps it positive
    return _string(raw)


def _read_string(buf: bytes, pos: int) -> tuple[bytes, int]:
    (n,) = struct.unpack_from(">I", buf, pos)
    start = pos + 4
    if start + n > len(buf):
        raise AgentError("malformed reply from the ssh-agent")
    return buf[start:start + n], start + n


def socket_path() -> Optional[str]:
    path = os.environ.get("SSH_AUTH_SOCK")
    if path:
        return path
    if sys.platform == "win32":
        return WINDOWS_PIPE
    return None


def _key_payload(private_key: Any, comment: str) -> bytes:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    if isinstance(private_key, ed25519.Ed25519PrivateKey):
        seed = private_key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                         serialization.NoEncryption())
        pub = private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return _string(b"ssh-ed25519") + _string(pub) + _string(seed + pub) + _string(comment.encode())
    if isinstance(private_key, rsa.RSAPrivateKey):
        n = private_key.private_numbers()
        return (_string(b"ssh-rsa") + _mpint(n.public_numbers.n) + _mpint(n.public_numbers.e) + _mpint(n.d)
                + _mpint(n.iqmp) + _mpint(n.p) + _mpint(n.q) + _string(comment.encode()))
    raise AgentError(f"cannot add a {type(private_key).__name__} to the ssh-agent")


class Agent:
    """One connection to the user's agent (a Unix socket, or the Windows OpenSSH named pipe)."""

    def __init__(self, path: Optional[str] = None, timeout: float = 5.0) -> None:
        found = path or socket_path()
        if not found:
            raise AgentError("no ssh-agent: SSH_AUTH_SOCK is not set",
                             hint="start one (`eval $(ssh-agent)`), or drop --agent to use the key file")
        self.path: str = found
        self.timeout = timeout
        self._sock: Any = None
        self._pipe: Any = None

    def __enter__(self) -> "Agent":
        try:
            if self.path.replace("/", "\\").startswith("\\\\.\\pipe\\"):
                self._pipe = open(self.path, "r+b", buffering=0)
            elif sys.platform == "win32":
                raise AgentError(f"SSH_AUTH_SOCK={self.path} is a Unix socket (Git Bash's or WSL's agent), which "
                                 "Windows programs cannot reach",
                                 hint="unset SSH_AUTH_SOCK to use Windows' own agent (the ssh-agent service), or "
                                      "drop --agent to use the key file")
            else:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self._sock.settimeout(self.timeout)
                self._sock.connect(self.path)
        except OSError as exc:
            raise AgentError(f"cannot reach the ssh-agent at {self.path}: {exc.strerror or exc}",
                             hint="is the agent running? check SSH_AUTH_SOCK") from exc
        return self

    def __exit__(self, *exc: object) -> None:
        for h in (self._sock, self._pipe):
            if h is not None:
                h.close()

    def _io(self, data: bytes) -> None:
        if self._pipe is not None:  # pragma: no cover
            self._pipe.write(data)
        else:
            self._sock.sendall(data)

    def _read(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            chunk = self._pipe.read(n - len(out)) if self._pipe is not None else self._sock.recv(n - len(out))
            if not chunk:
                raise AgentError("the ssh-agent closed the connection")
            out += chunk
        return out

    def request(self, msg_type: int, payload: bytes = b"") -> tuple[int, bytes]:
        body = bytes([msg_type]) + payload
        try:
            self._io(struct.pack(">I", len(body)) + body)
            (n,) = struct.unpack(">I", self._read(4))
            if not 1 <= n <= MAX_REPLY:
                raise AgentError("malformed reply from the ssh-agent")
            reply = self._read(n)
        except OSError as exc:
            raise AgentError(f"talking to the ssh-agent failed: {exc}") from exc
        return reply[0], reply[1:]

    def identities(self) -> list[tuple[bytes, str]]:
        kind, body = self.request(SSH_AGENTC_REQUEST_IDENTITIES)
        if kind != SSH_AGENT_IDENTITIES_ANSWER:
            raise AgentError("the ssh-agent refused to list its keys")
        (count,) = struct.unpack_from(">I", body, 0)
        pos, out = 4, []
        for _ in range(count):
            blob, pos = _read_string(body, pos)
            comment, pos = _read_string(body, pos)
            out.append((blob, comment.decode(errors="replace")))
        return out

    def add(self, private_key: Any, comment: str, lifetime: int) -> None:
        payload = _key_payload(private_key, comment)
        payload += bytes([SSH_AGENT_CONSTRAIN_LIFETIME]) + struct.pack(">I", max(1, int(lifetime)))
        kind, _ = self.request(SSH_AGENTC_ADD_ID_CONSTRAINED, payload)
        if kind != SSH_AGENT_SUCCESS:
            raise AgentError("the ssh-agent refused the key", hint="a locked or restricted agent? try `ssh-add -l`")

    def remove(self, blob: bytes) -> bool:
        kind, _ = self.request(SSH_AGENTC_REMOVE_IDENTITY, _string(blob))
        return kind == SSH_AGENT_SUCCESS

    def has(self, blob: bytes) -> bool:
        return any(b == blob for b, _ in self.identities())


def load_key(manager: Any, key: Any) -> bool:
    """Put the managed key into the agent, with a lifetime equal to its remaining life; False if present."""
    from eic_proxy.keys.lifecycle import remaining_life

    with Agent() as agent:
        if agent.has(key.blob):
            return False
        agent.add(manager.private_key(key), f"eic-proxy {key.fingerprint}",
                  int(remaining_life(key, manager.lifetime)))
    return True

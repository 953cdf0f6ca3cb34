"""The Windows OpenSSH agent is a named pipe, opened as a file: the same protocol goes over it."""
from __future__ import annotations

import io
import struct

from eic_proxy.keys import agent


class FakePipe(io.RawIOBase):
    """Answers one SSH_AGENTC_REQUEST_IDENTITIES with one identity."""

    def __init__(self) -> None:
        self.written = b""
        body = bytes([12]) + struct.pack(">I", 1) + agent._string(b"blob") + agent._string(b"eic-proxy key")
        self.reply = io.BytesIO(struct.pack(">I", len(body)) + body)

    def write(self, data: bytes) -> int:
        self.written += bytes(data)
        return len(data)

    def read(self, n: int = -1) -> bytes:
        return self.reply.read(n)


def test_named_pipe_speaks_the_agent_protocol(monkeypatch):
    opened = {}
    pipe = FakePipe()

    def fake_open(path, mode="r", buffering=-1):
        opened["path"], opened["mode"] = path, mode
        return pipe

    monkeypatch.setattr(agent, "open", fake_open, raising=False)
    with agent.Agent(agent.WINDOWS_PIPE) as a:
        ids = a.identities()
    assert opened == {"path": r"\\.\pipe\openssh-ssh-agent", "mode": "r+b"}
    assert pipe.written == struct.pack(">I", 1) + bytes([11])
    assert ids == [(b"blob", "eic-proxy key")]


def test_windows_default_is_the_openssh_pipe(monkeypatch):
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    monkeypatch.setattr(agent.sys, "platform", "win32")
    assert agent.socket_path() == r"\\.\pipe\openssh-ssh-agent"

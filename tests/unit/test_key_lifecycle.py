"""Key lifecycle: rotation only when due and quiet, types, BYO keys, audit log, agent protocol."""
import os
import shutil
import stat
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from eic_proxy.errors import ExitCode, KeyError_
from eic_proxy.keys import lifecycle as keys
from eic_proxy.keys import material
from eic_proxy.keys.lifecycle import ROTATE_QUIET, KeyManager
from eic_proxy.store import audit
from tests.conftest import wait_until


def test_rotation_waits_for_due_and_quiet(isolated_env):
    m = KeyManager(lifetime=300)
    k1 = m.ensure()
    assert not m.due(k1) and m.rotate_if_due() is None
    old = time.time() - 400
    os.utime(m.public_path, (old, old))          # the key is now older than its lifetime
    assert m.due(m.current())
    m.note_use()                                 # but this process just used it: its own use does not count
    k2 = m.rotate_if_due()
    assert k2 is not None and k2.public_line != k1.public_line
    os.utime(m.public_path, (old, old))
    with open(m._last_use_path, "w") as fh:      # another process used it 10 s ago
        fh.write(f"{time.time() - 10} 1")
    assert m.rotate_if_due() is None
    with pytest.raises(KeyError_) as info:
        m.rotate()
    assert "retry in" in info.value.hint
    with open(m._last_use_path, "w") as fh:
        fh.write(f"{time.time() - ROTATE_QUIET - 1} 1")
    assert m.rotate_if_due() is not None


def test_forced_rotate_and_clear(isolated_env):
    m = KeyManager()
    k1 = m.ensure()
    m.note_use()
    k2 = m.rotate(force=True)
    assert k1.fingerprint != k2.fingerprint and stat.S_IMODE(k2.private_path.stat().st_mode) == 0o600
    removed = m.clear()
    assert str(m.private_path) in removed and m.current() is None


def test_no_rotation_while_another_process_holds_the_shared_lock(isolated_env):
    m = KeyManager(lifetime=300)
    k1 = m.ensure()
    old = time.time() - 400
    os.utime(m.public_path, (old, old))
    with m.using():
        with ThreadPoolExecutor(1) as pool:  # rotation needs the exclusive lock: it gives up after its timeout
            assert pool.submit(m.rotate_if_due).result() is None
    assert m.current().public_line == k1.public_line


def test_rsa_key_types(isolated_env):
    m = KeyManager("rsa-2048")
    k = m.ensure()
    assert k.key_type == "ssh-rsa" and m.private_path.name == "id_rsa"
    material.check_pushable(k.public_line, "x")
    assert KeyManager("rsa-4096").due(k)  # a configured size change makes the old key due


def _keygen(tmp_path, kind, bits=None):
    path = tmp_path / f"user_{kind}{bits or ''}"
    argv = ["ssh-keygen", "-q", "-t", kind, "-N", "", "-f", str(path)] + (["-b", str(bits)] if bits else [])
    subprocess.run(argv, check=True)
    return path


@pytest.mark.skipif(not shutil.which("ssh-keygen"), reason="needs ssh-keygen")
def test_identity_accepts_ed25519_and_rsa_refuses_ecdsa_and_small_rsa(tmp_path):
    ok = material.identity_key(_keygen(tmp_path, "ed25519"))
    assert ok.storage == "identity" and ok.key_type == "ssh-ed25519"
    assert material.identity_key(_keygen(tmp_path, "rsa", 2048).with_suffix(".pub")).key_type == "ssh-rsa"
    with pytest.raises(KeyError_) as info:
        material.identity_key(_keygen(tmp_path, "ecdsa"))
    assert "ECDSA" in info.value.message and info.value.exit_code == ExitCode.KEY
    with pytest.raises(KeyError_) as info:
        material.identity_key(_keygen(tmp_path, "rsa", 1024))
    assert "2048" in info.value.message
    with pytest.raises(KeyError_) as info:
        material.check_pushable("sk-ssh-ed25519@openssh.com AAAAGnNrLXNzaC1lZDI1NTE5QG9wZW5zc2guY29t", "k")
    assert "security-key" in info.value.message
    with pytest.raises(KeyError_):
        material.identity_key(tmp_path / "missing")


def test_audit_log_appends_user_only_and_rotates(isolated_env, monkeypatch):
    monkeypatch.setattr(audit, "MAX_BYTES", 2000)
    for i in range(100):
        audit.append("push", instance_id=f"i-{i:017x}", request_id=f"r{i}", profile=None)
    path = audit.log_path()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    events = list(audit.read())
    assert events[-1]["request_id"] == "r99" and "profile" not in events[-1]
    assert 0 < len(events) < 100  # the oldest were rotated away
    assert path.stat().st_size <= 2000 + 200 and path.with_name("audit.jsonl.1").exists()
    assert not path.with_name("audit.jsonl.3").exists()


def test_keyring_store_keeps_the_private_key_off_disk(isolated_env, tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "tests.testbed.keyring_backend.FileKeyring")
    monkeypatch.setenv("EIC_TEST_KEYRING_FILE", str(tmp_path / "kr.json"))
    import keyring.core

    keyring.core.init_backend()
    try:
        assert keys.keyring_usable()
        m = KeyManager(store="keyring")
        k = m.ensure()
        assert k.storage == "keyring" and k.private_path is None and not m.private_path.exists()
        assert m.public_path.exists()
        assert material.format_public_line(m.private_key(k)) == k.public_line
        assert "OPENSSH PRIVATE KEY" in (tmp_path / "kr.json").read_text()
        m.clear()
        assert "OPENSSH PRIVATE KEY" not in (tmp_path / "kr.json").read_text()
    finally:
        monkeypatch.delenv("PYTHON_KEYRING_BACKEND")
        monkeypatch.delenv("EIC_TEST_KEYRING_FILE")
        keyring.core.init_backend()


def test_without_keyring_backend_falls_back_to_file(isolated_env):
    m = KeyManager(store="keyring")
    assert m.store == "file" and m.keyring_missing


@pytest.mark.parametrize("kind", ["ed25519", "rsa-2048"])
def test_agent_add_list_remove_with_lifetime(isolated_env, ssh_agent, kind):
    from eic_proxy.keys.agent import Agent, load_key

    m = KeyManager(kind)
    k = m.ensure()
    assert load_key(m, k) is True and load_key(m, k) is False  # second time: already there
    listed = subprocess.run(["ssh-add", "-l"], capture_output=True, text=True, env=dict(os.environ)).stdout
    assert k.fingerprint in listed and "eic-proxy" in listed
    # the agent signs with it: ssh-keygen -Y sign through the agent with only the public key file
    with Agent() as agent:
        blob = public_blob(m.private_key(k))
        assert agent.has(blob) and agent.remove(blob) and not agent.has(blob)


def test_agent_lifetime_is_enforced_by_the_agent(isolated_env, ssh_agent):
    from eic_proxy.keys.agent import Agent

    m = KeyManager()
    k = m.ensure()
    with Agent() as agent:
        agent.add(m.private_key(k), "short", 1)
        blob = public_blob(m.private_key(k))
        assert agent.has(blob)
    def expired() -> bool:  # ssh-agent expires keys on its own clock: poll for it
        with Agent() as agent:
            return not agent.has(blob)

    assert wait_until(expired, 10, interval=0.2), "the agent kept a key past its lifetime"


def test_no_agent_is_a_clear_error(isolated_env, monkeypatch):
    from eic_proxy.keys.agent import Agent, AgentError

    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    with pytest.raises(AgentError) as info:
        Agent()
    assert "SSH_AUTH_SOCK" in info.value.message


def public_blob(private_key) -> bytes:
    """The SSH wire blob of a key's public half (what the agent lists)."""
    import base64

    return base64.b64decode(material.format_public_line(private_key).split()[1])

"""The local key: stable path, OpenSSH format, user-only files, one key under concurrency."""
import os
import stat
import subprocess
from concurrent.futures import ThreadPoolExecutor

from eic_proxy.keys import lifecycle as keys
from eic_proxy.keys import material


def test_created_once_user_only_and_openssh_format(isolated_env):
    k = keys.KeyManager().ensure()
    assert k.private_path == keys.KeyManager().private_path
    assert str(k.private_path).startswith(str(isolated_env))
    assert stat.S_IMODE(k.private_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(k.private_path.parent.stat().st_mode) == 0o700
    assert k.private_path.read_bytes().startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----")
    assert k.public_line.startswith("ssh-ed25519 ") and len(k.public_line) == 80
    assert keys.KeyManager().ensure() == k
    out = subprocess.run(["ssh-keygen", "-y", "-f", str(k.private_path)], capture_output=True, text=True)
    if out.returncode == 0:  # ssh-keygen present: OpenSSH itself reads the key
        assert out.stdout.split()[:2] == k.public_line.split()


def test_fingerprint_matches_ssh_keygen(isolated_env):
    k = keys.KeyManager().ensure()
    out = subprocess.run(["ssh-keygen", "-l", "-f", str(k.private_path) + ".pub"], capture_output=True, text=True)
    if out.returncode == 0:
        assert k.fingerprint in out.stdout


def test_concurrent_first_use_agrees_on_one_key(isolated_env):
    with ThreadPoolExecutor(8) as pool:
        lines = set(pool.map(lambda _: keys.KeyManager().ensure().public_line, range(16)))
    assert len(lines) == 1
    leftovers = [p for p in keys.KeyManager().private_path.parent.iterdir() if p.name.endswith(".tmp")]
    assert not leftovers


def test_private_key_derives_public_line_without_pub_file(isolated_env):
    k = keys.KeyManager().ensure()
    os.unlink(str(k.private_path) + ".pub")
    assert material.format_public_line(material.load_private_file(k.private_path)) == k.public_line

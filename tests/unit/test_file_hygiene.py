"""Files and directories we own: user-only whatever the umask, ours only, never through a symlink."""
from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from eic_proxy.errors import ExitCode, UsageError
from eic_proxy.store import audit, files


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_every_directory_we_create_is_0700_even_under_umask_000(isolated_env):
    env = dict(os.environ)
    p = subprocess.run([sys.executable, "-c", "import os, sys; os.umask(0); from eic_proxy.cli import main; "
                        "sys.exit(main(['key-path']))"], env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    key = Path(p.stdout.strip())
    assert _mode(key) == 0o600
    d = key.parent
    home = isolated_env
    created = []
    while d != home:
        created.append(d)
        d = d.parent
    assert created and all(_mode(x) == 0o700 for x in created), [(str(x), oct(_mode(x))) for x in created]


def test_ensure_private_dir_makes_missing_parents_0700_itself(isolated_env):
    old = os.umask(0)
    try:
        leaf = files.ensure_private_dir(isolated_env / "a" / "b" / "c")
    finally:
        os.umask(old)
    assert [_mode(p) for p in (leaf, leaf.parent, leaf.parent.parent)] == [0o700] * 3


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a directory away")
def test_a_directory_owned_by_someone_else_is_not_trusted(isolated_env):
    d = isolated_env / "theirs"
    d.mkdir(mode=0o700)
    os.chown(d, 65534, 65534)
    with pytest.raises(UsageError) as err:
        files.ensure_private_dir(d)
    assert err.value.exit_code == ExitCode.CONFIG and "another user" in err.value.message


def test_a_planted_symlink_does_not_redirect_the_audit_log(isolated_env, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me\n")
    log = audit.log_path()
    files.ensure_private_dir(log.parent)
    log.symlink_to(victim)
    audit.append("connect", host="x")  # refused by O_NOFOLLOW, and never fatal
    assert victim.read_text() == "keep me\n"


def test_a_planted_symlink_does_not_redirect_a_lock(isolated_env, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me\n")
    lock = files.cache_dir() / "x.lock"
    files.ensure_private_dir(lock.parent)
    lock.symlink_to(victim)
    with pytest.raises(OSError):
        with files.FileLock(lock):
            pass
    assert victim.read_text() == "keep me\n"


def test_install_edits_the_target_of_a_symlinked_ssh_config_and_keeps_the_link(tmp_path):
    from eic_proxy.sshblock import BlockOptions, install, render

    dotfiles = tmp_path / "dotfiles"
    dotfiles.mkdir()
    (dotfiles / "ssh_config").write_text("Host mine\n  User me\n")
    ssh = tmp_path / ".ssh"
    ssh.mkdir()
    (ssh / "config").symlink_to(dotfiles / "ssh_config")
    install(render(BlockOptions(), tmp_path / "k"), "default", ssh)
    assert (ssh / "config").is_symlink() and os.readlink(ssh / "config") == str(dotfiles / "ssh_config")
    text = (dotfiles / "ssh_config").read_text()
    assert text.splitlines()[1].startswith("Include ") and text.endswith("Host mine\n  User me\n")

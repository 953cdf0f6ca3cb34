"""Installing the Host block: idempotent, never clobbering, permissions kept; known_hosts links."""
import os

import pytest

from eic_proxy.commands import ssh_config as sshconfig
from eic_proxy.commands.ssh_config import BlockOptions, install, link_known_hosts, prepare_known_hosts, render


def test_install_replaces_only_its_own_block(tmp_path):
    ssh = tmp_path / ".ssh"
    ssh.mkdir()
    (ssh / "config").write_text("Include other.conf\nHost x\n  User y\n")
    os.chmod(ssh / "config", 0o644)
    a = render(BlockOptions(patterns=("a-*",)), tmp_path / "key")
    first = install(a, "default", ssh)
    assert first.include_added and not first.block_replaced and first.backup is not None
    (ssh / "eic-proxy.config").write_text((ssh / "eic-proxy.config").read_text() + "# user note\n")
    b = render(BlockOptions(patterns=("b-*",)), tmp_path / "key")
    second = install(b, "default", ssh)
    assert second.block_replaced and not second.include_added and second.backup is None
    own = (ssh / "eic-proxy.config").read_text()
    assert "Host b-*" in own and "Host a-*" not in own and "# user note" in own
    main = (ssh / "config").read_text()
    assert main.endswith("Include other.conf\nHost x\n  User y\n")
    assert (ssh / "config").stat().st_mode & 0o777 == 0o644


def test_install_creates_missing_config_user_only(tmp_path):
    ssh = tmp_path / ".ssh"
    report = install(render(BlockOptions(), tmp_path / "k"), "default", ssh)
    assert report.include_added and report.backup is None
    assert (ssh / "config").stat().st_mode & 0o777 == 0o600
    assert ssh.stat().st_mode & 0o777 == 0o700


def test_quoting_of_paths_with_spaces(tmp_path):
    text = render(BlockOptions(profile="p.q"), tmp_path / "with space" / "id")
    assert f'IdentityFile "{tmp_path}/with space/id"' in text
    assert "--profile p.q" in text  # a profile with a space is refused (test_values_that_would_break_out…)


def test_known_hosts_links_follow_the_instance(isolated_env):
    prepare_known_hosts()
    link_known_hosts("web-1", "i-0aaaaaaaaaaaaaaaa")
    base = sshconfig.known_hosts_dir()
    assert os.readlink(base / "by-name/web-1") == "../by-instance/i-0aaaaaaaaaaaaaaaa"
    link_known_hosts("web-1", "i-0bbbbbbbbbbbbbbbb")
    assert os.readlink(base / "by-name/web-1") == "../by-instance/i-0bbbbbbbbbbbbbbbb"
    assert (base / "by-instance/i-0aaaaaaaaaaaaaaaa").exists()
    link_known_hosts("../evil", "i-0ccccccccccccccccc")  # not a plain file name: ignored
    assert not (base.parent / "evil").exists()
    assert sorted(p.name for p in (base / "by-name").iterdir()) == ["web-1"]


def test_entries_of_an_instance_file_match_every_name(isolated_env):
    prepare_known_hosts()
    base = sshconfig.known_hosts_dir()
    f = base / "by-instance/i-0aaaaaaaaaaaaaaaa"
    f.write_text("web-1 ssh-ed25519 AAAAC3Nza\n|1|salt|hash ecdsa-sha2-nistp256 AAAAE2\n@revoked * ssh-rsa AAAAB3\n")
    link_known_hosts("i-0aaaaaaaaaaaaaaaa", "i-0aaaaaaaaaaaaaaaa")
    assert f.read_text() == "* ssh-ed25519 AAAAC3Nza\n* ecdsa-sha2-nistp256 AAAAE2\n@revoked * ssh-rsa AAAAB3\n"


def test_windows_block_names_the_exe_without_a_shell(monkeypatch, tmp_path):
    """Win32-OpenSSH runs ProxyCommand directly: absolute eic-proxy.exe, double quotes, no sh -c."""
    from eic_proxy.commands import ssh_config as sshconfig

    exe = r"C:\Program Files\Python312\Scripts\eic-proxy.exe"
    monkeypatch.setattr(sshconfig, "WINDOWS", True)
    monkeypatch.setattr(sshconfig, "executable_argv", lambda: [exe])
    block = sshconfig.render(sshconfig.BlockOptions(patterns=("i-*",), profile="dev-team"),
                             tmp_path / "id_ed25519")
    proxy = next(line for line in block.splitlines() if line.strip().startswith("ProxyCommand"))
    assert proxy.strip() == (f'ProxyCommand "{exe}" connect --profile dev-team --typed=%n -- %h %p %r')
    assert "sh -c" not in block and "'" not in proxy


@pytest.mark.parametrize("field, value", [
    ("user", "ec2-user\nHost *\n    ProxyCommand sh -c evil"),
    ("profile", "dev\n    LocalCommand touch /tmp/pwned"),
    ("name", "x\n# <<< eic-proxy block default"),
    ("region", "us-east-1 --evil"),
    ("user", "a%h"),
    ("profile", "dev team"),
    ("patterns", ("web-*", "*\nHost *")),
    ("patterns", ("web-* db-*",)),
    ("patterns", ()),
])
def test_values_that_would_break_out_of_their_line_are_refused(field, value):
    from eic_proxy.commands import ssh_config as sshconfig
    from eic_proxy.errors import ExitCode, UsageError

    with pytest.raises(UsageError) as err:
        sshconfig.BlockOptions(**{field: value})
    assert err.value.exit_code == ExitCode.CONFIG


def test_generated_command_keeps_hosts_as_arguments(tmp_path, monkeypatch):
    """ssh's tokens come last, behind `--`, so a name that starts with `-` stays a host name."""
    from eic_proxy.cli import build_parser
    from eic_proxy.commands import ssh_config as sshconfig

    monkeypatch.setattr(sshconfig, "executable_argv", lambda: ["/x/eic-proxy"])
    block = sshconfig.render(sshconfig.BlockOptions(patterns=("web-*", "!web-db", "i-0?"), user="ec2-user"),
                             tmp_path / "k")
    proxy = next(line for line in block.splitlines() if line.strip().startswith("ProxyCommand")).split()[2:]
    argv = [a.replace("%n", "-oEvil=1").replace("%h", "-oevil=1").replace("%p", "22").replace("%r", "u")
            for a in proxy]
    args = build_parser("connect").parse_args(argv)
    assert args.host == "-oevil=1" and args.typed == "-oEvil=1" and args.port == 22 and args.user == "u"

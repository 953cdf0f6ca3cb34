"""Installing the Host block: idempotent, never clobbering, permissions kept; every OpenSSH from 7.4 reads
it; the known_hosts file of names follows each name's instance."""
import os
import re
import shlex
import subprocess

import pytest

from eic_proxy import sshblock as sshconfig
from eic_proxy.sshblock import BlockOptions, install, render
from eic_proxy.store import knownhosts
from eic_proxy.store.knownhosts import names_file, prepare_known_hosts, show_under_name


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


def _names() -> dict[str, list[str]]:
    """{pattern: [key types]} as ssh would read the names file."""
    out: dict[str, list[str]] = {}
    for line in names_file().read_text().splitlines():
        if line and not line.startswith("#"):
            pattern, key_type, _ = line.split()
            out.setdefault(pattern, []).append(key_type)
    return out


def test_each_name_shows_the_keys_of_the_instance_it_reaches_now(isolated_env):
    prepare_known_hosts()
    knownhosts.record_keys("i-0aaaaaaaaaaaaaaaa", ["ssh-ed25519 AAAAC3NzaAAAA"], "console")
    knownhosts.record_keys("i-0bbbbbbbbbbbbbbbb", ["ssh-rsa AAAAB3NzaBBBB", "ssh-ed25519 AAAAC3NzaBBBB"], "console")
    show_under_name("web-1", "i-0aaaaaaaaaaaaaaaa")
    show_under_name("i-0aaaaaaaaaaaaaaaa", "i-0aaaaaaaaaaaaaaaa")
    assert _names() == {"web-1,[web-1]:*": ["ssh-ed25519"],
                        "i-0aaaaaaaaaaaaaaaa,[i-0aaaaaaaaaaaaaaaa]:*": ["ssh-ed25519"]}
    show_under_name("web-1", "i-0bbbbbbbbbbbbbbbb")  # the name now reaches a replacement
    assert _names()["web-1,[web-1]:*"] == ["ssh-rsa", "ssh-ed25519"]
    assert "AAAAC3NzaAAAA" not in names_file().read_text().split("web-1,")[1].split("\n# ")[0]
    knownhosts.record_keys("i-0aaaaaaaaaaaaaaaa", ["ssh-ed25519 AAAAC3NzaNEW"], "console")  # --refresh
    assert "AAAAC3NzaNEW" in names_file().read_text()
    knownhosts.forget_keys("i-0bbbbbbbbbbbbbbbb")
    assert "web-1,[web-1]:*" not in _names()
    for bad in ("a,b", "*", "x y", "!web", "#c", "@cert-authority", "a\nb", ""):
        show_under_name(bad, "i-0aaaaaaaaaaaaaaaa")
    assert set(_names()) == {"i-0aaaaaaaaaaaaaaaa,[i-0aaaaaaaaaaaaaaaa]:*"}
    assert not (knownhosts.known_hosts_dir() / "by-name").exists()  # nothing needs a symlink
    assert names_file().stat().st_mode & 0o777 == 0o600


def test_real_ssh_keygen_finds_the_key_under_each_name_and_port(isolated_env):
    """ssh-keygen -F looks a name up as ssh does (port 22: "name"; other ports: "[name]:port")."""
    if not shutil_which("ssh-keygen"):
        pytest.skip("needs ssh-keygen")
    prepare_known_hosts()
    knownhosts.record_keys("i-0aaaaaaaaaaaaaaaa", ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"],
                           "console")
    show_under_name("web-1", "i-0aaaaaaaaaaaaaaaa")
    for lookup in ("web-1", "[web-1]:2222", "WEB-1"):
        r = subprocess.run(["ssh-keygen", "-F", lookup, "-f", str(names_file())], capture_output=True)
        assert r.returncode == 0 and b"ssh-ed25519" in r.stdout, (lookup, r)
    r = subprocess.run(["ssh-keygen", "-F", "web-2", "-f", str(names_file())], capture_output=True)
    assert r.returncode != 0


def shutil_which(name: str):
    import shutil

    return shutil.which(name)


def test_blocks_written_before_names_keep_their_links(isolated_env):
    """An old block points ssh at by-name/%h: where that directory exists, its links are kept up."""
    base = knownhosts.known_hosts_dir()
    (base / "by-name").mkdir(parents=True)
    (base / "by-instance").mkdir()
    f = base / "by-instance/i-0aaaaaaaaaaaaaaaa"
    f.write_text("web-1 ssh-ed25519 AAAAC3Nza\n@revoked * ssh-rsa AAAAB3\n")
    show_under_name("web-1", "i-0aaaaaaaaaaaaaaaa")
    assert os.readlink(base / "by-name/web-1") == "../by-instance/i-0aaaaaaaaaaaaaaaa"
    assert f.read_text() == "* ssh-ed25519 AAAAC3Nza\n@revoked * ssh-rsa AAAAB3\n"  # any name matches
    show_under_name("../evil", "i-0aaaaaaaaaaaaaaaa")  # not a plain file name: no link
    assert sorted(p.name for p in (base / "by-name").iterdir()) == ["web-1"]


# The tokens each OpenSSH expands in ProxyCommand; UserKnownHostsFile expands none before 8.4.
PROXY_TOKENS = {(7, 4): set("hpr%"), (8, 1): set("hpnr%")}


@pytest.mark.parametrize("version, typed", [((7, 4), "%h"), ((7, 7), "%h"), ((8, 0), "%h"), ((8, 1), "%n"),
                                            ((9, 5), "%n")])
def test_the_block_uses_only_what_its_openssh_understands(tmp_path, version, typed):
    block = render(BlockOptions(patterns=("web-*",), ssh_version=version), tmp_path / "id")
    proxy = next(line for line in block.splitlines() if line.strip().startswith("ProxyCommand"))
    allowed = PROXY_TOKENS[(8, 1) if version >= (8, 1) else (7, 4)]
    assert set(re.findall(r"%(.)", proxy)) <= allowed
    assert f"--typed={typed} -- %h %p %r" in proxy
    for line in block.splitlines():
        if not line.strip().startswith(("ProxyCommand", "#")):
            assert "%" not in line, line  # a literal path: no %-token outside ProxyCommand
    known = next(line for line in block.splitlines() if "UserKnownHostsFile" in line).split(None, 1)[1]
    assert known == str(names_file())
    assert f"for OpenSSH {version[0]}.{version[1]} or newer" in block


def test_ssh_version_is_read_from_ssh_dash_v(tmp_path, monkeypatch):
    fake = tmp_path / "ssh"
    fake.write_text("#!/bin/sh\necho 'OpenSSH_for_Windows_7.7p1, LibreSSL 2.6.5' >&2\n")
    fake.chmod(0o755)
    assert sshconfig.ssh_version_of(str(fake)) == (7, 7)
    monkeypatch.setattr(sshconfig, "ssh_programs", lambda: [str(fake), "/nonexistent/ssh"])
    assert sshconfig.oldest_ssh() == (7, 7)
    monkeypatch.setattr(sshconfig, "ssh_programs", lambda: [])
    assert sshconfig.oldest_ssh() == sshconfig.OLDEST_SSH
    assert sshconfig.parse_ssh_version("8.4p1") == (8, 4)
    from eic_proxy.errors import UsageError

    with pytest.raises(UsageError):
        sshconfig.parse_ssh_version("new")


def command_line_to_argv(line: str) -> list[str]:
    """Windows' CommandLineToArgvW (the rules of the C runtime since 2008) for the characters we write."""
    args: list[str] = []
    i, n = 0, len(line)
    while i < n:
        while i < n and line[i] in " \t":
            i += 1
        if i >= n:
            break
        arg, quoted = [], False
        while i < n and (quoted or line[i] not in " \t"):
            if line[i] == "\\":
                j = i
                while j < n and line[j] == "\\":
                    j += 1
                if j < n and line[j] == '"':
                    arg.append("\\" * ((j - i) // 2))
                    if (j - i) % 2:
                        arg.append('"')
                        i = j + 1
                    else:
                        i = j
                    continue
                arg.append(line[i:j])
                i = j
            elif line[i] == '"':
                if quoted and i + 1 < n and line[i + 1] == '"':
                    arg.append('"')
                    i += 2
                    continue
                quoted = not quoted
                i += 1
            else:
                arg.append(line[i])
                i += 1
        args.append("".join(arg))
    return args


def test_windows_block_survives_windows_splitting_and_sh(monkeypatch, tmp_path):
    """Win32-OpenSSH hands the line to CreateProcess (split as CommandLineToArgvW does); Git for Windows'
    ssh runs it through sh. Both must see the same program and arguments."""
    exe = r"C:\Users\Jane Doe\AppData\Local\Programs\Python\Python312\Scripts\eic-proxy.exe"
    monkeypatch.setattr(sshconfig.sys, "platform", "win32")
    monkeypatch.setattr(sshconfig, "executable_argv", lambda: [exe])
    monkeypatch.setattr(sshconfig, "names_file", lambda: sshconfig.Path(r"C:\Users\Jane Doe\AppData\Local\eic-proxy\known_hosts\names"))
    block = render(BlockOptions(patterns=("i-*",), profile="dev-team", ssh_version=(7, 7)), tmp_path / "id_ed25519")
    proxy = next(line for line in block.splitlines() if line.strip().startswith("ProxyCommand")).strip()
    line = proxy.split(None, 1)[1]
    want = ["C:/Users/Jane Doe/AppData/Local/Programs/Python/Python312/Scripts/eic-proxy.exe", "connect",
            "--profile", "dev-team", "--typed=%h", "--", "%h", "%p", "%r"]
    assert command_line_to_argv(line) == want
    assert shlex.split(line) == want
    r = subprocess.run(["sh", "-c", "printf '%s\\n' " + line], capture_output=True, text=True)
    assert r.stdout.splitlines() == want, r
    assert 'UserKnownHostsFile "C:/Users/Jane Doe/AppData/Local/eic-proxy/known_hosts/names"' in block
    assert "\\" not in block


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
    from eic_proxy import sshblock as sshconfig
    from eic_proxy.errors import ExitCode, UsageError

    with pytest.raises(UsageError) as err:
        sshconfig.BlockOptions(**{field: value})
    assert err.value.exit_code == ExitCode.CONFIG


def test_generated_command_keeps_hosts_as_arguments(tmp_path, monkeypatch):
    """ssh's tokens come last, behind `--`, so a name that starts with `-` stays a host name."""
    from eic_proxy import sshblock as sshconfig
    from eic_proxy.cli import build_parser

    monkeypatch.setattr(sshconfig, "executable_argv", lambda: ["/x/eic-proxy"])
    block = sshconfig.render(sshconfig.BlockOptions(patterns=("web-*", "!web-db", "i-0?"), user="ec2-user",
                                                    ssh_version=(9, 5)),
                             tmp_path / "k")
    proxy = next(line for line in block.splitlines() if line.strip().startswith("ProxyCommand")).split()[2:]
    argv = [a.replace("%n", "-oEvil=1").replace("%h", "-oevil=1").replace("%p", "22").replace("%r", "u")
            for a in proxy]
    args = build_parser("connect").parse_args(argv)
    assert args.host == "-oevil=1" and args.typed == "-oEvil=1" and args.port == 22 and args.user == "u"

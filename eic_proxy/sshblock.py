"""The ssh_config Host block that routes names through eic-proxy, and installing it without touching the user's own lines.

Used by ``eic-proxy ssh-config`` and by doctor's checks of an installed block.

Installed layout: our blocks live in ``~/.ssh/eic-proxy.config`` (one block per profile/region, each
between marker comments, so re-running replaces rather than appends), and ``~/.ssh/config`` gets one
``Include ~/.ssh/eic-proxy.config`` line (absolute path) at the very top: ssh takes the first value it finds for each
option, and an Include placed after a ``Host`` line would only apply inside that block.

Host keys are kept per instance, not per name: the block points ``UserKnownHostsFile`` at one plain
file, ``known_hosts/names`` in our data dir, where ``connect`` gives each name the keys of the instance it
resolves to right now, before ssh can look (store/knownhosts.py).

The block is written for the oldest OpenSSH that will read it (``--ssh-version``, by default the oldest
``ssh`` found here): ``%n`` in ProxyCommand (the name as typed, with its case) only from OpenSSH 8.1; before
that ``%h`` stands in. Nothing else in it is newer than 7.3 (``Include``). On Windows the program's path is
written with forward slashes and in double quotes: Win32-OpenSSH hands the line to CreateProcess (which
takes ``/``), Git for Windows' ssh to ``sh`` (which would eat unquoted backslashes).
"""
from __future__ import annotations

import datetime as dt
import logging
import os
import re
import shlex
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from eic_proxy import __version__
from eic_proxy.store import files
from eic_proxy.store.knownhosts import names_file

log = logging.getLogger(__name__)

OWN_FILE = "eic-proxy.config"
DEFAULT_PATTERNS = ("i-*",)
_BEGIN = "# >>> eic-proxy block "
_END = "# <<< eic-proxy block "
_INCLUDE_RE = re.compile(r"^\s*Include\s+.*\beic-proxy\.config\b", re.IGNORECASE)


# What a value may contain before it is written into ssh_config: no whitespace or control character
# (a newline would start a line of its own: `Host *`, `ProxyCommand …`), no quote, no `%` (ssh expands
# tokens in ProxyCommand), no `#`. Patterns may also use ssh's `*`, `?` and leading `!`.
_SAFE_VALUE = re.compile(r"^[A-Za-z0-9_.@+:/=,-]+$")
_SAFE_PATTERN = re.compile(r"^!?[A-Za-z0-9_.@+:*?\[\]-]+$")

# The oldest OpenSSH a supported system still ships: Amazon Linux 2 has 7.4, Windows 10 1809 7.7.
OLDEST_SSH = (7, 4)
TYPED_TOKEN_SINCE = (8, 1)  # %n in ProxyCommand
_SSH_VERSION = re.compile(r"OpenSSH_(?:for_Windows_)?(\d+)\.(\d+)")


def check_value(what: str, value: Optional[str], pattern: "re.Pattern[str]" = _SAFE_VALUE) -> None:
    """Refuse a value that could break out of its line (or its argument) in the generated block."""
    from eic_proxy.errors import UsageError

    if value is not None and not pattern.match(value):
        raise UsageError(f"{what} {value!r} has characters an ssh_config line cannot carry safely",
                         hint="use letters, digits and . _ - @ (patterns also * ? and a leading !)")


@dataclass(frozen=True)
class BlockOptions:
    patterns: Sequence[str] = DEFAULT_PATTERNS
    profile: Optional[str] = None
    region: Optional[str] = None
    user: Optional[str] = None
    name: Optional[str] = None
    agent: bool = False
    key_type: Optional[str] = None
    key_lifetime: Optional[str] = None
    host_keys: Optional[str] = None
    pick: Optional[str] = None
    ssh_version: tuple[int, int] = OLDEST_SSH  # the oldest OpenSSH that will read the block

    def __post_init__(self) -> None:
        for what, value in (("--user", self.user), ("--profile", self.profile), ("--region", self.region),
                            ("--name", self.name), ("--key-type", self.key_type),
                            ("--key-lifetime", self.key_lifetime), ("--host-keys", self.host_keys)):
            check_value(what, value)
        if not self.patterns:
            check_value("pattern", "")
        for p in self.patterns:
            check_value("pattern", p, _SAFE_PATTERN)

    @property
    def block_name(self) -> str:
        if self.name:
            return self.name
        return (self.profile or "default") + (f"@{self.region}" if self.region else "")


def executable_argv() -> list[str]:
    """How ssh should start us: absolute paths, never a PATH lookup, and names that survive an upgrade.

    ssh runs ProxyCommand with a minimal environment in some setups (VS Code, launchd, cron), where
    PATH may not contain a venv or pipx bin directory. When the ``eic-proxy`` the user ran is reached
    through a link (Homebrew's ``bin/`` or ``opt/``, pipx's ``~/.local/bin``), that path is the one an
    upgrade keeps: it is written as it is, never resolved (``Cellar/eic-proxy/<version>/`` and a pipx
    venv's ``lib/python3.X/`` go away with an upgrade). Otherwise this Python runs our launcher
    (``eic_proxy_connect.py``, installed beside the package), which starts faster than pip's wrapper.
    """
    ran = program_ran()
    if ran is not None and os.path.realpath(ran) != os.path.abspath(ran):
        return [ran]
    launcher = fast_launcher()
    if launcher is not None:
        return launcher
    return program_argv()


def fast_launcher() -> Optional[list[str]]:
    """[python, -S, launcher] when both exist; None on Windows (ssh runs programs there, not scripts).
    ``-S``: the launcher needs no ``.pth`` file of site-packages, and skips reading them."""
    if sys.platform == "win32" or not sys.executable:
        return None
    import eic_proxy

    launcher = Path(eic_proxy.__file__).absolute().parent.parent / "eic_proxy_connect.py"
    python = Path(sys.executable).absolute()
    return [str(python), "-S", str(launcher)] if launcher.is_file() and python.is_file() else None


def program_ran() -> Optional[str]:
    """The absolute, unresolved path of the ``eic-proxy`` program this process was started as, if any."""
    argv0 = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if argv0 is None or not argv0.name.lower().startswith("eic-proxy"):
        return None
    exe = argv0 if argv0.is_absolute() else Path(shutil.which(str(argv0)) or argv0).absolute()
    if sys.platform == "win32" and exe.suffix.lower() != ".exe" and exe.with_suffix(".exe").exists():
        exe = exe.with_suffix(".exe")
    return str(exe) if exe.exists() else None


def program_argv() -> list[str]:
    """The ``eic-proxy`` program itself (the console script, or ``eic-proxy.exe``)."""
    ran = program_ran()
    if ran is not None:
        return [ran]
    found = shutil.which("eic-proxy")
    if found:
        return [str(Path(found).absolute())]
    return [str(Path(sys.executable).absolute()), "-m", "eic_proxy"]


def quote_command(argv: Sequence[str]) -> str:
    """The ProxyCommand line. POSIX ssh runs it through /bin/sh. Win32-OpenSSH splits it by Windows'
    rules (CommandLineToArgvW) and Git for Windows' ssh through ``sh``: paths use ``/`` (CreateProcess
    takes it, and ``sh`` keeps it) and are double-quoted when they hold a space, which both read alike."""
    if sys.platform == "win32":
        return " ".join(_quote_windows(a) for a in argv)
    return " ".join(shlex.quote(a) if not a.startswith(("%", "--typed=%")) else a for a in argv)


def _quote_windows(arg: str) -> str:
    arg = arg.replace("\\", "/")
    return f'"{arg}"' if any(c.isspace() for c in arg) else arg


def config_path(path: Path) -> str:
    """A path as an ssh_config value: ``/`` on Windows too (ssh_config reads ``\\`` as an escape in
    places), double-quoted when it holds a space."""
    text = str(path).replace("\\", "/") if sys.platform == "win32" else str(path)
    return f'"{text}"' if any(c.isspace() for c in text) else text


def ssh_programs() -> list[str]:
    """The OpenSSH clients on this machine that may read ~/.ssh/config: PATH's, and on Windows the
    built-in one and Git for Windows' too (VS Code and a Git Bash prompt may use another than PATH's)."""
    found = [shutil.which("ssh")]
    if sys.platform == "win32":
        root = os.environ.get("SystemRoot", "C:\\Windows")
        found.append(os.path.join(root, "System32", "OpenSSH", "ssh.exe"))
        for base in (os.environ.get("ProgramFiles"), os.environ.get("LOCALAPPDATA")):
            if base:
                found.append(os.path.join(base, "Git", "usr", "bin", "ssh.exe"))
                found.append(os.path.join(base, "Programs", "Git", "usr", "bin", "ssh.exe"))
    out: list[str] = []
    for p in found:
        if p and os.path.isfile(p) and p not in out:
            out.append(p)
    return out


def ssh_version_of(program: str) -> Optional[tuple[int, int]]:
    """(major, minor) from ``ssh -V``; None when it cannot be told (not OpenSSH, or it did not answer)."""
    import subprocess

    try:
        p = subprocess.run([program, "-V"], capture_output=True, timeout=10, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return None
    m = _SSH_VERSION.search((p.stderr + p.stdout).decode("utf-8", "replace"))
    return (int(m.group(1)), int(m.group(2))) if m else None


def oldest_ssh() -> tuple[int, int]:
    """The oldest OpenSSH found here; the oldest supported one when none answers."""
    versions = [v for v in map(ssh_version_of, ssh_programs()) if v is not None]
    return min(versions) if versions else OLDEST_SSH


def parse_ssh_version(text: str) -> tuple[int, int]:
    from eic_proxy.errors import UsageError

    m = re.fullmatch(r"(\d+)\.(\d+)(?:p\d+)?", text.strip())
    if m is None:
        raise UsageError(f"--ssh-version {text!r} is not an OpenSSH version", hint="write it as 7.7 or 9.5")
    return int(m.group(1)), int(m.group(2))


def render(opts: BlockOptions, identity_file: Path) -> str:
    """The Host block text, between markers that let ``--install`` find and replace it later."""
    # Options first, ssh's tokens last behind `--`: a host name that starts with `-` stays a host name.
    # `%n` (the name as typed, original case) is joined to its option for the same reason.
    cmd = executable_argv() + ["connect"]
    if opts.profile:
        cmd += ["--profile", opts.profile]
    if opts.region:
        cmd += ["--region", opts.region]
    if opts.agent:
        cmd += ["--agent"]
    if opts.key_type:
        cmd += ["--key-type", opts.key_type]
    if opts.key_lifetime:
        cmd += ["--key-lifetime", opts.key_lifetime]
    if opts.host_keys:
        cmd += ["--host-keys", opts.host_keys]
    if opts.pick:
        cmd += ["--pick", opts.pick]
    # %n from 8.1: before it, %h marks the block just as well (the name is then lowercase, as ssh has it).
    cmd += ["--typed=%n" if opts.ssh_version >= TYPED_TOKEN_SINCE else "--typed=%h", "--", "%h", "%p", "%r"]
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d")
    lines = [
        f"{_BEGIN}{opts.block_name}",
        f"# Generated by eic-proxy {__version__} on {stamp} for OpenSSH {'.'.join(map(str, opts.ssh_version))} "
        "or newer; re-run `eic-proxy ssh-config --install` to update.",
        "Host " + " ".join(opts.patterns),
    ]
    if opts.user:
        lines.append(f"    User {opts.user}")
    lines += [
        f"    ProxyCommand {quote_command(cmd)}",
        f"    IdentityFile {config_path(identity_file)}",
        "    IdentitiesOnly yes",
        # Host keys per instance ID (see the module docstring), verified against the console output on
        # first contact by connect: ssh itself refuses any key not in the file.
        f"    UserKnownHostsFile {config_path(names_file())}",
        "    StrictHostKeyChecking yes",
        f"{_END}{opts.block_name}",
    ]
    return "\n".join(lines) + "\n"


def installed_paths(ssh_dir: Optional[Path] = None) -> list[tuple[str, str]]:
    """(block name, path) for every file the installed blocks name: the program (and launcher) of each
    ProxyCommand, IdentityFile, UserKnownHostsFile (paths with ``%`` tokens left out)."""
    own = (ssh_dir or Path.home() / ".ssh") / OWN_FILE
    try:
        text = own.read_text(encoding="utf-8")
    except OSError:
        return []
    found: list[tuple[str, str]] = []
    name = ""
    for line in text.splitlines():
        if line.startswith(_BEGIN):
            name = line[len(_BEGIN):].strip()
            continue
        keyword, _, value = line.strip().partition(" ")
        keyword = keyword.lower()
        if keyword == "proxycommand":
            try:
                words = shlex.split(value, posix=sys.platform != "win32")
            except ValueError:
                continue
            words = [w.strip('"') for w in words[:words.index("connect")]] if "connect" in words else words[:1]
            found += [(name, w) for w in words if os.path.isabs(w) or w.startswith(("/", "\\"))]
        elif keyword in ("identityfile", "userknownhostsfile") and "%" not in value:
            found.append((name, value.strip().strip('"')))
    return found


@dataclass
class InstallReport:
    own_file: Path
    ssh_config: Path
    include_added: bool
    block_replaced: bool
    backup: Optional[Path]


def _replace_block(text: str, name: str, block: str) -> tuple[str, bool]:
    begin, end = f"{_BEGIN}{name}\n", f"{_END}{name}\n"
    start = text.find(begin)
    if start >= 0:
        stop = text.find(end, start)
        if stop >= 0:
            return text[:start] + block + text[stop + len(end):], True
    if text and not text.endswith("\n"):
        text += "\n"
    return text + ("\n" if text else "") + block, False


def install(block: str, name: str, ssh_dir: Optional[Path] = None) -> InstallReport:
    """Write our block into our own file and make sure ``~/.ssh/config`` includes it, once, at the top.

    Idempotent: the same block is replaced in place, the Include is added only when missing, and
    ``~/.ssh/config`` is backed up before its first (and only) change.
    """
    ssh_dir = ssh_dir or Path.home() / ".ssh"
    files.ensure_private_dir(ssh_dir)
    own = ssh_dir / OWN_FILE
    try:
        current = own.read_text(encoding="utf-8")
    except FileNotFoundError:
        current = "# eic-proxy Host blocks. Managed by `eic-proxy ssh-config --install`; edits between markers are replaced.\n"
    new_text, replaced = _replace_block(current, name, block)
    files.write_private_atomic(own, new_text.encode("utf-8"))

    main = ssh_dir / "config"
    # A dotfiles-managed ~/.ssh/config is a symlink: edit the file it points at and keep the link.
    write_to = Path(os.path.realpath(main)) if main.is_symlink() else main
    backup = None
    include_added = False
    try:
        original = main.read_text(encoding="utf-8")
    except FileNotFoundError:
        original = None
    if original is None or not any(_INCLUDE_RE.match(line) for line in original.splitlines()):
        mode = 0o600
        if original is not None:
            mode = main.stat().st_mode & 0o777 & ~0o022  # ssh refuses a group/world-writable config
            stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
            backup = ssh_dir / f"config.eic-proxy-backup-{stamp}"
            files.write_private_atomic(backup, original.encode("utf-8"))
        # Absolute: ssh resolves a relative Include against the passwd home, which -F users may not share.
        header = ("# Added by eic-proxy ssh-config --install (keep it above every Host/Match line)\n"
                  f"Include {config_path(own)}\n\n")
        files.write_private_atomic(write_to, (header + (original or "")).encode("utf-8"), mode=mode or 0o600)
        include_added = True
    return InstallReport(own, main, include_added, replaced, backup)

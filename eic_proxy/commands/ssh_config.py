"""``eic-proxy ssh-config``: the Host block, and installing it without touching the user's own lines.

Installed layout: our blocks live in ``~/.ssh/eic-proxy.config`` (one block per profile/region, each
between marker comments, so re-running replaces rather than appends), and ``~/.ssh/config`` gets one
``Include ~/.ssh/eic-proxy.config`` line (absolute path) at the very top: ssh takes the first value it finds for each
option, and an Include placed after a ``Host`` line would only apply inside that block.

Host keys are kept per instance, not per name: the block points ``UserKnownHostsFile`` at
``known_hosts/by-name/%h`` in our data dir, and ``connect`` makes that a symlink to the file of the
instance the name resolves to right now. That happens before ssh can look: the host key only
arrives through the tunnel. So a replaced instance behind the same name gets a fresh file instead
of a "REMOTE HOST IDENTIFICATION HAS CHANGED" alarm, a recycled IP cannot collide with an old
entry, and the same instance under a new IP needs no new entry.
"""
from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import re
import shlex
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from eic_proxy import __version__
from eic_proxy.commands.options import add_common, add_host_keys, add_key_options, settings
from eic_proxy.store import files
from eic_proxy.store.knownhosts import known_hosts_dir, link_known_hosts, prepare_known_hosts  # noqa: F401 - re-exported

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
    """How ssh should start us: absolute paths, never a PATH lookup.

    ssh runs ProxyCommand with a minimal environment in some setups (VS Code, launchd, cron), where
    PATH may not contain a venv or pipx bin directory. On POSIX this Python runs our launcher
    (``eic_proxy_connect.py``, installed beside the package), which starts faster than pip's wrapper.
    """
    launcher = fast_launcher()
    if launcher is not None:
        return launcher
    return program_argv()


def fast_launcher() -> Optional[list[str]]:
    """[python, launcher] when both exist; None on Windows (ssh runs programs there, not scripts)."""
    if os.name == "nt" or not sys.executable:
        return None
    import eic_proxy

    launcher = Path(eic_proxy.__file__).resolve().parent.parent / "eic_proxy_connect.py"
    python = Path(sys.executable).absolute()
    return [str(python), str(launcher)] if launcher.is_file() and python.is_file() else None


def program_argv() -> list[str]:
    """The ``eic-proxy`` program itself (the console script, or ``eic-proxy.exe``)."""
    argv0 = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if argv0 is not None and argv0.name.lower().startswith("eic-proxy"):
        exe = argv0 if argv0.is_absolute() else Path(shutil.which(str(argv0)) or argv0).absolute()
        if os.name == "nt" and exe.suffix.lower() != ".exe" and exe.with_suffix(".exe").exists():
            exe = exe.with_suffix(".exe")
        if exe.exists():
            return [str(exe)]
    found = shutil.which("eic-proxy")
    if found:
        return [str(Path(found).absolute())]
    return [str(Path(sys.executable).absolute()), "-m", "eic_proxy"]


WINDOWS = os.name == "nt"


def quote_command(argv: Sequence[str]) -> str:
    # POSIX ssh runs ProxyCommand through /bin/sh; Windows OpenSSH runs it directly (no shell).
    if WINDOWS:
        return " ".join(f'"{a}"' if " " in a else a for a in argv)
    return " ".join(shlex.quote(a) if not a.startswith(("%", "--typed=%")) else a for a in argv)


def _quote_path(path: str) -> str:
    return f'"{path}"' if any(c.isspace() for c in path) else path


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
    cmd += ["--typed=%n", "--", "%h", "%p", "%r"]
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d")
    lines = [
        f"{_BEGIN}{opts.block_name}",
        f"# Generated by eic-proxy {__version__} on {stamp}; re-run `eic-proxy ssh-config --install` to update.",
        "Host " + " ".join(opts.patterns),
    ]
    if opts.user:
        lines.append(f"    User {opts.user}")
    lines += [
        f"    ProxyCommand {quote_command(cmd)}",
        f"    IdentityFile {_quote_path(str(identity_file))}",
        "    IdentitiesOnly yes",
        # Host keys per instance ID (see the module docstring), verified against the console output on
        # first contact by connect: ssh itself refuses any key not in the file.
        f"    UserKnownHostsFile {_quote_path(str(known_hosts_dir() / 'by-name' / '%h'))}",
        "    StrictHostKeyChecking yes",
        f"{_END}{opts.block_name}",
    ]
    return "\n".join(lines) + "\n"


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
                  f"Include {_quote_path(str(own))}\n\n")
        files.write_private_atomic(write_to, (header + (original or "")).encode("utf-8"), mode=mode or 0o600)
        include_added = True
    return InstallReport(own, main, include_added, replaced, backup)


def add_parser(sub: Any) -> None:
    g = sub.add_parser("ssh-config", help="print (or --install) the ssh_config Host block",
                       description="Print an ssh_config Host block that routes PATTERNs through eic-proxy; "
                                   "--install puts it in ~/.ssh/eic-proxy.config and includes that from "
                                   "~/.ssh/config.")
    g.add_argument("patterns", metavar="PATTERN", nargs="*",
                   help="ssh Host patterns to route through eic-proxy (default: i-*)")
    g.add_argument("--user", help="set User in the block (the OS user; default: ssh's own default)")
    g.add_argument("--name", help="block name in the managed file (default: PROFILE[@REGION] or 'default')")
    g.add_argument("--install", action="store_true", help="write the block and add one Include to ~/.ssh/config")
    g.add_argument("--pick", choices=["newest", "oldest"],
                   help="when a name matches several instances (an Auto Scaling group: asg:*), take the newest/oldest")
    add_host_keys(g)
    add_key_options(g)
    add_common(g)


def run(args: argparse.Namespace) -> int:
    from eic_proxy.keys.lifecycle import make_key_manager

    s = settings(args, "")
    opts = BlockOptions(patterns=tuple(args.patterns) or DEFAULT_PATTERNS, profile=args.profile,
                        region=args.region, user=args.user, name=args.name, agent=bool(s.agent),
                        key_type=args.key_type, key_lifetime=args.key_lifetime, host_keys=args.host_keys,
                        pick=args.pick)
    key = make_key_manager(s).ensure()  # IdentityFile must exist before ssh starts
    prepare_known_hosts()
    # With the agent, ssh must be pointed at the public half, which exists before it starts (docs/testbed.md §4).
    block = render(opts, key.public_path if s.agent else key.private_path)
    if not args.install:
        sys.stdout.write(block)
        return 0
    report = install(block, opts.block_name)
    print(f"{'updated' if report.block_replaced else 'added'} block {opts.block_name!r} in {report.own_file}",
          file=sys.stderr)
    if report.include_added:
        extra = f" (backup: {report.backup})" if report.backup else ""
        print(f"added `Include {report.own_file}` at the top of {report.ssh_config}{extra}", file=sys.stderr)
    else:
        print(f"{report.ssh_config} already includes it", file=sys.stderr)
    return 0

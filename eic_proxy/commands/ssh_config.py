"""``eic-proxy ssh-config``: print or ``--install`` the Host block (``eic_proxy/sshblock.py``)."""
from __future__ import annotations

import argparse
import sys
from typing import Any

from eic_proxy.options import KEY_FLAGS, add_common, add_flags, settings
from eic_proxy.sshblock import DEFAULT_PATTERNS, BlockOptions, install, oldest_ssh, parse_ssh_version, render
from eic_proxy.store.knownhosts import prepare_known_hosts


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
    g.add_argument("--ssh-version", metavar="X.Y",
                   help="the oldest OpenSSH that will read the block (default: the oldest ssh found on this machine, "
                        "Windows' built-in and Git's included); before 8.1 names are passed lowercased")
    add_flags(g, "pick", "host_keys", *KEY_FLAGS)
    add_common(g)


def run(args: argparse.Namespace) -> int:
    from eic_proxy.keys.lifecycle import make_key_manager

    s = settings(args, "")
    opts = BlockOptions(patterns=tuple(args.patterns) or DEFAULT_PATTERNS, profile=args.profile,
                        region=args.region, user=args.user, name=args.name, agent=bool(s.agent),
                        key_type=args.key_type, key_lifetime=args.key_lifetime, host_keys=args.host_keys,
                        pick=args.pick,
                        ssh_version=parse_ssh_version(args.ssh_version) if args.ssh_version else oldest_ssh())
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

"""Command line: build the parser, dispatch to ``commands/``, map every failure to one line and an exit code.

Each sub-command is a module of ``eic_proxy.commands`` with ``add_parser(sub)`` and ``run(args) -> int``.
Only the module of the command being run is imported and set up: argparse set-up of all of them costs
a visible share of a ProxyCommand's start-up (bench/RESULTS.md).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from types import ModuleType
from typing import Optional, Sequence

from eic_proxy import __version__
from eic_proxy.report import guarded, setup_logging, tolerant_text_streams

log = logging.getLogger("eic_proxy")

COMMANDS = ("connect", "tunnel", "doctor", "resolve", "ssh-config", "known-hosts", "keys", "ls", "cache", "policy",
            "audit", "key-path", "completion", "helper")


def command_module(name: str) -> ModuleType:
    # __import__, not importlib.import_module: only the former shows in `python -X importtime` profiles.
    module = f"eic_proxy.commands.{name.replace('-', '_')}"
    __import__(module)
    return sys.modules[module]


_PARSERS: dict[Optional[str], argparse.ArgumentParser] = {}


def build_parser(only: Optional[str] = None) -> argparse.ArgumentParser:
    """The command line; with ``only``, just that sub-command is set up (the others are not needed).

    Built once per process; ``connect``'s alone is ``options.connect_parser()``, the one the helper
    builds before it forks and its preparer parses with."""
    if only in _PARSERS:
        return _PARSERS[only]
    if only == "connect":
        from eic_proxy.options import connect_parser

        return connect_parser()
    parser = argparse.ArgumentParser(
        prog="eic-proxy",
        description="OpenSSH ProxyCommand for private EC2 instances through EC2 Instance Connect Endpoints.",
    )
    parser.add_argument("--version", action="version", version=f"eic-proxy {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        if only in (None, name):
            command_module(name).add_parser(sub)
    _PARSERS[only] = parser
    return parser


def program(args: argparse.Namespace) -> int:
    """Run the sub-command, without error handling."""
    return int(command_module(args.command).run(args))


def main(argv: Optional[Sequence[str]] = None) -> int:
    if hasattr(os, "umask"):
        os.umask(0o077)  # whatever the caller's umask, nothing we create is readable by others

    def run() -> int:
        tolerant_text_streams()
        words = list(sys.argv[1:] if argv is None else argv)
        args = build_parser(words[0] if words and words[0] in COMMANDS else None).parse_args(words)
        setup_logging(args.verbose)
        return program(args)

    return guarded(run)

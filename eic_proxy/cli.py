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
from typing import Callable, Optional, Sequence

from eic_proxy import __version__

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

    Built once per process: the helper builds ``connect``'s before it forks, so a connection does not."""
    if only in _PARSERS:
        return _PARSERS[only]
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


def setup_logging(verbose: int) -> None:
    if os.environ.get("EIC_PROXY_DEBUG"):
        verbose = max(verbose, 2)
    level = max(logging.WARNING - 10 * verbose, logging.DEBUG)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("eic-proxy: %(message)s" if verbose < 2
                                           else "eic-proxy: %(name)s: %(message)s"))
    root = logging.getLogger("eic_proxy")
    root.handlers[:] = [handler]
    if root.level != level:  # setLevel touches every logger there is (botocore's too): a helper's
        root.setLevel(level)  # forked connection would copy each one's memory page
    root.propagate = False


def program(args: argparse.Namespace) -> int:
    """Run the sub-command, without error handling."""
    return int(command_module(args.command).run(args))


def main(argv: Optional[Sequence[str]] = None) -> int:
    if hasattr(os, "umask"):
        os.umask(0o077)  # whatever the caller's umask, nothing we create is readable by others

    def run() -> int:
        _tolerant_text_streams()
        words = list(sys.argv[1:] if argv is None else argv)
        args = build_parser(words[0] if words and words[0] in COMMANDS else None).parse_args(words)
        setup_logging(args.verbose)
        return program(args)

    return guarded(run)


def _tolerant_text_streams() -> None:
    """A character the console or a redirected file cannot encode (cp1252 on Windows: "✔", a Japanese
    Name tag) is replaced, not a crash: the text streams only carry messages and tables."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None and getattr(stream, "errors", "strict") == "strict":
            try:
                reconfigure(errors="replace")
            except (ValueError, OSError):
                pass


def guarded(run: Callable[[], int]) -> int:
    """``run()``, with every failure mapped to one line on stderr and an exit code."""
    from eic_proxy.errors import EicProxyError, ExitCode

    try:
        code = run()
        from eic_proxy.store.files import say_warning

        say_warning()
        return code
    except EicProxyError as exc:
        if not exc.reported:  # the tunnel says its line itself, before ssh's input closes
            _report(exc.message, exc.hint)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        return int(ExitCode.INTERRUPTED)
    except BrokenPipeError:
        # `eic-proxy ls | head`: the reader is gone. Quietly, as a shell would (128 + SIGPIPE).
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return int(ExitCode.BROKEN_PIPE)
    except OSError as exc:
        from eic_proxy.store.files import disk_error, is_disk_trouble

        if not is_disk_trouble(exc):  # the user's disk (full, read-only, …) is not our bug; anything else is
            _report(f"internal error: {exc.__class__.__name__}: {exc}", "please report this with the output of -vv")
            return int(ExitCode.INTERNAL)
        err = disk_error(exc)
        _report(err.message, err.hint)
        return int(err.exit_code)
    except Exception as exc:  # the last line of defence: one line, never a traceback unless asked
        _report(f"internal error: {exc.__class__.__name__}: {exc}", "please report this with the output of -vv")
        return int(ExitCode.INTERNAL)


def _report(message: str, hint: Optional[str]) -> None:
    if log.isEnabledFor(logging.DEBUG):
        log.debug("traceback", exc_info=True)
    from eic_proxy.errors import error_line

    try:
        sys.stderr.write(error_line(message, hint) + "\n")
        sys.stderr.flush()
    except OSError:
        pass

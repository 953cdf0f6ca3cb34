"""How every failure reaches the user: one line on stderr and an exit code; and the log's format.

Used by ``cli.main`` and by the helper's preparer and carrier, which run a connection without the CLI.
"""
from __future__ import annotations

import logging
import os
import sys
from typing import Callable, Optional

log = logging.getLogger("eic_proxy")


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


def tolerant_text_streams() -> None:
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
            report(exc.message, exc.hint)
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
            report(f"internal error: {exc.__class__.__name__}: {exc}", "please report this with the output of -vv")
            return int(ExitCode.INTERNAL)
        err = disk_error(exc)
        report(err.message, err.hint)
        return int(err.exit_code)
    except Exception as exc:  # the last line of defence: one line, never a traceback unless asked
        report(f"internal error: {exc.__class__.__name__}: {exc}", "please report this with the output of -vv")
        return int(ExitCode.INTERNAL)


def report(message: str, hint: Optional[str]) -> None:
    if log.isEnabledFor(logging.DEBUG):
        log.debug("traceback", exc_info=True)
    from eic_proxy.errors import error_line

    try:
        sys.stderr.write(error_line(message, hint) + "\n")
        sys.stderr.flush()
    except OSError:
        pass

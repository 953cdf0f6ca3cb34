"""Where a connection's lines go: its ssh's stderr.

A process carrying one connection writes to fd 2, as ever. A carrier holding several tunnels
(``helper/carrier.py``) gives each its own ``Console`` — the stderr of that tunnel's ssh, and its own
once-only disk warning — in a context variable the tunnel's threads inherit (``thread``); its
``sys.stderr`` becomes a ``ConsoleStream`` writing to the current console. Standard library only:
every layer writes through it.
"""
from __future__ import annotations

import contextvars
import os
import sys
import threading
from typing import Any, Callable, Optional


class Console:
    """One connection's stderr (a descriptor) and its pending disk warning (``store/files.py``)."""

    def __init__(self, fd: int = 2) -> None:
        self.fd = fd
        self.warning: Optional[str] = None  # the first write done without, said once the connection goes on
        self.warned = False

    def write(self, text: str) -> None:
        """``text`` whole, unbuffered (safe from any thread); a closed stderr loses it quietly."""
        data = text.encode("utf-8", "replace")
        try:
            while data:
                data = data[os.write(self.fd, data):]
        except OSError:
            pass


PROCESS = Console(2)
_current: contextvars.ContextVar[Console] = contextvars.ContextVar("eic_proxy_console", default=PROCESS)


def current() -> Console:
    return _current.get()


def use(console: Console) -> None:
    """This thread (and the threads it starts with ``thread``) writes to ``console`` from now on."""
    _current.set(console)


def thread(target: Callable[..., Any], name: str, args: tuple[Any, ...] = ()) -> threading.Thread:
    """A daemon thread that writes where the thread starting it writes."""
    return threading.Thread(target=contextvars.copy_context().run, args=(target, *args), name=name, daemon=True)


class ConsoleStream:
    """``sys.stderr`` of a carrier: text goes to the current connection's console."""

    encoding = "utf-8"
    errors = "replace"

    def write(self, text: str) -> int:
        current().write(text)
        return len(text)

    def flush(self) -> None:
        pass

    def fileno(self) -> int:
        return current().fd

    def isatty(self) -> bool:
        try:
            return os.isatty(current().fd)
        except OSError:
            return False


def per_connection() -> None:
    """From now on this process's ``sys.stderr`` (and every logging handler that wrote to it) writes to
    the current connection's console: the carrier's step from one tunnel to several."""
    old, sys.stderr = sys.stderr, ConsoleStream()
    logging = sys.modules.get("logging")
    if logging is None:
        return
    for logger in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]:
        for handler in getattr(logger, "handlers", ()):
            if isinstance(handler, logging.StreamHandler) and handler.stream is old:
                handler.setStream(sys.stderr)

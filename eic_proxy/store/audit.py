"""The local audit log: one JSON line per event, the client-side half of the CloudTrail record.

``<platformdirs state dir>/audit.jsonl``, user-only. Appends use O_APPEND with one ``write`` per
line, so lines from concurrent processes never interleave; the file is rotated (``.1``, ``.2``)
under a lock once it passes ``MAX_BYTES``, so it stays bounded.
"""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Iterator, Optional

from eic_proxy.errors import EicProxyError
from eic_proxy.store import files

log = logging.getLogger(__name__)

MAX_BYTES = 5 * 1024 * 1024
KEEP = 2  # rotated files kept beside the current one


def log_path() -> Path:
    return files.state_dir() / "audit.jsonl"


def now_iso() -> str:
    now = time.time()  # not datetime: its import is a visible share of a warm connection's start-up
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z"


def append(event: str, path: Optional[Path] = None, **fields: Any) -> None:
    """Add one event; an audit log that cannot be written is reported at -v, never fatal."""
    path = path or log_path()
    record = {"time": now_iso(), "event": event, **{k: v for k, v in fields.items() if v is not None}}
    line = (json.dumps(record, separators=(",", ":")) + "\n").encode()
    try:
        with files.best_effort("the audit log"):  # a full or read-only disk: one warning
            files.ensure_private_dir(path.parent)
            fd = os.open(str(path), os.O_WRONLY | os.O_APPEND | os.O_CREAT | files.O_NOFOLLOW, 0o600)
            try:
                os.write(fd, line)
                size = os.fstat(fd).st_size
            finally:
                os.close(fd)
            if size > MAX_BYTES:
                _rotate(path)
    except (OSError, EicProxyError) as exc:  # not ours, a planted symlink: never fatal
        log.info("cannot write the audit log %s: %s", path, exc)


def _rotate(path: Path) -> None:
    with files.FileLock(path.with_name(path.name + ".lock")):
        try:
            if path.stat().st_size <= MAX_BYTES:
                return  # another process rotated it first
        except FileNotFoundError:
            return
        for n in range(KEEP, 0, -1):
            older = path.with_name(f"{path.name}.{n}")
            newer = path.with_name(f"{path.name}.{n - 1}") if n > 1 else path
            if newer.exists():
                os.replace(newer, older)


def read(path: Optional[Path] = None) -> Iterator[dict[str, Any]]:
    """Every event, oldest first, across the rotated files; unreadable lines are skipped."""
    path = path or log_path()
    for p in [path.with_name(f"{path.name}.{n}") for n in range(KEEP, 0, -1)] + [path]:
        try:
            with open(p, "rb") as fh:  # bytes: one bad byte (a crash mid-write, an editor) spoils one line at most
                for line in fh:
                    try:
                        doc = json.loads(line.decode("utf-8", "replace"))
                    except ValueError:
                        continue
                    if isinstance(doc, dict):
                        yield doc
        except OSError:
            continue

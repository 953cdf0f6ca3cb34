"""A small on-disk cache with TTLs: one JSON file per key, user-only, replaced atomically.

Many ProxyCommands run at once (Ansible forks, parallel scp); atomic replace means a reader sees
a whole entry or none, and a lost race only costs one extra Describe call.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, Optional

from eic_proxy.store import files

TARGET_TTL = 600.0     # instance → IP/VPC/subnet: instances rarely move; a stale entry heals itself
ENDPOINT_TTL = 3600.0  # VPC → endpoint: one per VPC, changes are rare


class Cache:
    def __init__(self, directory: Optional[Path] = None) -> None:
        self.directory = directory or files.cache_dir() / "resolve"

    def _path(self, key: str) -> Path:
        return self.directory / (hashlib.sha256(key.encode()).hexdigest()[:40] + ".json")

    def lock_path(self, key: str) -> Path:
        """A lock file beside the entry, for one writer at a time."""
        return self._path(key).with_suffix(".lock")

    def get(self, key: str, ttl: float) -> Optional[tuple[Any, float]]:
        """(value, age in seconds), or None when missing, expired or unreadable."""
        try:
            doc = json.loads(self._path(key).read_text())
            age = time.time() - float(doc["at"])
            if doc.get("key") != key or not 0 <= age < ttl:
                return None
            return doc["value"], age
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def put(self, key: str, value: Any) -> None:
        data = json.dumps({"key": key, "at": time.time(), "value": value}).encode()
        try:
            files.write_private_atomic(self._path(key), data, durable=False)
        except OSError:
            pass  # a cache that cannot be written only costs speed

    def drop(self, key: str) -> None:
        try:
            os.unlink(self._path(key))
        except OSError:
            pass

    def clear(self) -> int:
        n = 0
        if self.directory.is_dir():
            for p in self.directory.glob("*.json"):
                try:
                    p.unlink()
                    n += 1
                except OSError:
                    pass
        return n

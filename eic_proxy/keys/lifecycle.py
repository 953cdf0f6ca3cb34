"""The local SSH key that gets pushed: short-lived, rotated safely, never rewritten under a reader.

Lifecycle. The key is created on first use and replaced once it is older than its lifetime. ssh
loads the public half of its IdentityFile right after it starts our ProxyCommand and signs with the
private half at authentication (docs/testbed.md §4), so a key may only be replaced when no ssh is
between those two points. Hence the rule: a key is rotated at the *end* of a connection (its own
ssh is done with the key), and only when no other connection has used the key for ``ROTATE_QUIET``
seconds — longer than a pushed key lives on the instance. A key in constant use outlives its
lifetime until the first quiet minute; that costs nothing, since the instance trusts a push for
60 s only. ``eic-proxy keys rotate`` applies the same rule (or ``--force``).

Locking. A connection takes the key and records its use in one step under the *shared* lock (``take``);
creation and rotation take the *exclusive* lock, so a rotation can never slip between a connection's
choice of key and the record of its use. The push comes after, with no lock held: the recorded use keeps
any rotation away for ``ROTATE_QUIET`` seconds, longer than the push serves. (Windows has no shared
mode: there the lock is exclusive, and held for a few file reads only.)

Nothing depends on a connection living to its end (Win32-OpenSSH ends its ProxyCommand with
TerminateProcess): a due key is rotated by the process carrying a tunnel once that tunnel's ssh is past
authentication (``ROTATE_QUIET`` after its push), or at the tunnel's end, whichever comes first.

Storage. ``file`` (default): ``<data dir>/keys/id_ed25519`` (0600) and ``.pub`` beside it.
``keyring``: the private key lives only in the OS keyring (and the ssh-agent, see agent.py); the
``.pub`` file stays on disk because ssh needs it before it starts.
"""
from __future__ import annotations

import base64
import json
import logging
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional

from eic_proxy.errors import KeyError_, UsageError
from eic_proxy.keys.keyring_store import KEYRING_SERVICE, keyring_call, keyring_usable
from eic_proxy.keys.material import KEY_TYPES, PUSHABLE_TYPES, LocalKey, fingerprint_of, generate, load_private_file, looks_like_private_key
from eic_proxy.store import files

log = logging.getLogger(__name__)

# The service honours a pushed key for new authentications for 60 s (docs/protocol.md §1).
PUSH_VALIDITY = 60.0
# Room for ssh's own start-up, key exchange and a slow link between our push and its authentication.
PUSH_SAFETY_MARGIN = 15.0
# A push younger than this is reused by every connection to the same (instance, OS user, key).
PUSH_REUSE = PUSH_VALIDITY - PUSH_SAFETY_MARGIN
# A key may be replaced only when its newest push is at least this old.
ROTATE_QUIET = PUSH_VALIDITY + PUSH_SAFETY_MARGIN
DEFAULT_LIFETIME = 4 * 3600.0
CREDENTIAL_MANAGER_LIMIT = 2560  # CRED_MAX_CREDENTIAL_BLOB_SIZE; keyring's WinVault stores UTF-16


class KeyManager:
    """The managed key: which file, which storage, and its lifecycle under the key lock."""

    def __init__(self, key_type: str = "ed25519", lifetime: float = DEFAULT_LIFETIME, store: str = "file",
                 directory: Optional[Path] = None) -> None:
        if key_type not in KEY_TYPES:
            raise KeyError_(f"unknown key type {key_type!r}", hint=f"use one of {', '.join(KEY_TYPES)}")
        self.key_type = key_type
        self.lifetime = lifetime
        self.directory = directory or files.data_dir() / "keys"
        self.name = "id_ed25519" if key_type == "ed25519" else "id_rsa"
        if store == "keyring" and not keyring_usable():
            store = "file"
            self.keyring_missing = True
        else:
            self.keyring_missing = False
        self.store = store

    # ---- paths -----------------------------------------------------------------------------------
    @property
    def private_path(self) -> Path:
        return self.directory / self.name

    @property
    def public_path(self) -> Path:
        return self.directory / (self.name + ".pub")

    @property
    def _lock_path(self) -> Path:
        return self.directory / ".lock"

    @property
    def _last_use_path(self) -> Path:
        return self.directory / (self.name + ".last-use")

    # ---- reading ---------------------------------------------------------------------------------
    def current(self) -> Optional[LocalKey]:
        """The key as it is now, or None when there is none (or it is incomplete)."""
        try:
            parts = self.public_path.read_text(errors="replace").split()
            line = f"{parts[0]} {parts[1]}"
            created = self.public_path.stat().st_mtime
            base64.b64decode(parts[1], validate=True)
        except (OSError, IndexError, ValueError):
            return None  # missing, or garbage nobody can use: a new key replaces it
        if parts[0] not in PUSHABLE_TYPES:
            return None
        if self.store == "keyring":
            if self._keyring_get() is None:
                return None
            return LocalKey(self.public_path, line, None, created, "keyring")
        if not looks_like_private_key(self.private_path):
            return None
        return LocalKey(self.public_path, line, self.private_path, created, "file")

    def private_key(self, key: LocalKey) -> Any:
        """The private key object (for the agent)."""
        if key.storage == "keyring":
            from cryptography.hazmat.primitives import serialization

            pem = self._keyring_get()
            if pem is None:
                raise KeyError_("the key is missing from the OS keyring", hint="run `eic-proxy keys rotate`")
            try:
                return serialization.load_ssh_private_key(pem.encode(), password=None)
            except (ValueError, TypeError) as exc:
                raise KeyError_(f"the key in the OS keyring is not a usable private key: {exc}",
                                hint="replace it: `eic-proxy keys rotate --force`") from exc
        assert key.private_path is not None
        return load_private_file(key.private_path)

    def last_use(self) -> tuple[float, int]:
        """(time, pid) of the newest connection that used the current key; (0, 0) when none."""
        try:
            at, pid = self._last_use_path.read_text().split()
            return float(at), int(pid)
        except (OSError, ValueError):
            return 0.0, 0

    def note_use(self, at: Optional[float] = None, pid: Optional[int] = None) -> None:
        """Record that process ``pid`` (this one by default) uses the current key now (call under the
        shared lock): at its tunnel's end, that process's own use does not hold back a rotation."""
        files.write_private_atomic(self._last_use_path, f"{at or time.time()!r} {pid or os.getpid()}".encode(),
                                   durable=False)

    def _type_matches(self, key: LocalKey) -> bool:
        if self.key_type == "ed25519":
            return key.key_type == "ssh-ed25519"
        from cryptography.hazmat.primitives.serialization import load_ssh_public_key

        return key.key_type == "ssh-rsa" and \
            load_ssh_public_key(key.public_line.encode()).key_size == int(self.key_type[4:])  # type: ignore[union-attr]

    def due(self, key: LocalKey, now: Optional[float] = None) -> bool:
        """Whether the key should be replaced (too old, or not the configured type)."""
        return key.age(now) >= self.lifetime or not self._type_matches(key)

    def quiet(self, now: Optional[float] = None, ignore_own: bool = False) -> bool:
        """No other connection used the key in the last ROTATE_QUIET seconds."""
        at, pid = self.last_use()
        if ignore_own and pid == os.getpid():
            return True
        return (now or time.time()) - at >= ROTATE_QUIET

    # ---- lifecycle -------------------------------------------------------------------------------
    @contextmanager
    def using(self) -> Iterator[LocalKey]:
        """The key to push, held under the shared lock; created first if there is none.

        Creating is safe at any time: an ssh that found no key file loads it lazily at
        authentication. Replacing is not, and is left to ``rotate_if_due`` at the end.
        """
        files.ensure_private_dir(self.directory)
        while True:
            try:
                lock = files.FileLock(self._lock_path, shared=True, what="the key lock").__enter__()
            except OSError as exc:  # a full or read-only disk: a key in place is still usable (nothing can rotate it)
                key = self.current()
                if key is None:
                    raise
                files.done_without(exc, "the key lock")
                yield key
                return
            try:
                key = self.current()
                if key is not None:
                    yield key
                    return
            finally:
                lock.__exit__(None, None, None)
            with files.FileLock(self._lock_path, what="the key lock"):
                if self.current() is None:
                    self._write_new()

    def ensure(self) -> LocalKey:
        """The key now (created if missing), without holding a lock afterwards: for ssh-config and `keys`."""
        with self.using() as key:
            return key

    def take(self, pid: Optional[int] = None) -> LocalKey:
        """The key a connection pushes, its use recorded (for process ``pid``) before any lock is let go."""
        with self.using() as key:
            with files.best_effort("the key's last use"):  # unrecorded, it only delays a rotation
                self.note_use(pid=pid)
            return key

    def rotate_if_due(self) -> Optional[LocalKey]:
        """At the end of a connection: replace the key if it is due and nobody else used it lately."""
        try:
            with files.FileLock(self._lock_path, timeout=2.0):
                key = self.current()
                if key is not None and self.due(key) and self.quiet(ignore_own=True):
                    return self._write_new()
        except (TimeoutError, OSError) as exc:
            log.debug("key rotation skipped: %s", exc)
        return None

    def rotate(self, force: bool = False) -> LocalKey:
        """Replace the key now; refused while a push is too young, unless forced."""
        with files.FileLock(self._lock_path, what="the key lock"):
            age = time.time() - self.last_use()[0]
            if not force and age < ROTATE_QUIET:
                raise KeyError_(f"the current key was used {age:.0f} s ago; a connection may still be reading it",
                                hint=f"retry in {ROTATE_QUIET - age:.0f} s, or add --force")
            return self._write_new()

    def clear(self) -> list[str]:
        """Remove the key from disk and keyring; returns what was removed."""
        removed = []
        with files.FileLock(self._lock_path, what="the key lock"):
            for p in (self.private_path, self.public_path, self._last_use_path):
                try:
                    p.unlink()
                    removed.append(str(p))
                except FileNotFoundError:
                    pass
            if self.store == "keyring" and self._keyring_get() is not None:
                self._keyring_delete()
                removed.append(f"keyring {KEYRING_SERVICE}/{self.name}")
        return removed

    def _write_new(self) -> LocalKey:
        with files.needed("the SSH key"):
            pem, line = generate(self.key_type)
            # Private half first: a reader that finds the new .pub must also find its private half.
            if self.store == "keyring":
                self._keyring_set(pem.decode())
                try:
                    self.private_path.unlink()  # an older file-mode key must not linger
                except FileNotFoundError:
                    pass
            else:
                files.write_private_atomic(self.private_path, pem)
            files.write_private_atomic(self.public_path, (line + " eic-proxy\n").encode(), 0o644)
            try:
                self._last_use_path.unlink()
            except FileNotFoundError:
                pass
            log.info("new %s key %s (%s)", self.key_type, fingerprint_of(line), self.store)
            key = self.current()
            assert key is not None
            return key

    # ---- keyring ---------------------------------------------------------------------------------
    def _keyring_get(self) -> Optional[str]:
        import keyring

        value = keyring_call(keyring.get_password, "read", KEYRING_SERVICE, self.name)
        if value is None:
            return None
        try:
            return json.loads(value)["pem"]
        except (ValueError, KeyError, TypeError):
            return value

    def _keyring_set(self, pem: str) -> None:
        import keyring

        value = json.dumps({"pem": pem, "created": time.time()})
        if sys.platform == "win32" and len(value.encode("utf-16-le")) > CREDENTIAL_MANAGER_LIMIT:
            raise KeyError_(f"a {self.key_type} key ({len(value)} characters) does not fit in Windows Credential "
                            f"Manager, which holds {CREDENTIAL_MANAGER_LIMIT} bytes (UTF-16) per credential",
                            hint="use an ed25519 key with the keyring (key-type = ed25519), or key-store = file")
        keyring_call(keyring.set_password, "write to", KEYRING_SERVICE, self.name, value)

    def _keyring_delete(self) -> None:
        import keyring
        from keyring.errors import PasswordDeleteError

        try:
            keyring_call(keyring.delete_password, "delete from", KEYRING_SERVICE, self.name)
        except KeyError_ as exc:
            if not isinstance(exc.__cause__, PasswordDeleteError):
                raise


def remaining_life(key: LocalKey, lifetime: float, now: Optional[float] = None) -> float:
    """Seconds until the key is due for rotation (at least one push window, for the agent's lifetime)."""
    return max(lifetime - key.age(now), PUSH_VALIDITY + PUSH_SAFETY_MARGIN)


def make_key_manager(opts: Any) -> Any:
    """The managed key for these settings: type, lifetime, and keyring storage in agent mode.

    ``opts`` is a ConnectOptions or a config.Settings: both carry key_type, key_lifetime, key_store
    and agent (unset values in Settings are None and mean the defaults).
    """
    from eic_proxy.keys.keyring_store import keyring_usable
    from eic_proxy.keys.lifecycle import DEFAULT_LIFETIME, KeyManager

    store = opts.key_store or ("keyring" if opts.agent and keyring_usable() else "file")
    if store == "keyring" and not opts.agent:
        raise UsageError("key-store = keyring needs the ssh-agent (--agent / agent = yes)",
                         hint="ssh can only use a key that is not on disk through the agent")
    return KeyManager(opts.key_type or "ed25519", float(opts.key_lifetime or DEFAULT_LIFETIME), store)

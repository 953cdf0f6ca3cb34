"""The local SSH key that gets pushed: short-lived, rotated safely, never rewritten under a reader.

Lifecycle. The key is created on first use and replaced once it is older than its lifetime. ssh
loads the public half of its IdentityFile right after it starts our ProxyCommand and signs with the
private half at authentication (docs/testbed.md §4), so a key may only be replaced when no ssh is
between those two points. Hence the rule: a key is rotated at the *end* of a connection (its own
ssh is done with the key), and only when no other connection has used the key for ``ROTATE_QUIET``
seconds — longer than a pushed key lives on the instance. A key in constant use outlives its
lifetime until the first quiet minute; that costs nothing, since the instance trusts a push for
60 s only. ``eic-proxy keys rotate`` applies the same rule (or ``--force``).

Locking. Every connection holds a *shared* lock on the key from loading it until its push and use
are on record; creation and rotation take the *exclusive* lock, so a rotation can never slip
between a connection's choice of key and the record of its use.

Storage. ``file`` (default): ``<data dir>/keys/id_ed25519`` (0600) and ``.pub`` beside it.
``keyring``: the private key lives only in the OS keyring (and the ssh-agent, see agent.py); the
``.pub`` file stays on disk because ssh needs it before it starts.
"""
from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from . import files
from .errors import ExitCode, KeyError_

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
KEY_TYPES = ("ed25519", "rsa-2048", "rsa-4096")
PUSHABLE_TYPES = ("ssh-ed25519", "ssh-rsa")
KEYRING_SERVICE = "eic-proxy"


@dataclass(frozen=True)
class LocalKey:
    """A key pair: the one-line public half to push and where each half lives."""

    public_path: Path
    public_line: str  # "ssh-ed25519 AAAA…" without comment, as SendSSHPublicKey wants it
    private_path: Optional[Path]  # None when the private half is in the keyring only
    created: float
    storage: str  # file | keyring | identity

    @property
    def fingerprint(self) -> str:
        return fingerprint_of(self.public_line)

    @property
    def key_type(self) -> str:
        return self.public_line.split()[0]

    @property
    def blob(self) -> bytes:
        """The public key in wire format, as the ssh-agent lists and removes it."""
        return base64.b64decode(self.public_line.split()[1])

    def age(self, now: Optional[float] = None) -> float:
        return (now or time.time()) - self.created


def fingerprint_of(public_line: str) -> str:
    """OpenSSH-style ``SHA256:…`` fingerprint of a one-line public key."""
    blob = base64.b64decode(public_line.split()[1])
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    return f"SHA256:{digest}"


def format_public_line(private_key: Any) -> str:
    from cryptography.hazmat.primitives import serialization

    raw = private_key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return raw.decode().strip()


def generate(key_type: str = "ed25519") -> tuple[bytes, str]:
    """A new key: (OpenSSH private key PEM, public line)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    if key_type == "ed25519":
        key: Any = ed25519.Ed25519PrivateKey.generate()
    elif key_type in ("rsa-2048", "rsa-4096"):
        key = rsa.generate_private_key(public_exponent=65537, key_size=int(key_type[4:]))
    else:
        raise KeyError_(f"unknown key type {key_type!r}", hint=f"use one of {', '.join(KEY_TYPES)}")
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                            serialization.NoEncryption())
    return pem, format_public_line(key)


def check_pushable(public_line: str, where: str) -> None:
    """Refuse key types that the service or the instance rejects, saying why (docs/protocol.md §1)."""
    kind = public_line.split()[0] if public_line.split() else ""
    if kind.startswith("sk-"):
        raise KeyError_(f"{where} is a security-key (FIDO) key ({kind}), which EC2 Instance Connect cannot push",
                        hint="use an Ed25519 or RSA key, or let eic-proxy manage one (drop --identity)")
    if kind.startswith("ecdsa-"):
        raise KeyError_(f"{where} is an ECDSA key; EC2 Instance Connect accepts only Ed25519 and RSA keys",
                        hint="use an Ed25519 or RSA key, or let eic-proxy manage one (drop --identity)")
    if kind == "ssh-rsa":
        from cryptography.hazmat.primitives.serialization import load_ssh_public_key

        bits = load_ssh_public_key(public_line.encode()).key_size  # type: ignore[union-attr]
        if bits < 2048:
            raise KeyError_(f"{where} is a {bits}-bit RSA key; EC2 Instance Connect needs at least 2048 bits")
        return
    if kind != "ssh-ed25519":
        raise KeyError_(f"{where} has an unsupported key type {kind or '(none)'}",
                        hint="EC2 Instance Connect accepts Ed25519 and RSA (2048 bits or more)")


def read_public_line(private_path: Path) -> str:
    """The public line for a key on disk: from its ``.pub`` beside it, else derived from the private key."""
    pub = private_path.with_name(private_path.name + ".pub")
    try:
        parts = pub.read_text().split()
        if len(parts) >= 2:
            return f"{parts[0]} {parts[1]}"
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise KeyError_(f"cannot read {pub}: {exc.strerror}") from exc
    return format_public_line(load_private_file(private_path))


def _looks_like_private_key(path: Path) -> bool:
    """A cheap check (no cryptography import on the warm path): an OpenSSH private key file, whole."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(64)
            fh.seek(0, 2)
            size = fh.tell()
    except OSError:
        return False
    return head.startswith((b"-----BEGIN OPENSSH PRIVATE KEY-----", b"-----BEGIN RSA PRIVATE KEY-----",
                            b"-----BEGIN PRIVATE KEY-----")) and size >= 200


def load_private_file(private_path: Path) -> Any:
    from cryptography.hazmat.primitives import serialization

    try:
        return serialization.load_ssh_private_key(private_path.read_bytes(), password=None)
    except FileNotFoundError:
        raise KeyError_(f"key file {private_path} does not exist") from None
    except (ValueError, TypeError) as exc:
        msg = "it is passphrase-protected" if "password" in str(exc).lower() else str(exc)
        raise KeyError_(f"cannot read the private key {private_path}: {msg}",
                        hint="give the .pub file with --identity, or a key without a passphrase") from exc
    except OSError as exc:
        raise KeyError_(f"cannot read {private_path}: {exc.strerror}") from exc


def identity_key(path: Path) -> LocalKey:
    """Bring-your-own key (``--identity``): push the public half of the user's key, never touch it."""
    path = path.expanduser()
    if path.suffix == ".pub":
        pub, private = path, path.with_suffix("")
    else:
        pub, private = path.with_name(path.name + ".pub"), path
    try:
        parts = pub.read_text().split()
        line = f"{parts[0]} {parts[1]}"
    except (OSError, IndexError):
        if not private.exists():
            raise KeyError_(f"identity {path} not found", hint="give the path of a private key or its .pub") from None
        line = format_public_line(load_private_file(private))
    check_pushable(line, str(path))
    created = pub.stat().st_mtime if pub.exists() else private.stat().st_mtime
    return LocalKey(pub, line, private if private.exists() else None, created, "identity")


def keyring_usable() -> bool:
    """A real OS keyring backend (not keyring's "fail" placeholder, e.g. on a headless Linux)."""
    try:
        import keyring
        from keyring.backends import fail

        kr = keyring.get_keyring()
        if isinstance(kr, fail.Keyring):
            return False
        backends = getattr(kr, "backends", None)
        return backends is None or bool(backends)
    except Exception:
        return False


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
        if not _looks_like_private_key(self.private_path):
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

    def note_use(self, at: Optional[float] = None) -> None:
        """Record that this process uses the current key now (call under the shared lock)."""
        files.write_private_atomic(self._last_use_path, f"{at or time.time()!r} {os.getpid()}".encode(),
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
            with files.FileLock(self._lock_path, shared=True, what="the key lock"):
                key = self.current()
                if key is not None:
                    yield key
                    return
            with files.FileLock(self._lock_path, what="the key lock"):
                if self.current() is None:
                    self._write_new()

    def ensure(self) -> LocalKey:
        """The key now (created if missing), without holding a lock afterwards: for ssh-config and `keys`."""
        with self.using() as key:
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

        keyring_call(keyring.set_password, "write to", KEYRING_SERVICE, self.name,
                     json.dumps({"pem": pem, "created": time.time()}))

    def _keyring_delete(self) -> None:
        import keyring
        from keyring.errors import PasswordDeleteError

        try:
            keyring_call(keyring.delete_password, "delete from", KEYRING_SERVICE, self.name)
        except KeyError_ as exc:
            if not isinstance(exc.__cause__, PasswordDeleteError):
                raise


KEYRING_WAIT = 10.0


def keyring_call(fn: Callable[..., Any], doing: str, *args: Any) -> Any:
    """One call into the OS keyring, bounded: a backend that hangs (a locked Secret Service waiting
    for a prompt nobody sees inside a ProxyCommand) must not hang the connection with it."""
    import threading

    box: dict[str, Any] = {}

    def call() -> None:
        try:
            box["value"] = fn(*args)
        except Exception as exc:  # backends raise their own types (D-Bus, Keychain, Win32): all are "cannot"
            box["error"] = exc

    worker = threading.Thread(target=call, name="eic-keyring", daemon=True)
    worker.start()
    try:
        wait = float(os.environ.get("EIC_PROXY_KEYRING_TIMEOUT", KEYRING_WAIT))
    except ValueError:
        wait = KEYRING_WAIT
    worker.join(wait)
    if worker.is_alive():
        raise KeyError_(f"the OS keyring did not answer within {wait:.0f} s (trying to {doing} it)",
                        hint="unlock the keyring, or set key-store = file in the config",
                        exit_code=ExitCode.LOCKED)
    if "error" in box:
        err = box["error"]
        raise KeyError_(f"cannot {doing} the OS keyring: {err.__class__.__name__}: {err}",
                        hint="set key-store = file in the config") from err
    return box.get("value")


def default_key_path() -> Path:
    """The private key path that ``key-path`` prints and ssh_config names in ``IdentityFile``."""
    return KeyManager().private_path


def ensure_key(private_path: Optional[Path] = None) -> LocalKey:
    """The default managed key, created if missing (kept for callers that need just a key)."""
    if private_path is not None:
        return KeyManager(directory=private_path.parent).ensure()
    return KeyManager().ensure()


def remaining_life(key: LocalKey, lifetime: float, now: Optional[float] = None) -> float:
    """Seconds until the key is due for rotation (at least one push window, for the agent's lifetime)."""
    return max(lifetime - key.age(now), PUSH_VALIDITY + PUSH_SAFETY_MARGIN)

"""The local SSH key that gets pushed: created on first use, user-only, never rewritten under a reader."""
from __future__ import annotations

import base64
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from . import files
from .errors import KeyError_

log = logging.getLogger(__name__)

KEY_NAME = "id_ed25519"


@dataclass(frozen=True)
class LocalKey:
    """A key pair on disk: where the private half lives and the one-line public half to push."""

    private_path: Path
    public_line: str  # "ssh-ed25519 AAAA…" without comment, as SendSSHPublicKey wants it

    @property
    def fingerprint(self) -> str:
        return fingerprint_of(self.public_line)


def default_key_path() -> Path:
    """The private key path that ``key-path`` prints and ssh_config names in ``IdentityFile``."""
    return files.data_dir() / "keys" / KEY_NAME


def fingerprint_of(public_line: str) -> str:
    """OpenSSH-style ``SHA256:…`` fingerprint of a one-line public key."""
    blob = base64.b64decode(public_line.split()[1])
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    return f"SHA256:{digest}"


def format_public_line(private_key: object) -> str:
    from cryptography.hazmat.primitives import serialization

    raw = private_key.public_key().public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return raw.decode().strip()


def generate_ed25519() -> tuple[bytes, str]:
    """A new Ed25519 key: (OpenSSH private key PEM, public line)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    return pem, format_public_line(key)


def read_public_line(private_path: Path) -> str:
    """The public line for a key on disk: from its ``.pub`` beside it, else derived from the private key."""
    pub = private_path.with_name(private_path.name + ".pub")
    try:
        parts = pub.read_text().split()
        if len(parts) >= 2:
            return f"{parts[0]} {parts[1]}"
    except FileNotFoundError:
        pass
    from cryptography.hazmat.primitives import serialization

    try:
        key = serialization.load_ssh_private_key(private_path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise KeyError_(f"cannot read the private key {private_path}: {exc}",
                        hint="delete it and eic-proxy makes a new one") from exc
    return format_public_line(key)


def ensure_key(private_path: Optional[Path] = None) -> LocalKey:
    """Return the local key, creating it (under a cross-process lock) if it does not exist yet.

    The lock makes concurrent first connections agree on one key: without it two processes could
    each write a key, push their own, and one ssh would then read the other's file.
    """
    path = private_path or default_key_path()
    if path.exists():
        return LocalKey(path, read_public_line(path))
    with files.FileLock(path.with_name(path.name + ".lock")):
        if not path.exists():
            pem, public_line = generate_ed25519()
            files.write_private_atomic(path.with_name(path.name + ".pub"), (public_line + " eic-proxy\n").encode(), 0o644)
            files.write_private_atomic(path, pem)
            log.info("created key %s (%s)", path, fingerprint_of(public_line))
            return LocalKey(path, public_line)
    return LocalKey(path, read_public_line(path))

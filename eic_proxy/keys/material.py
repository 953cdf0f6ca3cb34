"""Key material: the key records, their formats and checks, and reading keys from files.

What EC2 Instance Connect accepts (docs/protocol.md §1.1): Ed25519 and RSA of 2048 bits or more;
ECDSA and FIDO ``sk-*`` keys are refused here, with the reason, before any push.
"""
from __future__ import annotations

import base64
import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from eic_proxy.errors import KeyError_

KEY_TYPES = ("ed25519", "rsa-2048", "rsa-4096")
PUSHABLE_TYPES = ("ssh-ed25519", "ssh-rsa")


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


def looks_like_private_key(path: Path) -> bool:
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

"""A file-backed keyring backend for tests: ``PYTHON_KEYRING_BACKEND=tests.testbed.keyring_backend.FileKeyring``.

Stands in for the OS keyring (Secret Service, Keychain, Credential Manager) that a headless test
machine lacks; it stores into ``$EIC_TEST_KEYRING_FILE`` so a test can check what went where.
"""
from __future__ import annotations

import json
import os
from typing import Optional

from jaraco.classes import properties
from keyring.backend import KeyringBackend
from keyring.errors import PasswordDeleteError


class FileKeyring(KeyringBackend):
    @properties.classproperty
    def priority(cls) -> float:  # noqa: N805 - keyring's classproperty protocol
        # Viable only while a test points it at a file: once imported it stays registered in-process.
        if not os.environ.get("EIC_TEST_KEYRING_FILE"):
            raise RuntimeError("test keyring not enabled")
        return 1

    @property
    def _path(self) -> str:
        return os.environ["EIC_TEST_KEYRING_FILE"]

    def _load(self) -> dict:
        try:
            with open(self._path) as fh:
                return json.load(fh)
        except FileNotFoundError:
            return {}

    def _save(self, doc: dict) -> None:
        fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(doc, fh)

    def get_password(self, service: str, username: str) -> Optional[str]:
        return self._load().get(f"{service}/{username}")

    def set_password(self, service: str, username: str, password: str) -> None:
        doc = self._load()
        doc[f"{service}/{username}"] = password
        self._save(doc)

    def delete_password(self, service: str, username: str) -> None:
        doc = self._load()
        if doc.pop(f"{service}/{username}", None) is None:
            raise PasswordDeleteError(username)
        self._save(doc)


class HangingKeyring(FileKeyring):
    """A keyring that never answers, like a locked Secret Service waiting for an unlock prompt."""

    def get_password(self, service: str, username: str) -> Optional[str]:
        import threading

        threading.Event().wait()
        return None

    def set_password(self, service: str, username: str, password: str) -> None:
        self.get_password(service, username)

"""The OS keyring as a key store (``key-store = keyring``): every call bounded, every failure one error.

Inside a ProxyCommand nobody sees an unlock prompt: a locked Secret Service would otherwise hang the
connection, so each call runs under a deadline (``EIC_PROXY_KEYRING_TIMEOUT``, default 10 s).
"""
from __future__ import annotations

import os
from typing import Any, Callable

from eic_proxy.errors import KeyError_, KeyringTimeout

KEYRING_SERVICE = "eic-proxy"


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
        raise KeyringTimeout(f"the OS keyring did not answer within {wait:.0f} s (trying to {doing} it)",
                             hint="unlock the keyring, or set key-store = file in the config")
    if "error" in box:
        err = box["error"]
        raise KeyError_(f"cannot {doing} the OS keyring: {err.__class__.__name__}: {err}",
                        hint="set key-store = file in the config") from err
    return box.get("value")

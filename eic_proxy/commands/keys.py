"""``eic-proxy keys [show|rotate|clear]``: what key is in use, where it lives, and what it was pushed to."""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from typing import Any

from eic_proxy.options import KEY_FLAGS, add_common, add_flags, settings
from eic_proxy.store import files
from eic_proxy.text import pad


def _agent_state(blob: bytes) -> str:
    from eic_proxy.keys.agent import Agent, AgentError, socket_path

    if not socket_path():
        return "no agent (SSH_AUTH_SOCK unset)"
    try:
        with Agent() as agent:
            return "loaded" if agent.has(blob) else "not loaded"
    except AgentError as exc:
        return f"unreachable ({exc.message})"


def _drop_from_agent(blob: bytes) -> bool:
    from eic_proxy.keys.agent import Agent, AgentError, socket_path

    if not socket_path():
        return False
    try:
        with Agent() as agent:
            return agent.has(blob) and agent.remove(blob)
    except AgentError:
        return False


def _human(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds / 3600:.1f} h"


def run_keys(args: argparse.Namespace, settings: Any) -> int:
    from eic_proxy.control.push import recent_pushes
    from eic_proxy.keys.lifecycle import make_key_manager

    manager = make_key_manager(settings)
    if args.action == "rotate":
        old = manager.current()
        key = manager.rotate(force=args.force)
        if old is not None:
            _drop_from_agent(old.blob)
        print(f"new key {key.fingerprint} ({key.key_type}); the old one is no longer pushed", file=sys.stderr)
        return 0
    if args.action == "clear":
        old = manager.current()
        removed = manager.clear()
        if old is not None and _drop_from_agent(old.blob):
            removed.append("ssh-agent identity")
        pushes = files.cache_dir() / "pushes"
        if pushes.is_dir():
            shutil.rmtree(pushes, ignore_errors=True)
            removed.append(str(pushes))
        print("removed: " + (", ".join(removed) if removed else "nothing (no key)"), file=sys.stderr)
        return 0

    key = manager.current()
    now = time.time()
    doc: dict[str, Any] = {"exists": key is not None, "key_type_configured": manager.key_type,
                           "lifetime_seconds": manager.lifetime, "storage": manager.store,
                           "public_key_file": str(manager.public_path)}
    notes = []
    if manager.keyring_missing or (settings.agent and manager.store == "file"):
        notes.append("no usable OS keyring backend: the private key is kept in a 0600 file")
    if key is not None:
        last_use = manager.last_use()[0]
        doc.update({
            "fingerprint": key.fingerprint, "key_type": key.key_type,
            "private_key": str(key.private_path) if key.private_path else f"OS keyring ({manager.store})",
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(key.created)),
            "age_seconds": round(key.age(now)), "rotation_due": manager.due(key, now),
            "last_used_seconds_ago": round(now - last_use) if last_use else None,
            "agent": _agent_state(key.blob),
        })
    doc["recent_pushes"] = recent_pushes(10)
    doc["notes"] = notes
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    if key is None:
        print(f"no key yet: one is created on the first connection (or by `eic-proxy key-path`); "
              f"it will be {manager.key_type} in {manager.public_path.parent}")
    else:
        due = "due: rotates after the next quiet minute" if doc["rotation_due"] else \
            f"rotates in {_human(manager.lifetime - key.age(now))}"
        rows = [("key", f"{key.key_type} {key.fingerprint}"),
                ("age", f"{_human(key.age(now))} ({due})"),
                ("private key", doc["private_key"]), ("public key", str(key.public_path)),
                ("ssh-agent", doc["agent"])]
        for name, value in rows:
            print(f"{pad(name, 12)} {value}")
    for note in notes:
        print(f"note         {note}")
    if doc["recent_pushes"]:
        print("recent pushes (newest first):")
        for p in doc["recent_pushes"]:
            mark = "" if key is not None and p.get("fingerprint") == key.fingerprint else "  (older key)"
            print(f"  {p.get('time')}  {p.get('instance_id')}  {p.get('os_user')}  {p.get('request_id') or '-'}{mark}")
    return 0


def add_parser(sub: Any) -> None:
    ks = sub.add_parser("keys", help="show, rotate or clear the managed key",
                        description="Show the managed key (type, fingerprint, age, where it lives, recent pushes); "
                                    "`rotate` replaces it, `clear` removes it from disk, keyring and agent.")
    ks.add_argument("action", nargs="?", choices=["show", "rotate", "clear"], default="show")
    ks.add_argument("--force", action="store_true", help="rotate even if the key was used in the last minute")
    ks.add_argument("--json", action="store_true", help="machine-readable output (show)")
    add_flags(ks, *KEY_FLAGS)
    add_common(ks)


def run(args: argparse.Namespace) -> int:
    return run_keys(args, settings(args, ""))

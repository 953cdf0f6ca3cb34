"""Per-instance known_hosts files behind per-name links (see sshconfig's docstring for why).

Its own small module because ``connect`` runs it on every connection made through the generated
block: the ssh-config generator's imports (datetime, shutil, shlex) stay off that path.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from eic_proxy.store import files

log = logging.getLogger(__name__)


def known_hosts_dir() -> Path:
    return files.data_dir() / "known_hosts"


def prepare_known_hosts() -> None:
    """Create the per-instance known_hosts tree; its presence tells ``connect`` to maintain the links."""
    base = known_hosts_dir()
    files.ensure_private_dir(base / "by-name")
    files.ensure_private_dir(base / "by-instance")


def link_known_hosts(alias: str, instance_id: str) -> None:
    """Point ``by-name/<alias>`` at ``by-instance/<instance_id>``, if the generated block uses them.

    Cheap when nothing changed (one small read, one readlink). Names that are not a plain file
    name are skipped: ssh would build a nested path from them.
    """
    base = known_hosts_dir()
    by_name = base / "by-name"
    if os.name == "nt" or not by_name.is_dir() or "/" in alias or alias.startswith(".") or not alias:
        return
    target = f"../by-instance/{instance_id}"
    link = by_name / alias
    _any_name(base / "by-instance" / instance_id)
    try:
        if os.readlink(link) == target:
            return
    except OSError:
        pass
    try:
        inst_file = base / "by-instance" / instance_id
        if not inst_file.exists():
            fd = os.open(inst_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND | files.O_NOFOLLOW, 0o600)
            os.close(fd)
        tmp = by_name / f".{alias}.{os.getpid()}.tmp"
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        os.symlink(target, tmp)
        os.replace(tmp, link)
        log.debug("known_hosts for %s now kept with %s", alias, instance_id)
    except OSError as exc:
        log.debug("cannot link known_hosts for %s: %s", alias, exc)


def _any_name(path: Path) -> None:
    """Make every entry of a per-instance file match any name (``*``): the file *is* the instance.

    ssh records a new key under the name it was asked for; without this, reaching the same instance
    by ID after reaching it by Name would ask to trust the same key again.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return
    lines = text.splitlines()
    fixed = [line if not line.strip() or line.startswith(("#", "@", "* ")) else "* " + line.split(None, 1)[-1]
             for line in lines]
    if fixed != lines:
        try:
            files.write_private_atomic(path, ("\n".join(fixed) + "\n").encode("utf-8"))
        except OSError as exc:
            log.debug("cannot rewrite %s: %s", path, exc)


# ---- verified host keys ---------------------------------------------------------------------------------
# Beside each by-instance/<id> file, <id>.json says where its keys came from: "console" (the instance's
# console output, fetched on first contact) or "first-use" (the key the server presented, when the console
# showed none), and when.

def instance_file(instance_id: str) -> Path:
    return known_hosts_dir() / "by-instance" / instance_id


def known_keys(instance_id: str) -> list[tuple[str, str]]:
    """The (type, base64) keys we hold for an instance, from its known_hosts file."""
    try:
        text = instance_file(instance_id).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 3 and not line.startswith(("#", "@")):
            out.append((parts[1], parts[2]))
    return out


def source_of(instance_id: str) -> dict[str, Any]:
    import json

    try:
        doc = json.loads(instance_file(instance_id).with_suffix(".json").read_text())
        return doc if isinstance(doc, dict) else {}
    except (OSError, ValueError):
        return {}


def record_keys(instance_id: str, lines: list[str], source: str, note: str = "") -> None:
    """Write the instance's known_hosts (``* TYPE BASE64`` lines) and where they came from, atomically."""
    import json
    import time

    prepare_known_hosts()
    path = instance_file(instance_id)
    files.write_private_atomic(path, "".join(f"* {line}\n" for line in lines).encode())
    meta = {"source": source, "at": time.time(), "note": note}
    files.write_private_atomic(path.with_suffix(".json"), json.dumps(meta).encode(), durable=False)


def forget_keys(instance_id: str) -> None:
    for p in (instance_file(instance_id), instance_file(instance_id).with_suffix(".json")):
        try:
            p.unlink()
        except FileNotFoundError:
            pass

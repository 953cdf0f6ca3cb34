"""Host keys per instance ID, and the one known_hosts file ssh reads: ``known_hosts/names``.

The store is per instance (``by-instance/<id>``: its keys, ``<id>.json``: where they came from). ssh is
pointed at one plain file, ``names`` (``UserKnownHostsFile`` in the generated block), where each name ssh
uses (its ``%h``) holds the keys of the instance that name reaches *now*: ``connect`` writes the entry
before ssh can look (the host key only arrives through the tunnel). So a replaced instance behind the same
name gets its own keys instead of a "REMOTE HOST IDENTIFICATION HAS CHANGED" alarm, a recycled IP cannot
collide with an old entry, and the same instance under a new IP needs no new entry.

One literal path, no ``%h`` and no symlink: every OpenSSH still shipped reads it (``%`` tokens in
``UserKnownHostsFile`` came in 8.4), and Windows needs a privilege for symlinks. Blocks written by older
versions (``by-name/%h`` links) are still served where their directory exists.

Its own small module because ``connect`` runs it on every connection made through the generated
block: the ssh-config generator's imports (datetime, shutil, shlex) stay off that path.
"""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

from eic_proxy.store import files

log = logging.getLogger(__name__)

NAMES_HEADER = ("# eic-proxy: the host keys of each name, as its instance has them; rewritten by "
                "`eic-proxy connect` (edits are lost)\n")
# What a name may not contain to be a known_hosts pattern of its own: separators, wildcards, negation,
# comments, markers, whitespace.
_NOT_IN_A_NAME = set(" \t\r\n,*?!#[]|\\\"'") | {chr(c) for c in range(32)} | {chr(127)}


def known_hosts_dir() -> Path:
    return files.data_dir() / "known_hosts"


def names_file() -> Path:
    """The known_hosts file the generated block gives ssh."""
    return known_hosts_dir() / "names"


def prepare_known_hosts() -> None:
    """Create the per-instance store and the names file ssh reads (it must exist before ssh looks)."""
    base = known_hosts_dir()
    files.ensure_private_dir(base / "by-instance")
    if not names_file().exists():
        files.write_private_atomic(names_file(), NAMES_HEADER.encode())


def usable_name(alias: str) -> bool:
    return bool(alias) and not alias.startswith("@") and not (set(alias) & _NOT_IN_A_NAME)


def show_under_name(alias: str, instance_id: str) -> None:
    """Make ``names`` hold the keys of ``instance_id`` under ``alias`` (ssh's ``%h``, any port).

    Cheap when nothing changed: one small read, no lock. A change is written under the known_hosts
    lock (local files only), atomically: ssh reading at the same moment sees the old file or the new.
    """
    if not usable_name(alias):
        return
    _link_legacy(alias, instance_id)
    entry = _entry(alias, instance_id)
    try:
        if _parse(names_file().read_text(encoding="utf-8", errors="replace")).get(alias) == entry:
            return
    except OSError:
        pass
    with files.needed(f"the known_hosts entry ssh reads for {alias}"):  # else ssh refuses with no word of why
        _update(lambda entries: entries.__setitem__(alias, entry))
    log.debug("known_hosts for %s now holds the keys of %s", alias, instance_id)


def _refresh_names_of(instance_id: str) -> None:
    """After the instance's keys changed: every name that reaches it shows the new keys."""
    def refresh(entries: dict[str, str]) -> None:
        for alias, text in list(entries.items()):
            if _instance_of(text) == instance_id:
                entries[alias] = _entry(alias, instance_id)

    if names_file().exists():
        _update(refresh)


def _update(change: Any) -> None:
    with files.FileLock(known_hosts_dir() / ".names.lock", what="the known_hosts lock"):
        try:
            text = names_file().read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            text = ""
        entries = _parse(text)
        change(entries)
        files.write_private_atomic(names_file(), (NAMES_HEADER + "".join(entries.values())).encode("utf-8"),
                                   durable=False)


def _entry(alias: str, instance_id: str) -> str:
    pattern = f"{alias},[{alias}]:*"  # ssh looks up "name" on port 22 and "[name]:port" on any other
    return f"# {alias} = {instance_id}\n" + "".join(f"{pattern} {t} {b64}\n" for t, b64 in known_keys(instance_id))


def _instance_of(entry: str) -> str:
    return entry.split("\n", 1)[0].rsplit(" = ", 1)[-1]


def _parse(text: str) -> dict[str, str]:
    """{name: its entry (the ``# name = id`` line and its key lines)} from the names file."""
    entries: dict[str, str] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("# ") and " = " in line:
            current = line[2:].rsplit(" = ", 1)[0]
            entries[current] = line + "\n"
        elif current is not None and line.strip() and not line.startswith("#"):
            entries[current] += line + "\n"
    return entries


def _link_legacy(alias: str, instance_id: str) -> None:
    """Blocks written before ``names`` point ssh at ``by-name/%h``, a link to the instance's file: kept
    up to date while that directory exists (POSIX only; nothing new creates it)."""
    if sys.platform == "win32":
        return
    base = known_hosts_dir()
    by_name = base / "by-name"
    if not by_name.is_dir() or "/" in alias or alias.startswith("."):
        return
    _any_name(base / "by-instance" / instance_id)
    target = f"../by-instance/{instance_id}"
    link = by_name / alias
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

    path = instance_file(instance_id)
    with files.needed(f"the host keys of {instance_id}"):
        prepare_known_hosts()
        files.write_private_atomic(path, "".join(f"* {line}\n" for line in lines).encode())
        meta = {"source": source, "at": time.time(), "note": note}
        files.write_private_atomic(path.with_suffix(".json"), json.dumps(meta).encode(), durable=False)
        _refresh_names_of(instance_id)


def forget_keys(instance_id: str) -> None:
    for p in (instance_file(instance_id), instance_file(instance_id).with_suffix(".json")):
        try:
            p.unlink()
        except FileNotFoundError:
            pass
    _refresh_names_of(instance_id)

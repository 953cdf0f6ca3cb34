"""Where the per-user helper listens, and which build it is: plain ``os`` work, cheap enough for every ProxyCommand.

The thin client (``helper/client.py``) imports this before anything else of ours, so nothing here may
import more than ``os``/``sys``: each module costs every connection its import time.
"""
from __future__ import annotations

import os
import stat
import sys

import eic_proxy

TYPE_CHECKING = False  # typing costs a ProxyCommand ~2 ms to import; annotations are strings here
if TYPE_CHECKING:
    from typing import Mapping, Optional

LOCK_NAME = "helper.lock"
MAX_SUN_PATH = 100  # sockaddr_un holds 104 (macOS) to 108 (Linux) bytes; longer paths are reached relatively


def helper_dir(environ: Optional[Mapping[str, str]] = None) -> Optional[str]:
    """The helper's 0700 directory: ``$XDG_RUNTIME_DIR/eic-proxy``, else the state directory
    (``$XDG_STATE_HOME`` or ``~/.local/state``, or ``~/Library/Caches`` on macOS), as platformdirs has it.

    None where no helper runs (Windows, no HOME).
    """
    env = os.environ if environ is None else environ
    if sys.platform == "win32":
        return None
    override = env.get("EIC_PROXY_HELPER_DIR")
    if override:
        return override
    runtime = env.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isabs(runtime):
        return os.path.join(runtime, "eic-proxy")
    home = env.get("HOME") or os.path.expanduser("~")
    if not home or home == "~":
        return None
    if sys.platform == "darwin":
        return os.path.join(home, "Library", "Caches", "eic-proxy")
    state = env.get("XDG_STATE_HOME")
    base = state if state and os.path.isabs(state) else os.path.join(home, ".local", "state")
    return os.path.join(base, "eic-proxy")


def identity() -> str:
    """This build of eic-proxy: version, interpreter and the package's directories' change times.

    A helper of another identity is not used (its code may be older than the client's): an upgrade, a
    ``git pull`` of an editable install or another virtualenv all change it. Installers replace files by
    rename, which changes the directory's mtime; that is why directories are enough.
    """
    root = os.path.dirname(os.path.abspath(eic_proxy.__file__))
    stamps = []
    with os.scandir(root) as it:
        for entry in it:
            if entry.is_dir(follow_symlinks=False) and not entry.name.startswith(("_", ".")):
                stamps.append(f"{entry.name}:{entry.stat().st_mtime_ns}")
    stamps.sort()
    return "|".join([eic_proxy.__version__, sys.version.split()[0], sys.executable, root,
                     str(os.stat(root).st_mtime_ns), *stamps])


def private_dir_ok(path: str) -> bool:
    """True if ``path`` is a real directory of ours that nobody else may enter (or it was made so now)."""
    if sys.platform == "win32":
        return False
    try:
        st = os.lstat(path)
    except OSError:
        return False
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
        return False
    return not st.st_mode & 0o077


def make_private_dir(path: str) -> bool:
    """Create ``path`` 0700 (parents too, 0700) if missing; True if it is then ours and private."""
    missing = []
    p = path
    while not os.path.lexists(p) and os.path.dirname(p) != p:
        missing.append(p)
        p = os.path.dirname(p)
    for d in reversed(missing):
        try:
            os.mkdir(d, 0o700)
        except FileExistsError:
            pass
        except OSError:
            return False
    return private_dir_ok(path)


def socket_name(ident: str) -> str:
    """One socket per build: after an upgrade the new client never even meets the old helper."""
    h = 0x811C9DC5  # 32-bit FNV-1a: zlib's crc32 would cost the ProxyCommand zlib's import
    for byte in ident.encode():
        h = ((h ^ byte) * 0x01000193) & 0xFFFFFFFF
    return f"helper-{h:08x}.sock"


def same_inode(path: str, inode: int) -> bool:
    """Whether ``path`` is still the socket this process bound (not one another put in its place)."""
    try:
        return os.stat(path).st_ino == inode
    except OSError:
        return False

"""Where the tool keeps its files, and how it writes them: user-only, atomic, locked across processes."""
from __future__ import annotations

import contextlib
import errno
import os
import sys
from pathlib import Path
from typing import Iterator, Optional

from eic_proxy import console
from eic_proxy.errors import LocalFileError, LockTimeout, NotOurs

# What a write can meet on the user's own machine, said as the user would say it.
DISK_CAUSES = {
    errno.ENOSPC: "no space left on the device", errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied", errno.EPERM: "operation not permitted", errno.EDQUOT: "disk quota exceeded",
    errno.ENOLCK: "the file system offers no locks", errno.EOPNOTSUPP: "the file system offers no locks",
    errno.ENOSYS: "the file system offers no locks", errno.EIO: "an input/output error",
}

APP = "eic-proxy"
# Every file we open for writing: a symlink planted in our directories must not redirect the write.
O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def data_dir() -> Path:
    """Stable per-user directory for the key (its path goes into ssh_config, so it must not move)."""
    import platformdirs

    return Path(platformdirs.user_data_dir(APP, appauthor=False))


def cache_dir() -> Path:
    """Per-user cache: resolution results, push records, locks. Safe to delete at any time."""
    import platformdirs

    return Path(platformdirs.user_cache_dir(APP, appauthor=False))


def state_dir() -> Path:
    """Per-user state that is worth keeping but not configuration: the audit log."""
    import platformdirs

    return Path(platformdirs.user_state_dir(APP, appauthor=False))


def config_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_config_dir(APP, appauthor=False))


def _cause(exc: OSError) -> str:
    if isinstance(exc, NotOurs):
        return "it belongs to another user"
    return DISK_CAUSES.get(exc.errno or 0, exc.strerror or str(exc))


def is_disk_trouble(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in DISK_CAUSES


def disk_error(exc: OSError, what: str = "a file") -> LocalFileError:
    """One line for a write the connection needs (a new key, the known_hosts entry ssh will read)."""
    where = f" {exc.filename}" if exc.filename else ""
    return LocalFileError(f"cannot write {what}{where}: {_cause(exc)}",
                          hint="free some space or make it writable; or point XDG_DATA_HOME / XDG_CACHE_HOME (Windows: "
                               "LOCALAPPDATA) at a directory that is")


def done_without(exc: OSError, what: str) -> None:
    """Disk trouble with something the connection can do without (a cache, a record, the audit log, a
    lock that only coordinates) becomes one warning per process (``say_warning``), and the caller goes
    on; any other error is raised. A connection that fails anyway says only its error. (The warning is
    the connection's: ``console.py``.)"""
    if not is_disk_trouble(exc):
        raise exc
    said = console.current()
    if said.warning is None:
        detail = f"{_cause(exc)}{f' ({exc.filename})' if exc.filename else ''}"
        said.warning = f"eic-proxy: warning: cannot write {what}: {detail}; going on without it"


@contextlib.contextmanager
def best_effort(what: str) -> Iterator[None]:
    """A block whose writes the connection can do without (``done_without``)."""
    try:
        yield
    except OSError as exc:
        done_without(exc, what)


@contextlib.contextmanager
def needed(what: str) -> Iterator[None]:
    """A block whose writes the connection needs (a new key, the known_hosts entry ssh will read): disk
    trouble is one line naming the path and the cause (``disk_error``); any other error is raised."""
    try:
        yield
    except OSError as exc:
        if is_disk_trouble(exc):
            raise disk_error(exc, what) from exc
        raise


def say_warning() -> None:
    """Write the pending disk warning, once: when the tunnel opens, or when a command has succeeded."""
    said = console.current()
    if said.warning is None or said.warned:
        return
    said.warned = True
    try:
        sys.stderr.write(said.warning + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` (and its missing parents, 0700 too) and make the leaf 0700; refuse one that is
    not ours, since what is inside (keys, push records, locks) is trusted.

    Parents are created one by one with an explicit mode: ``mkdir(parents=True)`` gives them the
    umask's mode, which is 0777 under ``umask 000``.
    """
    missing = []
    p = path
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=0o700)
        except FileExistsError:
            pass
    if sys.platform != "win32":  # Windows: a profile's ACL keeps other users out
        st = path.stat()
        if st.st_uid != os.getuid():
            raise NotOurs(path, st.st_uid)
        if st.st_mode & 0o077:
            os.chmod(path, 0o700)
    return path


def write_private_atomic(path: Path, data: bytes, mode: int = 0o600, durable: bool = True) -> None:
    """Write ``data`` to ``path`` so readers see either the old or the new file, never half of one.

    The temporary file is created 0600 with O_EXCL from the start, so a secret is never
    world-readable, not even for an instant. (Not ``tempfile.mkstemp``: importing tempfile pulls in
    shutil and three compression modules, a measurable share of a warm connection's start-up.)
    """
    try:
        _write_atomic(path, data, mode, durable)
    except OSError as exc:
        if is_disk_trouble(exc) and not isinstance(exc, NotOurs) and exc.filename != str(path):  # not its temporary
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise


def _write_atomic(path: Path, data: bytes, mode: int, durable: bool) -> None:
    ensure_private_dir(path.parent)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | O_NOFOLLOW
    while True:
        tmp = str(path.parent / f".{path.name}.{os.urandom(6).hex()}.tmp")
        try:
            fd = os.open(tmp, flags, 0o600)
            break
        except FileExistsError:
            continue
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            if durable:  # stamps and caches may lose the last write in a crash; keys may not
                os.fsync(fh.fileno())
        if sys.platform != "win32" and mode != 0o600:
            os.chmod(tmp, mode)
        _replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _replace(tmp: str, path: Path) -> None:
    """``os.replace``; on Windows retried briefly while another process (ssh reading known_hosts or
    the key) has the file open without sharing its deletion."""
    if sys.platform != "win32":
        os.replace(tmp, path)
        return
    import time

    for delay in (0.01, 0.02, 0.05, 0.1, 0.2, 0.4, 0.0):
        try:
            os.replace(tmp, path)
            return
        except PermissionError:
            if not delay:
                raise
            time.sleep(delay)


LOCK_WAIT = 30.0       # no lock is waited on longer than this (EIC_PROXY_LOCK_TIMEOUT overrides)
LOCK_SAY_AFTER = 2.0   # then one stderr line says what we wait for


def lock_wait() -> float:
    try:
        return max(float(os.environ.get("EIC_PROXY_LOCK_TIMEOUT", LOCK_WAIT)), 0.0)
    except ValueError:
        return LOCK_WAIT


class FileLock:
    """An advisory lock on ``path`` shared by every eic-proxy process of this user.

    flock on POSIX, msvcrt.locking on Windows; released when the context exits (or the process dies,
    so a crashed process never leaves a stale lock behind). Never waited on without a bound: a
    holder that is stopped would otherwise hang every connection silently. ``what`` names the lock
    in the waiting line and the error.
    """

    def __init__(self, path: Path, timeout: Optional[float] = None, shared: bool = False,
                 what: str = "a lock") -> None:
        self.path = path
        self.timeout = lock_wait() if timeout is None else timeout
        self.shared = shared  # many readers at once; Windows has no shared mode and falls back to exclusive
        self.what = what
        self._fd: Optional[int] = None

    def __enter__(self) -> "FileLock":
        ensure_private_dir(self.path.parent)
        fd = os.open(str(self.path), os.O_RDWR | os.O_CREAT | O_NOFOLLOW, 0o600)
        try:
            if not try_lock(fd, self.shared):
                self._wait(fd)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return self

    def _wait(self, fd: int) -> None:
        import time

        start = time.monotonic()
        said = False
        delay = 0.005
        while True:
            waited = time.monotonic() - start
            if waited >= self.timeout:
                raise LockTimeout(
                    f"another eic-proxy process has held {self.what} for {waited:.0f} s ({self.path})",
                    hint="a stopped or hung eic-proxy holds it: find it with `pgrep -af eic-proxy`, end it, retry")
            if not said and waited >= LOCK_SAY_AFTER:
                said = True
                sys.stderr.write(f"eic-proxy: waiting for {self.what}, held by another eic-proxy process "
                                 f"(up to {self.timeout:.0f} s)\n")
                sys.stderr.flush()
            time.sleep(min(delay, max(self.timeout - waited, 0)))
            delay = min(delay * 2, 0.1)
            if try_lock(fd, self.shared):
                return

    def __exit__(self, *exc: object) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            _unlock_fd(fd)
            os.close(fd)


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (a record it left is still being acted on). True when unsure."""
    if pid <= 0:
        return False
    if sys.platform == "win32":
        import ctypes

        kernel32 = ctypes.windll.kernel32
        handle = kernel32.OpenProcess(0x1000, 0, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return False
        try:
            code = ctypes.c_ulong()
            return not kernel32.GetExitCodeProcess(handle, ctypes.byref(code)) or code.value == 259  # STILL_ACTIVE
        finally:
            kernel32.CloseHandle(handle)
    try:
        os.kill(pid, 0)  # on Windows this would end the process: never reached there
    except ProcessLookupError:
        return False
    except OSError:
        pass
    return True


if sys.platform == "win32":  # byte-range locks on the first byte (the simulated Windows runs these)
    import msvcrt

    def try_lock(fd: int, shared: bool = False) -> bool:
        try:
            os.lseek(fd, 0, 0)  # msvcrt locks from the file position
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False

    def _unlock_fd(fd: int) -> None:
        os.lseek(fd, 0, 0)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def try_lock(fd: int, shared: bool = False) -> bool:
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False

    def _unlock_fd(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)

"""Run eic-proxy's code as if on Windows or macOS, on this Linux machine.

Only Linux machines exist here, so the platforms our users mostly have are *simulated*, not assumed:
``enter("win32")`` makes this interpreter follow Windows' rules where our code can meet them —

- ``sys.platform == "win32"``; POSIX-only modules (``fcntl``, ``termios``, ``pwd``, ``grp``, ``resource``,
  ``pty``, ``tty``) cannot be imported; POSIX-only attributes are gone (``os.fork``, ``os.getuid``,
  ``os.setsid``, ``os.readv``, ``os.O_NOFOLLOW``, ``socket.AF_UNIX``, ``SO_PEERCRED``, ``SCM_RIGHTS``,
  ``signal.SIGHUP``/``SIGCHLD``/``SIGKILL``, ``select.poll``/``epoll`` …);
- a socket is a handle, not a C-runtime descriptor: ``os.read``, ``os.write``, ``os.dup`` and ``os.close``
  refuse it (EBADF), ``select.select`` and ``signal.set_wakeup_fd`` take sockets only;
- ``socket.socketpair`` is a pair of TCP loopback sockets (as CPython builds it on Windows);
- ``os.symlink`` needs a privilege a normal user does not have (WinError 1314);
- the data directories are Windows' (``%LOCALAPPDATA%\\eic-proxy``, from the environment), ``msvcrt``
  offers ``locking`` (byte-range, per handle), ``ctypes.windll.kernel32`` the few process calls we make;
- a signal ssh would send is not handled (there is no SIGHUP): ssh's exit ends us as TerminateProcess does.

``enter("darwin")``: ``sys.platform == "darwin"``; no ``SO_PEERCRED`` (a Unix socket's peer is read with
``LOCAL_PEERCRED``, answered here from the kernel's real credentials), no ``F_SETPIPE_SZ``; platformdirs'
macOS paths under ``~/Library``; and Apple's frameworks that are not fork-safe are replaced by fakes that
record every call with the caller's pid and whether it is a process forked (without exec) from another
Python process: ``_scproxy`` (urllib's system proxy lookup) and the keyring's macOS Keychain backend
(``MacKeychain``), into ``$EIC_SIM_FRAMEWORK_LOG``. ``/proc`` cannot be hidden: our code reads it only
under ``sys.platform == "linux"``.

What it cannot simulate is written in packaging/windows.md: Win32-OpenSSH itself, real pipes and
consoles, the Credential Manager, ``eic-proxy.exe`` (pip's launcher).

Used by unit tests through ``run_simulated`` (a simulation cannot be left, so it gets an interpreter of its
own) and as a program by end-to-end tests and the
simulated ``eic-proxy.exe``: ``python -m tests.platform_sim win32 [--argv0 PATH] -- ARGS…`` runs
``eic_proxy.entry.main(ARGS)`` under the simulation.
"""
from __future__ import annotations

import errno
import fcntl as _real_fcntl  # kept for the simulated msvcrt, before the module is blocked
import importlib
import json
import os
import select
import signal
import socket
import stat
import subprocess  # noqa: F401 - imported before attributes it captures are removed
import sys
import types
from typing import Any, Callable

BLOCKED_MODULES = {
    "win32": ("fcntl", "termios", "pwd", "grp", "resource", "pty", "tty", "posix_ipc", "_scproxy"),
    "darwin": (),
}
REMOVED = {
    "win32": {
        os: ("fork", "forkpty", "setsid", "getsid", "getuid", "geteuid", "getgid", "getegid", "killpg", "getpgid",
             "setpgid", "fchdir", "fchmod", "fchown", "readv", "writev", "pipe2", "mkfifo", "O_NOFOLLOW",
             "O_CLOEXEC", "sched_getaffinity", "getloadavg", "WNOHANG", "WIFSIGNALED", "WTERMSIG", "WEXITSTATUS",
             "WIFEXITED", "sysconf", "set_blocking", "get_blocking", "posix_spawn", "register_at_fork",
             "getpgrp", "setpgrp", "ttyname"),
        socket: ("AF_UNIX", "SO_PEERCRED", "SCM_RIGHTS", "send_fds", "recv_fds", "SO_PASSCRED"),
        signal: ("SIGHUP", "SIGCHLD", "SIGKILL", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGALRM", "SIGPIPE",
                 "SIGSTOP", "SIGCONT", "SIGTSTP", "pthread_sigmask", "pthread_kill", "setitimer", "siginterrupt",
                 "alarm", "pause", "sigwait", "sigpending"),
        select: ("poll", "epoll", "devpoll", "kqueue", "POLLIN", "EPOLLIN"),
    },
    "darwin": {
        socket: ("SO_PEERCRED", "SO_PASSCRED"),
        os: ("sched_getaffinity", "pipe2"),
        _real_fcntl: ("F_SETPIPE_SZ", "F_GETPIPE_SZ"),
    },
}

# The standard library's own platform branches at import time reach into C modules built for Linux (ssl's
# enum_certificates, ctypes' FormatError): those are Python's business, not ours, so they load first.
PREIMPORTED = ("ssl", "ctypes", "urllib.request", "http.client", "shutil", "tempfile", "uuid", "mimetypes",
               "asyncio", "multiprocessing", "getpass", "webbrowser", "locale", "selectors", "platform")

_original: dict[str, Any] = {}


class _Blocker:
    """A meta-path finder that says a module does not exist, as on the simulated platform."""

    def __init__(self, names: tuple[str, ...]) -> None:
        self.names = set(names)

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name in self.names:
            raise ModuleNotFoundError(f"No module named {name!r} (simulated {sys.platform})", name=name)
        return None


def _is_socket(fd: int) -> bool:
    try:
        return stat.S_ISSOCK(_original["fstat"](fd).st_mode)
    except (OSError, TypeError, ValueError):
        return False


def _refuse_sockets(name: str) -> Callable[..., Any]:
    real = getattr(os, name)
    _original[name] = real

    def wrapper(fd: Any, *args: Any) -> Any:
        if isinstance(fd, int) and _is_socket(fd):
            raise OSError(errno.EBADF, f"Bad file descriptor (a socket handle is not a C-runtime descriptor: "
                                       f"os.{name}, simulated Windows)")
        return real(fd, *args)

    wrapper.__name__ = name
    return wrapper


def _socket_only_select(rlist: Any, wlist: Any, xlist: Any, timeout: Any = None) -> Any:
    for obj in (*rlist, *wlist, *xlist):
        fd = obj if isinstance(obj, int) else obj.fileno()
        if not _is_socket(fd):
            raise OSError(10038, "An operation was attempted on something that is not a socket (simulated Windows)")
    return _original["select"](rlist, wlist, xlist, timeout)


def _socket_only_wakeup_fd(fd: int, **kw: Any) -> int:
    if fd != -1 and not _is_socket(fd):
        raise ValueError("the fd is not a socket (simulated Windows)")
    return _original["set_wakeup_fd"](fd, **kw)


def _tcp_socketpair(family: int = socket.AF_INET, type: int = socket.SOCK_STREAM, proto: int = 0) -> Any:
    """CPython's socketpair for platforms without one: two TCP sockets over loopback."""
    lsock = socket.socket(socket.AF_INET, type, proto)
    try:
        lsock.bind(("127.0.0.1", 0))
        lsock.listen()
        a = socket.socket(socket.AF_INET, type, proto)
        try:
            a.connect(lsock.getsockname())
            b, _ = lsock.accept()
        except BaseException:
            a.close()
            raise
    finally:
        lsock.close()
    return a, b


def _no_symlink(*args: Any, **kw: Any) -> None:
    raise OSError(errno.EPERM, "A required privilege is not held by the client (WinError 1314, simulated Windows)")


def _fake_msvcrt() -> types.ModuleType:
    """``msvcrt.locking`` on one byte at the file position, per handle (flock on the open file here)."""
    m = types.ModuleType("msvcrt")
    m.LK_UNLCK, m.LK_LOCK, m.LK_NBLCK, m.LK_RLCK, m.LK_NBRLCK = 0, 1, 2, 3, 4  # type: ignore[attr-defined]

    def locking(fd: int, mode: int, nbytes: int) -> None:
        if mode == 0:
            _real_fcntl.flock(fd, _real_fcntl.LOCK_UN)
            return
        try:
            _real_fcntl.flock(fd, _real_fcntl.LOCK_EX | _real_fcntl.LOCK_NB)
        except BlockingIOError:
            raise OSError(errno.EACCES, "Permission denied (locked, simulated Windows)") from None

    m.locking = locking  # type: ignore[attr-defined]
    m.get_osfhandle = lambda fd: fd  # type: ignore[attr-defined]
    return m


def _fake_windll() -> Any:
    """``ctypes.windll.kernel32``: the process calls eic-proxy makes, answered from this machine's processes."""
    STILL_ACTIVE = 259

    class Kernel32:
        def OpenProcess(self, access: int, inherit: int, pid: int) -> int:
            try:
                _original["kill"](pid, 0)
            except ProcessLookupError:
                return 0
            except PermissionError:
                pass
            return pid

        def GetExitCodeProcess(self, handle: int, code: Any) -> int:
            try:
                with open(f"/proc/{handle}/stat") as fh:
                    zombie = fh.read().rsplit(")", 1)[1].split()[0] == "Z"
            except OSError:
                zombie = True
            code._obj.value = 0 if zombie else STILL_ACTIVE
            return 1

        def CloseHandle(self, handle: int) -> int:
            return 1

    return types.SimpleNamespace(kernel32=Kernel32())


# ---- macOS: frameworks that must not be called in a forked child -----------------------------------------
_forked = False


def _mark_forked() -> None:
    global _forked
    _forked = True


def framework_call(what: str) -> None:
    """Record a call into an Apple framework: who made it, and whether that process was forked."""
    path = os.environ.get("EIC_SIM_FRAMEWORK_LOG")
    if not path:
        return
    line = json.dumps({"what": what, "pid": os.getpid(), "forked": _forked}) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def _fake_scproxy() -> types.ModuleType:
    m = types.ModuleType("_scproxy")

    def _get_proxies() -> dict:
        framework_call("_scproxy._get_proxies")
        return {}

    def _get_proxy_settings() -> dict:
        framework_call("_scproxy._get_proxy_settings")
        return {"exclude_simple": False, "exceptions": []}

    m._get_proxies = _get_proxies  # type: ignore[attr-defined]
    m._get_proxy_settings = _get_proxy_settings  # type: ignore[attr-defined]
    return m


def _local_peercred() -> None:
    """``getsockopt(SOL_LOCAL, LOCAL_PEERCRED)`` answered with the peer's real uid (from SO_PEERCRED)."""
    import _socket
    import struct

    real_getsockopt = _socket.socket.getsockopt

    def getsockopt(self: Any, level: int, option: int, buflen: Any = None) -> Any:
        if (level, option) == (0, 1) and self.family == 1 and buflen:
            _pid, uid, gid = struct.unpack("3i", real_getsockopt(self, 1, 17, 12))  # SOL_SOCKET, SO_PEERCRED
            return struct.pack("IIh2x16I", 0, uid, 1, gid, *([0] * 15))
        return real_getsockopt(self, level, option) if buflen is None else real_getsockopt(self, level, option, buflen)

    class DarwinSocket(_socket.socket):  # what helper/client.py makes directly
        pass

    DarwinSocket.getsockopt = getsockopt  # type: ignore[method-assign]
    socket.socket.getsockopt = getsockopt  # type: ignore[method-assign]  # what accept() returns
    _socket.socket = DarwinSocket  # type: ignore[misc]


def enter(platform: str) -> None:
    """Make this interpreter follow ``platform``'s rules (see the module docstring). Not undone."""
    if platform not in ("win32", "darwin"):
        raise ValueError(platform)
    for name in PREIMPORTED:  # stdlib modules that would take the real platform's branch at import
        if not (platform == "darwin" and name == "urllib.request"):
            importlib.import_module(name)
    import sysconfig

    sysconfig.get_config_vars()  # read once, for this machine (its module name has the platform in it)
    _original.setdefault("fstat", os.fstat)
    _original.setdefault("kill", os.kill)
    for name in BLOCKED_MODULES[platform]:
        sys.modules.pop(name, None)
    sys.meta_path.insert(0, _Blocker(BLOCKED_MODULES[platform]))
    for module, names in REMOVED[platform].items():
        for name in names:
            if hasattr(module, name):
                _original[f"{module.__name__}.{name}"] = getattr(module, name)
                delattr(module, name)
    sys.platform = platform
    if platform == "darwin":
        os.register_at_fork(after_in_child=_mark_forked)
        sys.modules["_scproxy"] = _fake_scproxy()
        _local_peercred()
        os.environ.setdefault("PYTHON_KEYRING_BACKEND", "tests.platform_sim.MacKeychain")
        sys.modules.pop("urllib.request", None)
        importlib.import_module("urllib.request")  # its macOS branch: proxies from (the fake) _scproxy
    if platform == "win32":
        for name in ("read", "write", "dup", "close"):
            setattr(os, name, _refuse_sockets(name))
        _original["select"] = select.select
        select.select = _socket_only_select
        _original["set_wakeup_fd"] = signal.set_wakeup_fd
        signal.set_wakeup_fd = _socket_only_wakeup_fd  # type: ignore[assignment]
        socket.socketpair = _tcp_socketpair  # type: ignore[assignment]
        os.symlink = _no_symlink
        import selectors

        selectors.DefaultSelector = selectors.SelectSelector  # type: ignore[misc, assignment]
        sys.modules["msvcrt"] = _fake_msvcrt()
        import ctypes

        ctypes.windll = _fake_windll()  # type: ignore[attr-defined]
        home = os.environ.get("USERPROFILE")
        if home:
            os.environ["HOME"] = home  # Path.home() reads USERPROFILE on Windows
        import platformdirs.windows as pdw

        pdw._RESOLVE_WIN_FOLDER = pdw.get_win_folder_from_env_vars  # type: ignore[misc]
    for name in [n for n in sys.modules if n == "platformdirs" or n.startswith("platformdirs.")]:
        if name not in ("platformdirs.windows", "platformdirs.api", "platformdirs.version"):
            sys.modules.pop(name)  # chosen by sys.platform at import
    importlib.invalidate_caches()


def windows_env(base: str) -> dict[str, str]:
    """Windows' per-user variables for a user whose profile is ``<base>/Users/Jane Doe`` (a space, as many have)."""
    profile = os.path.join(base, "Users", "Jane Doe")
    env = {"USERPROFILE": profile, "HOME": profile, "LOCALAPPDATA": os.path.join(profile, "AppData", "Local"),
           "APPDATA": os.path.join(profile, "AppData", "Roaming")}
    for p in (env["LOCALAPPDATA"], env["APPDATA"]):
        os.makedirs(p, exist_ok=True)
    return env


def run_simulated(platform: str, code: str, env: dict[str, str] | None = None, timeout: float = 60,
                  input: bytes | None = None) -> subprocess.CompletedProcess:
    """Run Python ``code`` under the simulated ``platform`` in a new interpreter; its completed process."""
    import subprocess as sp

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    full_env = dict(os.environ if env is None else env)
    full_env["PYTHONPATH"] = root + (os.pathsep + full_env["PYTHONPATH"] if full_env.get("PYTHONPATH") else "")
    prog = f"import tests.platform_sim as _s; _s.enter({platform!r})\n" + code
    return sp.run([sys.executable, "-c", prog], env=full_env, capture_output=True, timeout=timeout,
                  input=input, stdin=None if input is not None else sp.DEVNULL)


def main(argv: list[str]) -> int:
    platform, rest = argv[0], argv[1:]
    argv0 = "eic-proxy"
    if rest[:1] == ["--argv0"]:
        argv0, rest = rest[1], rest[2:]
    if rest[:1] == ["--"]:
        rest = rest[1:]
    enter(platform)
    sys.argv = [argv0, *rest]
    from eic_proxy.entry import main as entry_main

    return entry_main(rest)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))


def _keychain_class() -> Any:
    from keyring.backend import KeyringBackend

    class MacKeychain(KeyringBackend):
        """The Keychain, as keyring's macOS backend reaches it: every call recorded (framework_call),
        the secrets kept in ``$EIC_SIM_KEYCHAIN`` (a JSON file)."""

        priority = 5  # type: ignore[assignment]

        def _load(self) -> dict:
            try:
                with open(os.environ["EIC_SIM_KEYCHAIN"]) as fh:
                    return dict(json.load(fh))
            except (OSError, KeyError, ValueError):
                return {}

        def _save(self, doc: dict) -> None:
            fd = os.open(os.environ["EIC_SIM_KEYCHAIN"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                json.dump(doc, fh)

        def get_password(self, service: str, username: str) -> Any:
            framework_call("Security.SecItemCopyMatching")
            return self._load().get(f"{service}/{username}")

        def set_password(self, service: str, username: str, password: str) -> None:
            framework_call("Security.SecItemAdd")
            doc = self._load()
            doc[f"{service}/{username}"] = password
            self._save(doc)

        def delete_password(self, service: str, username: str) -> None:
            framework_call("Security.SecItemDelete")
            doc = self._load()
            doc.pop(f"{service}/{username}", None)
            self._save(doc)

    return MacKeychain


def __getattr__(name: str) -> Any:
    if name == "MacKeychain":  # built on first use: keyring is imported only by what needs it
        cls = _keychain_class()
        globals()["MacKeychain"] = cls
        return cls
    raise AttributeError(name)

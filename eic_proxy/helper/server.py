"""The per-user helper: keeps the data path imported and forks one process per connection.

Started on demand by the thin client (``helper/client.py``), detached from ssh, listening on a 0600
socket in a 0700 directory and answering only its own user (SO_PEERCRED). For each connection it
forks a child (``helper/child.py``) that takes ssh's descriptors and runs the connection's lifecycle
(``lifecycle/connection.py``); the helper itself only listens, forks and loads (``helper/warm.py``).

The helper has one thread whenever it forks (``fork`` copies only the calling thread; a lock held by
another would stay locked forever in the child): its loading thread is joined before it accepts
again. It leaves when no connection came for ``--idle`` seconds, when its socket was taken over, or
when its own code on disk changed (an upgrade).
"""
from __future__ import annotations

import argparse
import gc
import os
import select
import signal
import socket
import sys
import threading
import time
from typing import Optional

from eic_proxy.helper import address, wire
from eic_proxy.helper.child import HELPER_NAME, run_child, set_name
from eic_proxy.helper.client import peer_uid
from eic_proxy.helper.warm import COLD, WARM, preload, warm_up

DEFAULT_IDLE = 900.0
CHECK_EVERY = 5.0  # how often an idle helper looks whether its socket or its code changed
COLD_AFTER = 1.0  # idle this long before the cold path's modules are loaded (a burst is served first)
REQUEST_WAIT = 2.0

class Helper:
    def __init__(self, directory: str, name: str, ident: str, idle: float) -> None:
        self.directory = directory
        self.name = name
        self.identity = ident
        self.idle = idle
        self.listener: Optional[socket.socket] = None
        self.inode = 0
        self.last = time.monotonic()
        self.cold = list(COLD)
        self.cold_wanted = False  # set when a connection had to load botocore: first connections happen here
        self.started = time.monotonic()
        self.connections = 0

    def listen(self) -> None:
        """Bind a private name, then rename it into place: a stale socket is replaced atomically."""
        if sys.platform == "win32":  # no helper on Windows (and the type checker sees it)
            raise OSError("the helper is POSIX-only")
        os.chdir(self.directory)  # relative names: the path may be too long for sockaddr_un
        if not address.private_dir_ok("."):
            raise SystemExit(f"{self.directory} is not a private directory of this user")
        temp = f".{self.name}.{os.getpid()}"
        try:
            os.unlink(temp)
        except FileNotFoundError:
            pass
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(temp)
        os.chmod(temp, 0o600)
        sock.listen(128)
        os.rename(temp, self.name)
        self.inode = os.stat(self.name).st_ino
        self.listener = sock

    def still_ours(self) -> bool:
        """False when another helper took the name, someone removed it, or our code changed on disk."""
        return address.same_inode(self.name, self.inode) and address.identity() == self.identity

    def serve(self) -> None:
        assert self.listener is not None
        gc.freeze()  # what is loaded now stays shared with the children (no copy-on-write by the collector)
        next_check = time.monotonic() + CHECK_EVERY
        while True:
            now = time.monotonic()
            loading = self.cold and self.cold_wanted
            due = min(next_check, self.last + self.idle, self.last + COLD_AFTER if loading else float("inf"))
            wait = max(0.0, due - now)
            ready, _, _ = select.select([self.listener], [], [], wait)
            if ready:
                self.accept()
                continue
            now = time.monotonic()
            if loading and now >= self.last + COLD_AFTER:
                # In a thread (gone before the next fork): what loading allocates lands in a malloc arena
                # of its own, not in the heap each forked connection allocates from (copying its pages).
                loader = threading.Thread(target=preload, args=(self.cold.pop(0),), name="eic-preload")
                loader.start()
                loader.join()
                gc.freeze()
                continue
            if now >= self.last + self.idle or (now >= next_check and not self.still_ours()):
                self.leave()
                return
            next_check = now + CHECK_EVERY

    def leave(self) -> None:
        """Remove our socket (not one another helper put in its place) and stop listening."""
        if address.same_inode(self.name, self.inode):
            try:
                os.unlink(self.name)
            except OSError:
                pass
        if self.listener is not None:
            self.listener.close()

    def accept(self) -> None:
        if sys.platform == "win32":  # no helper on Windows (and the type checker sees it)
            raise OSError("the helper is POSIX-only")
        assert self.listener is not None
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        try:
            if peer_uid(conn) != os.geteuid():
                return
            conn.settimeout(REQUEST_WAIT)
            request = wire.recv(conn)
            if isinstance(request, dict) and request.get("op") in ("status", "stop", "cold"):
                self.cold_wanted = self.cold_wanted or request["op"] == "cold"
                wire.send(conn, {"pid": os.getpid(), "identity": self.identity, "uptime": time.monotonic() - self.started,
                                 "connections": self.connections, "idle": self.idle, "cold_loaded": not self.cold,
                                 "cold_wanted": self.cold_wanted})
                if request["op"] == "stop":
                    raise SystemExit(0)
                return
            if not _valid(request):
                return
            self.last = time.monotonic()  # only connections count as activity, not `helper status`
            if request["identity"] != self.identity:
                wire.send(conn, ("other", self.identity))
                return
            self.connections += 1
            pid = os.fork()
            if pid == 0:
                code = 70
                try:
                    self.listener.close()
                    code = run_child(conn, request, os.path.join(self.directory, self.name))
                finally:
                    os._exit(code)
        except (OSError, wire.WireError):
            pass
        finally:
            conn.close()


def _valid(request: object) -> bool:
    return (isinstance(request, dict) and isinstance(request.get("identity"), str)
            and isinstance(request.get("cwd"), str) and isinstance(request.get("argv"), list)
            and all(isinstance(a, str) for a in request["argv"]) and isinstance(request.get("env"), dict)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in request["env"].items()))


def _idle_from_env() -> float:
    """``EIC_PROXY_HELPER_IDLE`` in seconds; anything that is not a positive number means the default."""
    try:
        value = float(os.environ.get("EIC_PROXY_HELPER_IDLE") or DEFAULT_IDLE)
    except ValueError:
        return DEFAULT_IDLE
    return value if 0 < value < float("inf") else DEFAULT_IDLE


def _stop(_signum: int, _frame: object) -> None:
    raise SystemExit(0)


def main(argv: Optional[list[str]] = None) -> int:
    if sys.platform == "win32":  # no helper on Windows (and the type checker sees it)
        raise OSError("the helper is POSIX-only")
    parser = argparse.ArgumentParser(prog="python -m eic_proxy.helper.server")
    parser.add_argument("--dir", required=True)
    parser.add_argument("--socket", required=True)
    parser.add_argument("--ready-fd", type=int)
    parser.add_argument("--idle", type=float, default=_idle_from_env())
    parser.add_argument("--identity", help=argparse.SUPPRESS)  # tests: pose as another build
    args = parser.parse_args(argv)
    set_name(HELPER_NAME)
    os.umask(0o077)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel; their outcome goes to their client
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _stop)
    preload(WARM)
    warm_up()
    helper = Helper(args.dir, args.socket, args.identity or address.identity(), max(args.idle, 0.1))
    helper.listen()
    if args.ready_fd is not None:
        try:
            os.write(args.ready_fd, b"1")
            os.close(args.ready_fd)
        except OSError:
            pass
    try:
        helper.serve()
    except SystemExit:
        helper.leave()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""eic-proxy under a simulated Windows and macOS (tests/platform_sim.py): it imports, its local commands run,
the pump carries data both ways and ends, files are locked without fcntl, and no lock is held across a push.

Each simulation gets an interpreter of its own (a simulated platform cannot be left).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time

import pytest

from tests.conftest import wait_until
from tests.platform_sim import run_simulated, windows_env

IMPORT_ALL = """
import importlib, pkgutil, eic_proxy
bad = []
for m in pkgutil.walk_packages(eic_proxy.__path__, "eic_proxy."):
    if not m.name.endswith("__main__"):
        try:
            importlib.import_module(m.name)
        except BaseException as exc:
            bad.append(f"{m.name}: {exc!r}")
print("\\n".join(bad) or "all imported")
"""


def _win_env(tmp_path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("XDG_")}
    env.update(windows_env(str(tmp_path / "C")))
    return env


def _check(r: subprocess.CompletedProcess) -> str:
    out = r.stdout.decode() + r.stderr.decode()
    assert r.returncode == 0, out
    assert "Traceback" not in out, out
    return out


@pytest.mark.parametrize("platform", ["win32", "darwin"])
def test_every_module_imports(platform, tmp_path):
    out = _check(run_simulated(platform, IMPORT_ALL, env=_win_env(tmp_path)))
    assert out.strip() == "all imported"


def test_the_simulation_is_windows_where_our_code_looks(tmp_path):
    code = """
import os, socket, sys, select
from eic_proxy.store import files
assert sys.platform == "win32" and not hasattr(os, "fork") and not hasattr(socket, "AF_UNIX")
assert not hasattr(select, "poll") and not hasattr(os, "getuid")
try:
    import fcntl
except ImportError:
    pass
else:
    raise SystemExit("fcntl imported")
a, b = socket.socketpair()
assert a.family == socket.AF_INET
for call in (lambda: os.read(a.fileno(), 1), lambda: os.dup(a.fileno())):
    try:
        call()
    except OSError:
        pass
    else:
        raise SystemExit("a socket was read as a descriptor")
print(files.data_dir())
"""
    out = _check(run_simulated("win32", code, env=_win_env(tmp_path)))
    assert out.strip().endswith("/Users/Jane Doe/AppData/Local/eic-proxy")


LOCAL_COMMANDS = [
    ["--version"], ["--help"], ["connect", "--help"], ["ssh-config", "web-*", "--user", "ec2-user"],
    ["keys"], ["keys", "--json"], ["key-path"], ["policy", "--instance", "i-0123456789abcdef0"],
    ["completion", "bash"], ["cache", "clear"], ["audit"], ["helper", "status"],
]


@pytest.mark.parametrize("platform", ["win32", "darwin"])
@pytest.mark.parametrize("argv", LOCAL_COMMANDS, ids=lambda a: " ".join(a))
def test_local_commands_run(platform, argv, tmp_path):
    code = f"import sys; from eic_proxy.cli import main; sys.exit(main({argv!r}))"
    env = _win_env(tmp_path) if platform == "win32" else {**os.environ, "HOME": str(tmp_path / "Users" / "jane")}
    r = run_simulated(platform, code, env=env)
    out = r.stdout.decode() + r.stderr.decode()
    assert "Traceback" not in out and "internal error" not in out, out
    assert r.returncode in (0, 2) if argv == ["helper", "status"] else r.returncode == 0, out


def test_doctor_and_tables_survive_a_cp1252_console(tmp_path):
    """`doctor > file` on Windows writes cp1252: the marks fall back to ASCII, other text is replaced."""
    code = ("from eic_proxy.commands.doctor import render, marks_fit; from eic_proxy.checks.rules import Check;"
            "import sys; u = marks_fit(sys.stdout.encoding); print(u);"
            "print(render(Check('credentials', 'pass', 'データベース-1 ✔'), unicode=u))")
    code = "from eic_proxy.report import tolerant_text_streams; tolerant_text_streams()\n" + code
    env = {**_win_env(tmp_path), "PYTHONIOENCODING": "cp1252"}
    r = run_simulated("win32", code, env=env)
    out = _check(r)
    assert out.splitlines()[0] == "False" and out.splitlines()[1].startswith("ok credentials")


PUMP_BOTH_WAYS = """
import os, time
from tests.unit.test_pump import Endpoint, _run_pump, quiet
from tests.unit.wsserver import server_frame
down = os.urandom(200_000)
up = os.urandom(300_000)
frames = b"".join(server_frame(2, down[i:i + 60_000]) for i in range(0, len(down), 60_000))
ep = Endpoint([frames])
started = time.monotonic()
result, received, closed = _run_pump(ep, [up], quiet())
ep.thread.join(5)
assert received == down, len(received)
assert ep.frames.data() == up
assert result.error is None and closed == [1], result
print("ended in", round(time.monotonic() - started, 2))
"""


@pytest.mark.parametrize("platform", ["win32", "darwin"])
def test_the_pump_carries_both_ways_and_ends(platform, tmp_path):
    out = _check(run_simulated(platform, PUMP_BOTH_WAYS, env=_win_env(tmp_path)))
    assert float(out.split("ended in")[1]) < 2.0


def test_file_locks_exclude_other_processes_on_windows(tmp_path):
    """msvcrt.locking (the simulated one: per handle) keeps a second process out until the first lets go."""
    path = tmp_path / "k.lock"
    holder = ("import sys, time; from pathlib import Path; from eic_proxy.store import files\n"
              f"with files.FileLock(Path({str(path)!r})):\n"
              "    print('held', flush=True); sys.stdin.read()\n")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {**_win_env(tmp_path), "PYTHONPATH": root}
    p = subprocess.Popen([sys.executable, "-c", "import tests.platform_sim as s; s.enter('win32')\n" + holder],
                         env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert p.stdout.readline() == b"held\n"
        probe = (f"from pathlib import Path; from eic_proxy.store import files\n"
                 f"try:\n    files.FileLock(Path({str(path)!r}), timeout=0.3).__enter__()\n"
                 "except files.LockTimeout as exc:\n    print('refused', exc.exit_code)\n")
        assert "refused" in _check(run_simulated("win32", probe, env=_win_env(tmp_path)))
    finally:
        p.stdin.close()
        p.wait(10)
    probe = (f"from pathlib import Path; from eic_proxy.store import files\n"
             f"with files.FileLock(Path({str(path)!r}), timeout=2): print('got it')\n")
    assert "got it" in _check(run_simulated("win32", probe, env=_win_env(tmp_path)))


# ---- no lock held across a push -------------------------------------------------------------------------
class BlockingEic:
    """SendSSHPublicKey that waits until released: a slow or throttled push."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.release = threading.Event()

    def send_ssh_public_key(self, InstanceId, InstanceOSUser, SSHPublicKey):
        self.calls.append(InstanceId)
        assert self.release.wait(20)
        return {"RequestId": f"req-{InstanceId}-{len(self.calls)}"}


class FakeAws:
    profile = None
    region = "us-east-1"

    def __init__(self, eic) -> None:
        self.eic = eic

    def client(self, name, **kw):
        return self.eic


def push_scenario() -> dict:
    """Two targets push at once; a third connection to the first target waits for its push and makes
    none; a push marked by a process that died is not waited for."""
    from eic_proxy.control import push
    from eic_proxy.keys.lifecycle import KeyManager

    eic = BlockingEic()
    aws = FakeAws(eic)
    manager = KeyManager()
    results: dict[str, str] = {}

    def connect(name: str, iid: str) -> None:
        key = manager.take()
        results[name] = push.ensure_pushed(aws, key, iid, "ec2-user")

    threads = [threading.Thread(target=connect, args=("a", "i-0aaaaaaaaaaaaaaaa"))]
    threads[0].start()
    assert wait_until(lambda: eic.calls == ["i-0aaaaaaaaaaaaaaaa"], 10)
    threads.append(threading.Thread(target=connect, args=("b", "i-0bbbbbbbbbbbbbbbb")))
    threads[1].start()
    both = wait_until(lambda: len(eic.calls) == 2, 10)  # the first push is still in flight
    from eic_proxy.store import inflight

    seen_in_flight: list = []
    real_holder = inflight.holder

    def watched(marker, bound):
        found = real_holder(marker, bound)
        if found is not None:
            seen_in_flight.append(found)
        return found

    inflight.holder = watched
    threads.append(threading.Thread(target=connect, args=("c", "i-0aaaaaaaaaaaaaaaa")))
    threads[2].start()
    waited = wait_until(lambda: seen_in_flight, 10)  # c found a's push in flight and waits for it
    calls_while_blocked = list(eic.calls)
    eic.release.set()
    for t in threads:
        t.join(20)
    inflight.holder = real_holder

    key = manager.take()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    pending = push._record_path("i-0dddddddddddddddd", "ec2-user", key.fingerprint).with_suffix(".pending")
    files_mod = __import__("eic_proxy.store.files", fromlist=["x"])
    files_mod.write_private_atomic(pending, json.dumps({"pid": dead.pid, "tid": 1, "at": time.time()}).encode())
    started = time.monotonic()
    results["d"] = push.ensure_pushed(aws, key, "i-0dddddddddddddddd", "ec2-user")
    return {"both_in_flight": both, "c_waited": waited, "calls_while_blocked": calls_while_blocked, "calls": eic.calls,
            "results": results, "dead_wait": time.monotonic() - started}


def _assert_push_scenario(out: dict) -> None:
    assert out["both_in_flight"] and out["c_waited"], out
    assert sorted(out["calls_while_blocked"]) == ["i-0aaaaaaaaaaaaaaaa", "i-0bbbbbbbbbbbbbbbb"], out
    assert out["results"]["c"] == out["results"]["a"], out  # served by a's push
    assert out["calls"].count("i-0aaaaaaaaaaaaaaaa") == 1 and "i-0dddddddddddddddd" in out["calls"], out
    assert out["dead_wait"] < 1.0, out


def test_pushes_to_two_targets_run_at_once_and_a_burst_makes_one(isolated_env):
    _assert_push_scenario(push_scenario())


def test_the_same_on_windows_where_the_key_lock_is_exclusive(tmp_path):
    code = "import json; from tests.unit.test_simulated_platforms import push_scenario; print(json.dumps(push_scenario()))"
    env = {**_win_env(tmp_path), "AWS_EC2_METADATA_DISABLED": "true"}
    out = _check(run_simulated("win32", code, env=env))
    _assert_push_scenario(json.loads(out.strip().splitlines()[-1]))


def test_a_due_rotation_runs_while_the_tunnel_lives(isolated_env):
    """The pump runs its chores (the rotation of a due key) once their time comes, in a thread of their own."""
    from eic_proxy.transport.local import LocalEnd
    from eic_proxy.transport.pump import pump
    from tests.unit.test_pump import Endpoint, quiet

    ran = threading.Event()
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    ep = Endpoint()
    done: list = []
    t = threading.Thread(target=lambda: done.append(pump(ep.client, quiet(), LocalEnd(in_r, out_w), lambda: None,
                                                         tell=lambda s: None,
                                                         chores=[(time.monotonic() + 0.2, ran.set)])))
    t.start()
    try:
        assert ran.wait(5) and not done  # ran while the tunnel was still open
    finally:
        os.close(in_w)
        t.join(10)
        for fd in (in_r, out_r, out_w):
            os.close(fd)
    assert done and done[0].error is None


def test_an_agent_on_a_unix_socket_path_is_one_line_on_windows(tmp_path):
    """Git Bash's SSH_AUTH_SOCK=/tmp/… with --agent: said, exit 9, not "internal error: AF_UNIX"."""
    code = ("import sys\nfrom eic_proxy.keys.agent import Agent, AgentError\n"
            "try:\n    Agent().__enter__()\nexcept AgentError as exc:\n    print(int(exc.exit_code), exc.message)\n")
    env = {**_win_env(tmp_path), "SSH_AUTH_SOCK": "/tmp/ssh-XXXXabcd/agent.1234"}
    out = _check(run_simulated("win32", code, env=env))
    assert out.startswith("9 SSH_AUTH_SOCK=/tmp/ssh-XXXXabcd/agent.1234 is a Unix socket"), out


def test_an_rsa_key_is_refused_by_credential_manager_before_it_is_written(isolated_env, monkeypatch):
    from eic_proxy.errors import KeyError_
    from eic_proxy.keys import lifecycle
    from eic_proxy.keys.material import generate

    written = []
    monkeypatch.setattr("keyring.set_password", lambda *a: written.append(a))
    monkeypatch.setattr(lifecycle.sys, "platform", "win32")
    manager = lifecycle.KeyManager("rsa-2048")
    with pytest.raises(KeyError_) as info:
        manager._keyring_set(generate("rsa-2048")[0].decode())
    assert "Credential Manager" in info.value.message and "ed25519" in info.value.hint and not written
    manager._keyring_set(generate("ed25519")[0].decode())  # an Ed25519 key fits
    assert len(written) == 1


SHELLS = [["/bin/sh"]] + ([["bash", "--posix"]] if shutil.which("bash") else [])


@pytest.mark.parametrize("shell", SHELLS, ids=lambda s: " ".join(s))
@pytest.mark.parametrize("case", ["code", "signal", "lost"])
def test_the_waiter_runs_under_posix_shells(shell, case):
    """macOS's /bin/sh is bash 3.2 in POSIX mode, Debian's is dash: the helper client's waiter (which
    passes ssh's signals on as letters on its socket and exits with the tunnel's code) must mean the
    same in both."""
    import signal
    import socket

    from eic_proxy.helper.client import WAITER

    ours, theirs = socket.socketpair()
    child = subprocess.Popen(["sleep", "30"])
    on_fd3 = "import os, sys; os.dup2(int(sys.argv[1]), 3); os.execvp(sys.argv[2], sys.argv[2:])"
    waiter = subprocess.Popen([sys.executable, "-c", on_fd3, str(theirs.fileno()), *shell, "-c", WAITER, "eic-proxy",
                               str(child.pid), "the tunnel was lost"], pass_fds=(theirs.fileno(),), stderr=subprocess.PIPE)
    theirs.close()
    try:
        if case == "code":
            ours.sendall(b"7\n")
            assert waiter.wait(10) == 7
        elif case == "signal":
            for sig, letter in ((signal.SIGTERM, b"T"), (signal.SIGINT, b"I"), (signal.SIGHUP, b"H")):
                # A shell runs a trap when its `read` is interrupted; a signal that comes while it is on its
                # way back into `read` (after the previous trap) may wait for input (bash --posix, once
                # in a busy pair). ssh sends one signal to a waiter long blocked in `read` (and a missed
                # one still ends the tunnel: ssh's pipes close); here, wait for that state too.
                assert wait_until(lambda: _sh_ready(waiter.pid) and _sh_blocked(waiter.pid), 5)
                waiter.send_signal(sig)
                ours.settimeout(10)
                assert ours.recv(1) == letter  # passed on to the tunnel (helper/waiter.py)
            assert child.poll() is None  # no process is signalled: the tunnel may share one with others
            ours.close()
            assert waiter.wait(10) == 129
        else:
            ours.close()
            assert waiter.wait(10) == 70 and b"the tunnel was lost" in waiter.stderr.read()
    finally:
        ours.close()
        child.kill()
        child.wait()
        waiter.kill()
        waiter.wait()


def _sh_blocked(pid: int) -> bool:
    """The shell sleeps (in its `read`: the waiter blocks nowhere else)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "S"
    except (OSError, IndexError):
        return False


def _sh_ready(pid: int) -> bool:
    """The shell has set its traps: SIGHUP, SIGINT and SIGTERM are caught (/proc/PID/status SigCgt)."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            caught = int(next(line for line in fh if line.startswith("SigCgt:")).split()[1], 16)
    except (OSError, StopIteration, ValueError):
        return False
    return all(caught & (1 << (sig - 1)) for sig in (1, 2, 15))

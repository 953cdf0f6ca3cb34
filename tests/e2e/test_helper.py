"""The per-user helper, through real ssh: on by default, each tunnel's fate its own, each connection's
environment its own, and every way of not being usable (stale, another build, not private, switched
off) leaves today's in-process path working."""
from __future__ import annotations

import hashlib
import marshal
import os
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from eic_proxy.helper import address
from tests.conftest import wait_until
from tests.e2e.conftest import helpers
from tests.testbed.bed import ACCESS_KEY
from tests.testbed.processes import HELPER, PREPARE, TUNNEL, comm, our_processes

pytestmark = pytest.mark.e2e

def tunnels(client) -> set[int]:
    return {pid for pid in our_processes(str(client.home)) if comm(pid) == TUNNEL}


def helpers_of(client) -> set[int]:
    """This test's helpers (other tests may run at the same time: pytest -n)."""
    return helpers(str(client.home))


def described(pids: set[int]) -> str:
    """For a failure: each process's parent, name, state and command line (two "helpers" were seen once
    under a doubly loaded machine; this says what the second one was)."""
    out = []
    for pid in sorted(pids):
        try:
            status = dict(line.split(":\t", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                          if ":\t" in line)
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError as exc:
            out.append(f"{pid}: gone ({exc})")
            continue
        out.append(f"{pid}: ppid {status.get('PPid')} {status.get('Name')} {status.get('State')} {cmd}")
    return "; ".join(out)


def helper_dir(client) -> Path:
    d = address.helper_dir(client.env)
    assert d is not None
    return Path(d)


def socket_path(client) -> Path:
    return helper_dir(client) / address.socket_name(address.identity())


def debug_ssh(client, host: str = "web-1", command: str = "echo ok", env: dict | None = None):
    return client.run(["ssh", "-F", str(client.config), host, command], env=dict(env or client.env, EIC_PROXY_DEBUG="1"))


def test_first_connect_starts_a_private_helper_and_later_ones_are_forked_from_it(client, world):
    r = debug_ssh(client)
    assert r.returncode == 0 and r.stdout == b"ok\n", r.stderr
    assert "helper: started" in r.stderr and "handed to process" in r.stderr, r.stderr
    (pid,) = helpers_of(client)
    d, sock = helper_dir(client), socket_path(client)
    assert stat.S_IMODE(d.stat().st_mode) == 0o700 and d.stat().st_uid == os.geteuid()
    assert stat.S_ISSOCK(sock.stat().st_mode) and stat.S_IMODE(sock.stat().st_mode) == 0o600
    # The helper holds nothing of ssh's: not the pipes (ssh would never see EOF), not the terminal.
    # (Looked at once it has loaded what first connections need: writing the cut EC2 model holds a pipe
    # of its own to the child that writes it, for as long as that takes.)
    assert wait_until(lambda: "first connections ready" in client.proxy("helper", "status").stdout.decode(), 15)
    fds = {os.readlink(f"/proc/{pid}/fd/{n}") for n in os.listdir(f"/proc/{pid}/fd")}
    assert not any(f.startswith("pipe:") for f in fds), fds
    r = debug_ssh(client)
    assert r.returncode == 0 and "helper: started" not in r.stderr and "handed to process" in r.stderr, r.stderr
    assert helpers_of(client) == {pid}
    status = client.proxy("helper", "status")
    assert f"helper {pid} (this build)" in status.stdout.decode() and "2 connections" in status.stdout.decode()


def test_killing_the_helper_mid_transfer_ends_no_tunnel(client, world):
    assert client.ssh("web-1", "true").returncode == 0  # the helper is up
    (helper,) = helpers_of(client)
    blob = os.urandom(8 << 20)
    p = subprocess.Popen(["ssh", "-F", str(client.config), "web-1", "sha256sum"], env=client.env,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdin.write(blob[: 4 << 20])
    p.stdin.flush()
    assert wait_until(lambda: len(tunnels(client)) == 1, 10), "no tunnel process"
    os.kill(helper, 9)
    assert wait_until(lambda: helper not in our_processes(), 5)
    out, err = p.communicate(blob[4 << 20:], timeout=60)
    assert p.returncode == 0, err
    assert out.split()[0].decode() == hashlib.sha256(blob).hexdigest()
    # The socket it left is stale: the next connection starts a new helper and goes through it.
    r = debug_ssh(client)
    assert r.returncode == 0 and "helper: started" in r.stderr, r.stderr
    assert helpers_of(client) and helper not in helpers_of(client)


def test_killed_tunnel_process_is_one_line_and_an_exit_code(client, world):
    p = subprocess.Popen([client.bed.eic_proxy_path(), "connect", "web-1"], env=client.env,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.stdout.read(4) == b"SSH-"  # the banner came through: the tunnel is up
    (child,) = tunnels(client)
    os.kill(child, 9)
    _, err = p.communicate(timeout=10)
    assert p.returncode == 70
    lines = err.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("eic-proxy: error: the tunnel's process") and "hint:" in lines[0]


def test_a_checkout_in_the_working_directory_does_not_shadow_the_helper(client, world, tmp_path):
    """``python -m`` puts the working directory first on sys.path: the helper must not import from it."""
    work = tmp_path / "work"
    (work / "eic_proxy" / "helper").mkdir(parents=True)
    (work / "eic_proxy" / "__init__.py").write_text("raise SystemExit('shadowed')\n")
    (work / "eic_proxy" / "helper" / "__init__.py").write_text("")
    p = subprocess.run(["ssh", "-F", str(client.config), "web-1", "echo ok"], cwd=work, capture_output=True, text=True,
                       env=dict(client.env, EIC_PROXY_DEBUG="1"), timeout=60)
    assert p.returncode == 0 and "handed to process" in p.stderr and "shadowed" not in p.stderr, p.stderr


def test_a_stale_socket_is_replaced(client, world):
    d, path = helper_dir(client), socket_path(client)
    address.make_private_dir(str(d))
    here = os.getcwd()
    os.chdir(d)
    try:
        s = socket.socket(socket.AF_UNIX)
        s.bind(path.name)  # bound, never listening, then closed: what a killed helper leaves
        s.close()
    finally:
        os.chdir(here)
    inode = path.stat().st_ino
    r = debug_ssh(client)
    assert r.returncode == 0 and "helper: started" in r.stderr, r.stderr
    assert path.stat().st_ino != inode, (inode, r.stderr)
    assert len(helpers_of(client)) == 1, described(helpers_of(client))


def test_a_helper_of_another_build_is_not_used(client, world):
    d, path = helper_dir(client), socket_path(client)
    address.make_private_dir(str(d))
    r, w = os.pipe()
    other = subprocess.Popen([sys.executable, "-m", "eic_proxy.helper.server", "--dir", str(d), "--socket", path.name,
                              "--ready-fd", str(w), "--identity", "0.0.1|another build"], pass_fds=(w,), env=client.env)
    os.close(w)
    try:
        assert os.read(r, 1) == b"1"
        r2 = debug_ssh(client)
        assert r2.returncode == 0 and r2.stdout == b"ok\n", r2.stderr
        assert "helper: not used: it is another build of eic-proxy" in r2.stderr, r2.stderr
        assert "tunnel open" in r2.stderr  # run by the client process itself
        status = client.proxy("helper", "status").stdout.decode()
        assert f"helper {other.pid}" in status and "0 connections" in status, status
    finally:
        os.close(r)
        other.terminate()
        other.wait(5)


def test_two_environments_at_once_never_share_credentials(client, world):
    """One helper, three concurrent connections with their own credentials: each URL is signed with
    its own key, and the one with a wrong secret fails alone, with its own error."""
    second = "AKIATESTBED000000002"
    client.bed.eice.secrets[second] = "second/secret"
    try:
        assert client.ssh("web-1", "true").returncode == 0  # the helper is up, started with the first environment
        envs = {"first": client.env,
                "second": dict(client.env, AWS_ACCESS_KEY_ID=second, AWS_SECRET_ACCESS_KEY="second/secret"),
                "wrong": dict(client.env, AWS_ACCESS_KEY_ID=second, AWS_SECRET_ACCESS_KEY="not/the/secret")}
        before = len(client.bed.eice.handshakes)
        procs = {name: subprocess.Popen(["ssh", "-F", str(client.config), "web-1", "cat"], env=env,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                 for name, env in envs.items()}
        results = {}
        for name, p in procs.items():
            out, err = p.communicate(name.encode(), timeout=60)
            results[name] = (p.returncode, out, err.decode())
        assert results["first"][:2] == (0, b"first") and results["second"][:2] == (0, b"second"), results
        assert results["wrong"][0] == 255 and "signature" in results["wrong"][2].lower(), results["wrong"]
        keys = sorted(h.params.get("X-Amz-Credential", "").split("/")[0] for h in client.bed.eice.handshakes[before:])
        assert keys == sorted([ACCESS_KEY, second, second]), keys
        assert len(helpers_of(client)) == 1
    finally:
        client.bed.eice.secrets.pop(second, None)


def test_an_idle_helper_leaves_and_removes_its_socket(client, world):
    env = dict(client.env, EIC_PROXY_HELPER_IDLE="1", EIC_PROXY_DEBUG="1")
    r = client.run(["ssh", "-F", str(client.config), "web-1", "true"], env=env)
    # The helper served it (so it listened on its socket); whether it is still there when ssh has
    # exited depends on how loaded the machine is (1 s of idleness).
    assert r.returncode == 0 and "handed to process" in r.stderr, r.stderr
    assert wait_until(lambda: not helpers_of(client), 10), "the helper did not leave"
    assert not socket_path(client).exists()


def test_the_socket_answers_its_own_user_only(client, world):
    assert client.ssh("web-1", "true").returncode == 0
    d, path = helper_dir(client), socket_path(client)
    # Open the way for another user (the 0700 directory is the first guard); the helper's own check
    # of the peer's uid is the second, and it must hold alone.
    opened = [p for p in [d, *d.parents] if p != Path("/")]
    modes = {p: p.stat().st_mode for p in opened}
    try:
        for p in opened:
            os.chmod(p, stat.S_IMODE(modes[p]) | 0o011)
        os.chmod(path, 0o666)
        payload = marshal.dumps({"op": "status"})
        request = len(payload).to_bytes(4, "big") + payload
        probe = ("import socket, sys\n"
                 "s = socket.socket(socket.AF_UNIX); s.settimeout(5); s.connect(sys.argv[1])\n"
                 "try:\n"
                 "    s.sendall(bytes.fromhex(sys.argv[2]))\n"
                 "    print('answered' if s.recv(100) else 'hung up')\n"
                 "except OSError:\n"
                 "    print('hung up')\n")
        r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c", probe,
                            path.name, request.hex()], capture_output=True, text=True, timeout=20, cwd=d)
        assert r.returncode == 0 and r.stdout.strip() == "hung up", (r.stdout, r.stderr)  # it connected, then was refused
        assert client.proxy("helper", "status").stdout.decode().startswith("helper "), "the same request, from us, is answered"
    finally:
        for p, mode in modes.items():
            os.chmod(p, stat.S_IMODE(mode))
    # And a directory that is not private is not used at all: the connection runs in-process.
    os.chmod(d, 0o755)
    try:
        r = debug_ssh(client)
        assert r.returncode == 0 and "helper: not used: its directory" in r.stderr, r.stderr
    finally:
        os.chmod(d, 0o700)


@pytest.mark.parametrize("how", ["flag", "env", "config"])
def test_switched_off_it_is_never_started(client, world, how):
    env, config = client.env, client.config
    if how == "flag":
        config = client.bed.ssh_config(client.home, "--no-helper")
    elif how == "env":
        env = dict(client.env, EIC_PROXY_HELPER="no")
    else:
        ini = client.home / ".config/eic-proxy/config.ini"
        ini.parent.mkdir(parents=True, exist_ok=True)
        ini.write_text("[host web-*]\nhelper = no\n")
    r = client.run(["ssh", "-F", str(config), "web-1", "echo ok"], env=dict(env, EIC_PROXY_DEBUG="1"))
    assert r.returncode == 0 and r.stdout == b"ok\n", r.stderr
    assert "helper:" not in r.stderr and not helpers_of(client)
    assert not socket_path(client).exists()


def test_errors_and_exit_codes_hold_through_the_helper(client, world):
    assert client.ssh("web-1", "true").returncode == 0
    r = client.proxy("connect", "no-such-host")
    assert r.returncode == 5 and r.stderr.count("eic-proxy: error:") == 1, r.stderr
    r = client.proxy("connect", "web-1", "0")
    assert r.returncode == 2 or r.returncode == 3, r.stderr
    assert len(helpers_of(client)) == 1


def test_stop_ends_the_helper_not_its_tunnels(client, world):
    assert client.ssh("web-1", "true").returncode == 0
    found = helpers_of(client)
    assert len(found) == 1, described(found)
    (pid,) = found
    p = subprocess.Popen(["ssh", "-F", str(client.config), "web-1", "cat"], env=client.env,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert wait_until(lambda: len(tunnels(client)) == 1, 10)
    r = client.proxy("helper", "stop")
    assert r.returncode == 0 and f"stopped helper {pid}" in r.stderr, r.stderr
    assert wait_until(lambda: not helpers_of(client), 5) and not socket_path(client).exists()
    out, err = p.communicate(b"still here", timeout=30)
    assert p.returncode == 0 and out == b"still here", err


def test_a_burst_of_first_connections_starts_one_helper(client, fleet):
    done: list[int] = []

    def one(i: int) -> None:
        done.append(client.ssh(f"app-{i % 10}", "true").returncode)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert done == [0] * 10
    assert len(helpers_of(client)) == 1 and comm(next(iter(helpers_of(client)))) == HELPER
    time.sleep(0)  # the lingering fixture checks the tunnels are gone


def test_after_a_first_connection_the_helper_loads_what_first_connections_need(client, world):
    """A connection that had to load botocore tells the helper, which loads it too once idle; the next
    first connection (caches cleared) is served by a child that finds it loaded."""
    env = dict(client.env, EIC_PROXY_DEBUG="1")
    assert client.ssh("web-1", "true").returncode == 0  # cold: nothing cached in this home
    assert wait_until(lambda: "first connections ready" in client.proxy("helper", "status").stdout.decode(), 15)
    assert client.proxy("cache", "clear").returncode == 0
    before = client.bed.aws.count("DescribeInstances")
    r = client.run(["ssh", "-F", str(client.config), "web-1", "echo ok"], env=env)
    assert r.returncode == 0 and r.stdout == b"ok\n" and "handed to process" in r.stderr, r.stderr
    assert client.bed.aws.count("DescribeInstances") > before  # it really looked the host up again


def test_a_helper_that_saw_only_warm_connections_stays_lean(client, world):
    assert client.ssh("web-1", "true").returncode == 0
    client.proxy("helper", "stop")
    assert wait_until(lambda: not helpers_of(client), 5)
    assert client.ssh("web-1", "true").returncode == 0  # warm: a new helper, and nothing to load for it
    assert "lean" in client.proxy("helper", "status").stdout.decode()


def test_a_helper_whose_code_changed_on_disk_leaves(client, world):
    """An upgrade changes the build's identity on disk: the running helper notices (it looks every few
    seconds while idle), removes its socket and exits; tunnels it forked are not its to end."""
    d = helper_dir(client)
    address.make_private_dir(str(d))
    r, w = os.pipe()
    old = subprocess.Popen([sys.executable, "-m", "eic_proxy.helper.server", "--dir", str(d), "--socket",
                            "helper-00000000.sock", "--ready-fd", str(w), "--identity", "0.0.1|before the upgrade"],
                           pass_fds=(w,), env=client.env, cwd=d)
    os.close(w)
    try:
        assert os.read(r, 1) == b"1" and (d / "helper-00000000.sock").exists()
        assert wait_until(lambda: old.poll() is not None, 15), "the outdated helper is still running"
        assert old.returncode == 0 and not (d / "helper-00000000.sock").exists()
    finally:
        os.close(r)
        if old.poll() is None:
            old.kill()


def test_the_tunnel_is_carried_by_a_process_that_did_not_prepare_it(client, world):
    """A connection is prepared (settings, lookups, key push: botocore on a first connection) by a
    short-lived process, which hands it over and exits: the tunnel's process only opens and pumps."""
    p = subprocess.Popen([client.bed.eic_proxy_path(), "connect", "web-1"], env=dict(client.env, EIC_PROXY_DEBUG="1"),
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert p.stdout.read(4) == b"SSH-"  # the tunnel is up
        (carrier,) = tunnels(client)
        assert wait_until(lambda: not [pid for pid in our_processes(str(client.home)) if comm(pid) == PREPARE], 5)
    finally:
        _, err = p.communicate(timeout=30)  # closes its stdin: ssh's end, the tunnel's end
    assert p.returncode == 0, err
    said = err.decode()
    assert "pushed key to" in said and "prepared by process" in said, said  # the push happened, elsewhere
    preparer = int(said.split("prepared by process ")[1].split(",")[0])
    assert preparer != carrier and f"handed to process {carrier}" in said


def test_a_warm_connection_is_prepared_in_place_and_one_that_needs_aws_by_a_preparer(client, world):
    """Everything cached (a burst): the tunnel's process prepares it itself, a fork less, importing no
    botocore. A connection that needs AWS (here: the caches cleared) is prepared by a preparer, as before."""
    assert client.ssh("web-1", "true").returncode == 0  # cold: looked up and pushed by a preparer
    client.proxy("helper", "stop")
    assert wait_until(lambda: not helpers_of(client), 5)
    env = dict(client.env, EIC_PROXY_DEBUG="1", PYTHONPROFILEIMPORTTIME="1")  # (the new helper's children too)
    r = client.run(["ssh", "-F", str(client.config), "web-1", "echo warm"], env=env)
    said = r.stderr
    assert r.returncode == 0 and r.stdout == b"warm\n", said[-3000:]
    assert "prepared in place" in said and "prepared by process" not in said, said[-3000:]
    imported = {line.rsplit("|", 1)[1].strip() for line in said.splitlines() if line.startswith("import time:")}
    assert "eic_proxy.helper.client" in imported and not {n for n in imported if n.split(".")[0] == "botocore"}
    assert client.proxy("cache", "clear").returncode == 0
    before = client.bed.aws.count("DescribeInstances")
    r = client.run(["ssh", "-F", str(client.config), "web-1", "echo looked up"], env=dict(client.env, EIC_PROXY_DEBUG="1"))
    assert r.returncode == 0 and "prepared by process" in r.stderr and "prepared in place" not in r.stderr, r.stderr
    assert client.bed.aws.count("DescribeInstances") == before + 1


def test_ssh_ending_while_the_connection_is_prepared_ends_every_process_of_it(client, world):
    """The first lookup never gets an answer (an EC2 API that accepts and stays silent); ssh gives up
    (ConnectTimeout bounds its wait for the banner) and hangs up on its ProxyCommand. The SIGHUP
    reaches the tunnel's process, which passes it to the preparer: nothing is left."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # connections complete in the backlog and never hear anything
    try:
        env = dict(client.env, AWS_ENDPOINT_URL_EC2=f"http://127.0.0.1:{silent.getsockname()[1]}")
        p = subprocess.Popen(["ssh", "-F", str(client.config), "-o", "ConnectTimeout=4", "web-1", "true"], env=env,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        mine = str(client.home)
        assert wait_until(lambda: any(comm(pid) == PREPARE for pid in our_processes(mine)), 4)
        _, err = p.communicate(timeout=20)
        assert p.returncode == 255 and b"timed out" in err, err
        assert wait_until(lambda: not [pid for pid in our_processes(mine) if comm(pid) in (TUNNEL, PREPARE)], 2)
    finally:
        silent.close()


def test_a_due_key_is_rotated_when_the_tunnel_it_served_ends(client, world):
    """The preparer pushes and notes the key's use in the name of the tunnel's process, so that at the
    tunnel's end its own use does not hold the rotation back."""
    assert client.ssh("web-1", "true").returncode == 0
    key = Path(client.proxy("key-path").stdout.decode().strip())
    pub = key.with_name(key.name + ".pub")
    old = pub.read_text()
    five_hours_ago = time.time() - 5 * 3600  # the default lifetime is 4 h
    os.utime(pub, (five_hours_ago, five_hours_ago))
    assert client.ssh("web-1", "true").returncode == 0
    # the rotation runs in the tunnel's process as it ends, which may be just after ssh returned
    assert wait_until(lambda: pub.read_text() != old, 20.0)


def test_a_preparer_killed_mid_lookup_is_one_line_and_an_exit_code(client, world):
    """The preparer dies by a signal before it answered (an OOM kill, say): the tunnel's process goes
    the same way, and the ProxyCommand says so in one line with exit 70; nothing is left behind."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    try:
        env = dict(client.env, AWS_ENDPOINT_URL_EC2=f"http://127.0.0.1:{silent.getsockname()[1]}")
        p = subprocess.Popen([client.bed.eic_proxy_path(), "connect", "web-1"], env=env,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        mine = str(client.home)
        assert wait_until(lambda: any(comm(pid) == PREPARE for pid in our_processes(mine)), 10)
        (preparer,) = [pid for pid in our_processes(mine) if comm(pid) == PREPARE]
        os.kill(preparer, 9)
        _, err = p.communicate(timeout=10)
    finally:
        silent.close()
    lines = err.decode().splitlines()
    assert p.returncode == 70 and len(lines) == 1 and lines[0].startswith("eic-proxy: error: "), err
    assert wait_until(lambda: not [pid for pid in our_processes(mine) if comm(pid) in (TUNNEL, PREPARE)], 2)

"""Several tunnels in one carrier process (helper/carrier.py), and what each keeps of its own: its data,
its signals from ssh, its errors on its own stderr, its exit code — and its environment, which decides
whether two tunnels may share a process at all."""
from __future__ import annotations

import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import BlobServer, wait_until
from tests.testbed.processes import TUNNEL, comm, our_processes

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


@pytest.fixture
def echo(world):
    server = BlobServer(world.web.ip, echo=True)
    yield server
    server.close()


def carriers(client) -> set[int]:
    return {pid for pid in our_processes(str(client.home)) if comm(pid) == TUNNEL}


def the_carrier(client, tunnels: list[Tunnel]) -> int:
    """The one process carrying the tunnels, once the processes that handed theirs over have exited (on a
    loaded machine one may still be on its way out when its tunnel already answers through the carrier)."""
    if not wait_until(lambda: len(carriers(client)) == 1, 10):
        said = "\n---\n".join(t.stderr()[-3000:] for t in tunnels)  # (-v: why a hand-over did not happen)
        pytest.fail(f"a hand-over did not happen (carriers {sorted(carriers(client))}); the tunnels said:\n{said}")
    (carrier,) = carriers(client)
    return carrier


class Tunnel:
    """``eic-proxy connect`` to the echo server, as ssh runs it: through the helper, a waiter left."""

    def __init__(self, client, world, port: int, env: dict | None = None) -> None:
        # -v, and stderr in a file that can be read while the tunnel runs: what a failed hand-over said
        self.err = Path(tempfile.mkstemp(prefix="tunnel-", suffix=".err", dir=client.home)[1])
        with open(self.err, "wb") as err:
            self.proc = subprocess.Popen([client.bed.eic_proxy_path(), "connect", world.web.instance_id, str(port),
                                          "--no-push"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                                         env=dict(env or client.env, EIC_PROXY_DEBUG="1"))

    def stderr(self) -> str:
        return self.err.read_text(errors="replace")

    def echoes(self, text: bytes) -> bool:
        self.proc.stdin.write(text)
        self.proc.stdin.flush()
        return self.proc.stdout.read(len(text)) == text

    def end(self, sig: int, within: float = 1.5) -> tuple[int, str]:
        start = time.monotonic()
        self.proc.send_signal(sig)
        code = self.proc.wait(5)
        assert time.monotonic() - start < within
        return code, self.stderr()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


def one_after_another(client, world, port: int, count: int, env: dict | None = None) -> list[Tunnel]:
    """Open tunnels one after the other (tunnels started at the same moment may each start a carrier)."""
    tunnels: list[Tunnel] = []
    try:
        for n in range(count):
            tunnels.append(Tunnel(client, world, port, env))
            assert tunnels[-1].echoes(b"tunnel %d\n" % n)
    except BaseException:
        for t in tunnels:
            t.kill()
        raise
    return tunnels


def test_a_burst_of_tunnels_fills_one_carrier_before_founding_another(client, world, echo):
    """Twelve tunnels started at the same moment beside a carrier with one tunnel (their plans ready
    together, prepared in place): nine fill it, one founds a second carrier, the last two fill that —
    not a carrier each (one founds at a time: carrier.founding)."""
    tunnels = [Tunnel(client, world, echo.port)]
    try:
        assert tunnels[0].echoes(b"first\n")
        tunnels += [Tunnel(client, world, echo.port) for _ in range(12)]
        for n, t in enumerate(tunnels[1:]):
            assert t.echoes(b"burst %d\n" % n)
        said = "\n---\n".join(t.stderr()[-800:] for t in tunnels)
        assert wait_until(lambda: len(carriers(client)) == 2, 10), f"carriers {sorted(carriers(client))}:\n{said}"
        assert sum("taken by process" in t.stderr() for t in tunnels) == 11, said
    finally:
        for t in tunnels:
            t.kill()


def test_tunnels_of_one_environment_share_a_process_and_end_on_their_own(client, world, echo):
    tunnels = one_after_another(client, world, echo.port, 3)
    try:
        carrier = the_carrier(client, tunnels)  # three tunnels, one process
        # ssh's signal to one tunnel's ProxyCommand ends that tunnel only, with its own exit code.
        code, err = tunnels[1].end(signal.SIGTERM)
        assert code == 143 and "Traceback" not in err, err
        assert tunnels[0].echoes(b"still here\n") and tunnels[2].echoes(b"me too\n")
        assert carriers(client) == {carrier}
        code, err = tunnels[2].end(signal.SIGINT)
        assert code == 130, err
        # The carrier's own tunnel ends; the process goes with its last tunnel.
        assert tunnels[0].echoes(b"last\n")
        code, err = tunnels[0].end(signal.SIGHUP)
        assert code == 0, err
        assert wait_until(lambda: not carriers(client), 5)
    finally:
        for t in tunnels:
            t.kill()


def test_the_carriers_own_tunnel_ending_leaves_the_others_running(client, world, echo):
    first, second = one_after_another(client, world, echo.port, 2)
    try:
        carrier = the_carrier(client, [first, second])
        code, _ = first.end(signal.SIGHUP)
        assert code == 0
        assert second.echoes(b"on\n") and carriers(client) == {carrier}
        second.proc.stdin.close()  # ssh's EOF: the tunnel ends, and the process with it
        assert second.proc.wait(10) == 0
        assert wait_until(lambda: not carriers(client), 5)
    finally:
        first.kill()
        second.kill()


def test_an_endpoint_fault_reaches_only_its_own_tunnel_and_its_own_stderr(client, world, echo):
    first = Tunnel(client, world, echo.port)
    try:
        assert first.echoes(b"a\n")
        client.bed.eice.inject("then-close:1011:Internal error")
        second = Tunnel(client, world, echo.port)
        second.proc.stdin.write(b"b\n")
        second.proc.stdin.flush()
        assert second.proc.wait(20) != 0
        err = second.stderr()
        assert err.count("eic-proxy: error:") == 1 and "1011" in err, err
        the_carrier(client, [first, second])
        assert first.echoes(b"unharmed\n")
        code, err = first.end(signal.SIGTERM)
        assert code == 143 and "eic-proxy: error:" not in err and "1011" not in err, err
    finally:
        first.kill()


def test_killing_the_waiter_outright_ends_its_tunnel(client, world, echo):
    """ssh (or Windows' TerminateProcess) may kill the ProxyCommand without a signal it can pass on:
    the end of its socket is a hang-up for that tunnel alone."""
    first, second = one_after_another(client, world, echo.port, 2)
    try:
        carrier = the_carrier(client, [first, second])
        second.proc.kill()
        second.proc.wait(5)
        assert first.echoes(b"alone\n")
        code, _ = first.end(signal.SIGHUP)
        assert code == 0
        assert wait_until(lambda: not carriers(client) and carrier not in our_processes(), 5)
    finally:
        first.kill()
        second.kill()


def test_other_environments_get_other_processes(client, world, echo):
    mine = Tunnel(client, world, echo.port)
    assert mine.echoes(b"a\n")
    theirs = Tunnel(client, world, echo.port, env=dict(client.env, SOME_SETTING="other"))
    try:
        assert theirs.echoes(b"b\n")
        assert len(carriers(client)) == 2
    finally:
        mine.kill()
        theirs.kill()


def test_stderr_of_a_taken_tunnel_is_its_own(client, world, echo):
    """Logging of a tunnel in a carrier goes to its own ssh's stderr (-v here), never the carrier's."""
    env = dict(client.env, EIC_PROXY_DEBUG="1")
    first, second = one_after_another(client, world, echo.port, 2, env)
    try:
        the_carrier(client, [first, second])
        code, second_err = second.end(signal.SIGTERM)
        code, first_err = first.end(signal.SIGTERM)
        assert second_err.count("tunnel open to") == 1 and first_err.count("tunnel open to") == 1, (first_err, second_err)
        assert "taken by process" in second_err and "taken by process" not in first_err, second_err
        # -v says why the first carries its own tunnel, and that it takes the next ones
        assert "no carrier of this environment" in first_err and "carries the next tunnels" in first_err, first_err
    finally:
        first.kill()
        second.kill()


def test_a_signal_to_the_carriers_process_ends_every_tunnel_in_it(client, world, echo):
    """Not ssh's (those come as letters): `pkill eicproxy-tunnel`, a shutdown. Each tunnel closes as its
    own process would have, with its own exit code."""
    import os

    tunnels = one_after_another(client, world, echo.port, 2)
    try:
        carrier = the_carrier(client, tunnels)
        os.kill(carrier, signal.SIGTERM)
        for t in tunnels:
            assert t.proc.wait(5) == 143
            assert "Traceback" not in t.stderr()
        assert wait_until(lambda: not carriers(client), 5)
    finally:
        for t in tunnels:
            t.kill()

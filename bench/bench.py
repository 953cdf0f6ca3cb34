"""eic-proxy benchmarks on the local test bed: throughput, CPU, memory, connect latency, API calls, fan-out.

    sudo .venv/bin/python bench/bench.py [--size-mib 512] [--runs 20] [--skip-throughput]

Every figure is measured beside its baseline in the same run: (b) ssh with ``ProxyCommand nc %h %p``
straight to the same sshd, and (c) a minimal reference relay (bench/ref_relay.py) through the same
fake EICE. Ratios are the figures of merit; absolute numbers depend on the machine. Prints a
Markdown table (paste into bench/RESULTS.md).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import platform
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.testbed.bed import ACCESS_KEY, SECRET_KEY, Testbed  # noqa: E402
from tests.testbed.processes import HELPER, TUNNEL, comm, our_processes  # noqa: E402

MIB = 1024 * 1024
TICK = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


def ours() -> list[int]:
    return list(our_processes())


def memory_kib(pid: int) -> tuple[int, int]:
    """(RSS, PSS) in KiB: PSS shares each page among the processes that map it, so forked children that
    share the helper's pages are counted once in a sum; RSS counts shared pages in every process."""
    try:
        rss = pss = 0
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Rss:"):
                rss = int(line.split()[1])
            elif line.startswith("Pss:"):
                pss = int(line.split()[1])
        return rss, pss
    except (OSError, ValueError, IndexError):
        return 0, 0


def memory_by_kind(pid: int) -> dict[str, tuple[int, int]]:
    """{kind: (PSS, private dirty)} in KiB over the process's mappings: the Python heap and malloc's
    (``[heap]``, anonymous: pymalloc arenas, malloc arenas, thread stacks), ``[stack]``, libraries and
    other files. Says where a tunnel's own memory goes (issue 29: "per page kind")."""
    out: dict[str, list[int]] = {}
    kind = "anonymous"
    try:
        lines = Path(f"/proc/{pid}/smaps").read_text().splitlines()
    except OSError:
        return {}
    for line in lines:
        head = line.split()
        if head and "-" in head[0] and len(head) >= 5 and not head[0].endswith(":"):
            path = head[5] if len(head) > 5 else ""
            kind = (path if path.startswith("[") else "anonymous" if not path
                    else "libraries" if ".so" in path else "files")
        elif head[:1] == ["Pss:"]:
            out.setdefault(kind, [0, 0])[0] += int(head[1])
        elif head[:1] == ["Private_Dirty:"]:
            out.setdefault(kind, [0, 0])[1] += int(head[1])
    return {k: (v[0], v[1]) for k, v in out.items()}


class TunnelSampler:
    """CPU and peak RSS of the helper's tunnel processes, which are nobody's child we could wait for:
    sampled every 10 ms while a transfer runs (CPU is exact to one sample). Only the helper's children
    are read (/proc/PID/task/PID/children), so the sampling itself costs next to nothing."""

    def __init__(self) -> None:
        import threading

        self.cpu: dict[int, float] = {}
        self.rss: dict[int, int] = {}
        self.helper = next((pid for pid in ours() if comm(pid) == HELPER), None)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "TunnelSampler":
        if self.helper is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        children = Path(f"/proc/{self.helper}/task/{self.helper}/children")
        while not self._stop.wait(0.01):
            try:
                pids = [int(p) for p in children.read_text().split()]
            except (OSError, ValueError):
                return
            for pid in pids:
                try:
                    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                    pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
                except (OSError, ValueError, IndexError):
                    continue
                # utime + stime, and cutime + cstime: the preparer it forked and reaped (lifecycle/handover.py)
                self.cpu[pid] = sum(int(f) for f in fields[11:15]) / TICK
                self.rss[pid] = max(self.rss.get(pid, 0), pages * PAGE_KIB)

    def totals(self) -> tuple[float, int]:
        return sum(self.cpu.values()), max(self.rss.values(), default=0)


def installed(out: Path) -> str:
    """eic-proxy installed from a wheel into a venv of its own, as users have it: an editable install
    puts a path finder in front of every import (~12 ms per process start), which no user pays.
    The venv reaches the dependencies of .venv through a .pth line (paths only, no code run)."""
    import shutil
    import site

    shutil.rmtree(out, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out / "dist"), str(REPO)],
                   check=True, capture_output=True)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(out / "venv")], check=True)
    wheel = next((out / "dist").glob("eic_proxy-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "--python", str(out / "venv/bin/python"), "install", "-q",
                    "--no-deps", str(wheel)], check=True, capture_output=True)
    target = Path(subprocess.run([str(out / "venv/bin/python"), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                                 check=True, capture_output=True, text=True).stdout.strip())
    (target / "zz-deps.pth").write_text(site.getsitepackages()[0] + "\n")
    subprocess.run([str(out / "venv/bin/python"), "-m", "compileall", "-q", str(target / "eic_proxy")], check=True)
    return str(out / "venv/bin/eic-proxy")


def launcher() -> str:
    """The launcher ``eic-proxy ssh-config`` writes into Host blocks, in the bench's install."""
    return str(next((REPO / "bench/out/install/venv/lib").glob("python*/site-packages/eic_proxy_connect.py")))


class Bench:
    def __init__(self, size_mib: int, runs: int, reps: int = 3) -> None:
        self.size_mib = size_mib
        self.runs = runs
        self.reps = reps
        self.exe = installed(REPO / "bench/out/install")
        self.bed = Testbed().start()
        self.inst = self.bed.default_world()
        self.fleet = [self.bed.add_instance(f"fan-{i}", "main-a", 100 + i) for i in range(10)]
        self.home = Path(tempfile.mkdtemp(prefix="eic-bench-"))
        self.env = self.bed.env(self.home)
        self.stats = self.home / "rusage"
        self.ref_url = self.home / "ref-url"
        self.configs = {
            "eic-proxy": self._config("eic", f"{sys.executable} {REPO}/bench/rusage.py {self.stats} "
                                             f"{self.exe} connect %h %p %r"),
            "nc baseline": self._config("nc", f"nc {self.inst.ip} %p"),
            "eic-proxy direct": self._config("eicd", f"{self.exe} connect %h %p %r"),
            # as `eic-proxy ssh-config` writes it (sshblock.fast_launcher): python -S, then the launcher
            "eic-proxy launcher": self._config("eicl", f"{Path(self.exe).parent / 'python'} -S {launcher()} connect %h %p %r"),
            "eic-proxy in-process": self._config("eicn", f"{self.exe} connect --no-helper %h %p %r"),
            "reference relay": self._config("ref", f"{sys.executable} {REPO}/bench/rusage.py {self.stats} "
                                                   f"{sys.executable} {REPO}/bench/ref_relay.py"),
            "reference relay direct": self._config("refd", f"{sys.executable} {REPO}/bench/ref_relay.py"),
        }
        self.rows: list[tuple[str, str, str]] = []

    def _config(self, name: str, proxy: str) -> Path:
        base = self.bed.ssh_config(self.home).read_text()
        lines = [line for line in base.splitlines() if "ProxyCommand" not in line]
        lines.insert(2, f"    ProxyCommand {proxy}")
        path = self.home / f"ssh_config_{name}"
        path.write_text("\n".join(lines) + "\n")
        return path

    def close(self) -> None:
        stop_helpers(self.env)
        self.bed.stop()
        self.bed.cleanup()

    # ---- helpers ---------------------------------------------------------------------------------
    def presign(self) -> None:
        """A fresh URL for the reference relay (the relay itself does no AWS work)."""
        from botocore.credentials import ReadOnlyCredentials

        from eic_proxy.tunnel.signer import presign_url

        ep = next(iter(self.bed.aws.endpoints.values()))
        url = presign_url(ReadOnlyCredentials(ACCESS_KEY, SECRET_KEY, None), self.bed.region, ep["DnsName"],
                          ep["InstanceConnectEndpointId"], 22, self.inst.ip, None)
        self.ref_url.write_text(url)

    def run(self, which: str, argv: list[str], stdin=None, stdout=subprocess.DEVNULL) -> float:
        if which.startswith("reference relay"):
            self.presign()
        env = dict(self.env, REF_URL_FILE=str(self.ref_url))
        try:
            self.stats.unlink()
        except FileNotFoundError:
            pass
        t0 = time.perf_counter()
        p = subprocess.run(argv, stdin=stdin if stdin is not None else subprocess.DEVNULL, stdout=stdout,
                           stderr=subprocess.PIPE, env=env, timeout=900)
        dt = time.perf_counter() - t0
        if p.returncode != 0:
            raise RuntimeError(f"{which}: {' '.join(argv[:6])} failed: {p.stderr.decode()[-400:]}")
        return dt

    def rusage(self) -> tuple[float, int]:
        """CPU seconds and peak RSS (KiB) of the last wrapped ProxyCommand."""
        try:
            cpu, rss = self.stats.read_text().split()
            return float(cpu), int(rss)
        except (OSError, ValueError):
            return float("nan"), 0

    # ---- measurements ----------------------------------------------------------------------------
    def throughput(self) -> None:
        """Each case runs eic-proxy, nc and the reference relay back to back, ``reps`` times; medians.

        Interleaving keeps slow drifts of a shared 2-core VM (page cache, other tenants) out of the ratios.
        """
        src = self.home / "payload.bin"
        with open(src, "wb") as fh:
            for _ in range(self.size_mib):
                fh.write(os.urandom(MIB))
        ssh_remote = "/tmp/eic-bench-payload.bin"
        whos = ("eic-proxy", "nc baseline", "reference relay")
        samples: dict[tuple[str, str], list[tuple[float, float, int]]] = {}
        self.run("eic-proxy", ["ssh", "-F", str(self.configs["eic-proxy"]), "web-1", "true"])  # pushes the key nc uses
        self.run("nc baseline", ["scp", "-F", str(self.configs["nc baseline"]), str(src), f"web-1:{ssh_remote}"])
        for which in whos:  # warm: first connections (key, resolution, pushes) are not part of the data path
            self.run(which, ["ssh", "-F", str(self.configs[which]), "web-1", "true"])

        def cases(cfg: Path, which: str) -> dict:
            ssh = ["ssh", "-F", str(cfg), "web-1"]
            return {
                "ssh up (cat >/dev/null)": lambda: self.run(which, ssh + ["cat > /dev/null"], stdin=open(src, "rb")),
                "ssh down (cat f)": lambda: self.run(which, ssh + [f"cat {ssh_remote}"]),
                "scp up": lambda: self.run(which, ["scp", "-F", str(cfg), str(src), "web-1:/tmp/eic-bench-up.bin"]),
                "scp down": lambda: self.run(which, ["scp", "-F", str(cfg), f"web-1:{ssh_remote}",
                                                     str(self.home / "back.bin")]),
                "rsync up": lambda: self.run(which, ["rsync", "-e", f"ssh -F {cfg}", "--whole-file", str(src),
                                                     f"web-1:/tmp/eic-bench-rsync-{which[:3]}.bin"]),
            }

        names = list(cases(self.configs["nc baseline"], "nc baseline"))
        for case in names:
            for _ in range(self.reps):
                for which in whos:
                    with TunnelSampler() as tunnels:
                        dt = cases(self.configs[which], which)[case]()
                    cpu, rss = self.rusage()  # the ProxyCommand's own: all of it in-process, the thin client's with a helper
                    t_cpu, t_rss = tunnels.totals()
                    samples.setdefault((which, case), []).append((self.size_mib / dt, cpu + t_cpu, max(rss, t_rss)))

        def med(which: str, case: str) -> tuple[float, float, int]:
            xs = samples[(which, case)]
            return (statistics.median(x[0] for x in xs), statistics.median(x[1] for x in xs), max(x[2] for x in xs))

        for case in names:
            e, n, r = (med(w, case) for w in whos)
            self.rows.append((f"throughput {case}, MiB/s",
                              f"{e[0]:.0f} (nc {n[0]:.0f}, ref {r[0]:.0f})",
                              f"{e[0] / r[0]:.2f}x ref, {e[0] / n[0]:.2f}x nc"))
        for case in ["ssh up (cat >/dev/null)", "ssh down (cat f)"]:
            e, r = med("eic-proxy", case), med("reference relay", case)
            gib = self.size_mib / 1024
            self.rows.append((f"CPU s/GiB, {case}", f"{e[1] / gib:.2f} (ref {r[1] / gib:.2f})",
                              f"{(e[1] / r[1]) if r[1] else float('nan'):.2f}x ref"))
            self.rows.append((f"peak RSS MiB, {case}", f"{e[2] / 1024:.1f} (ref {r[2] / 1024:.1f})",
                              "target <= 60"))

    def latency(self) -> None:
        cfg = self.configs["eic-proxy direct"]  # no rusage wrapper: it would add a Python start-up
        nc = self.configs["nc baseline"]
        ssh_true = ["ssh", "-F", str(cfg), "web-1", "true"]

        cold_calls: dict[str, list[float]] = {}

        def cold() -> float:
            wait_ready(self.exe, self.env)  # after one first connection, the helper loads what they need
            subprocess.run([self.exe, "cache", "clear"], env=self.env, capture_output=True)
            for d in ("pushes",):
                subprocess.run(["rm", "-rf", str(self.home / ".cache/eic-proxy" / d)])
            seen, started = len(self.bed.aws.calls), time.time()
            took = self.run("eic-proxy", ssh_true)
            for call in self.bed.aws.calls[seen:]:  # when each API call reached AWS, from ssh's start
                cold_calls.setdefault(call.action, []).append(call.at - started)
            return took

        def first() -> float:
            stop_helpers(self.env)
            subprocess.run([self.exe, "cache", "clear"], env=self.env, capture_output=True)
            for d in ("pushes",):
                subprocess.run(["rm", "-rf", str(self.home / ".cache/eic-proxy" / d)])
            return self.run("eic-proxy", ssh_true)

        # Each measurement is interleaved with nc runs and compared with the nc runs of its own phase:
        # a shared 2-core VM drifts by more than the differences measured here.
        nc_ssh = ["ssh", "-F", str(nc), "web-1", "true"]
        first_t, nc_first = [], []
        for _ in range(self.runs):
            first_t.append(first())
            nc_first.append(self.run("nc baseline", nc_ssh))
        cold_t, nc_cold = [], []
        for _ in range(self.runs):
            cold_t.append(cold())
            nc_cold.append(self.run("nc baseline", nc_ssh))
        self.bed.aws.reset()
        launched = ["ssh", "-F", str(self.configs["eic-proxy launcher"]), "web-1", "true"]
        inproc = ["ssh", "-F", str(self.configs["eic-proxy in-process"]), "web-1", "true"]
        refd = ["ssh", "-F", str(self.configs["reference relay direct"]), "web-1", "true"]
        warm_t, launched_t, inproc_t, nc_t, ref_t = [], [], [], [], []
        for _ in range(self.runs):
            nc_t.append(self.run("nc baseline", nc_ssh))
            launched_t.append(self.run("eic-proxy", launched))
            warm_t.append(self.run("eic-proxy", ssh_true))
            ref_t.append(self.run("reference relay direct", refd))
            inproc_t.append(self.run("eic-proxy", inproc))
        warm_calls = self.bed.aws.describe_calls() / self.runs
        warm_push = self.bed.aws.count("SendSSHPublicKey")

        def fmt(xs: list[float]) -> str:
            qs = statistics.quantiles(xs, n=10)
            return f"{statistics.median(xs) * 1000:.0f} ms (p10 {qs[0] * 1000:.0f}, p90 {qs[-1] * 1000:.0f})"

        self.rows.append(("ssh host true, nc baseline", fmt(nc_t), "1.00x"))
        self.rows.append(("ssh host true, eic-proxy warm (helper), the ssh-config block's launcher", fmt(launched_t),
                          f"{statistics.median(launched_t) / statistics.median(nc_t):.2f}x nc (target <= 1.1)"))
        self.rows.append(("ssh host true, eic-proxy warm (helper), `eic-proxy connect` (pip's wrapper)", fmt(warm_t),
                          f"{statistics.median(warm_t) / statistics.median(nc_t):.2f}x nc"))
        self.rows.append(("ssh host true, eic-proxy warm, --no-helper", fmt(inproc_t),
                          f"{statistics.median(inproc_t) / statistics.median(nc_t):.2f}x nc"))
        self.rows.append(("ssh host true, reference relay (floor)", fmt(ref_t),
                          f"{statistics.median(ref_t) / statistics.median(nc_t):.2f}x nc; eic-proxy warm is "
                          f"{(statistics.median(warm_t) - statistics.median(ref_t)) * 1000:+.0f} ms from it"))
        self.rows.append(("ssh host true, eic-proxy cold (caches cleared, helper up)", fmt(cold_t),
                          f"{statistics.median(cold_t) / statistics.median(nc_cold):.2f}x nc (nc {fmt(nc_cold)}; "
                          "target <= 1.5)"))
        self.rows.append(("cold: API calls reach AWS at, from ssh's start (median)",
                          ", ".join(f"{a} +{statistics.median(t) * 1000:.0f} ms" for a, t in
                                    sorted(cold_calls.items(), key=lambda kv: statistics.median(kv[1]))), ""))
        self.rows.append(("ssh host true, first ever (no helper, caches cleared)", fmt(first_t),
                          f"{statistics.median(first_t) / statistics.median(nc_first):.2f}x nc (nc {fmt(nc_first)})"))
        self.rows.append(("warm: Describe calls / connection", f"{warm_calls:.2f}", "target 0"))
        self.rows.append((f"warm: pushes in {self.runs} connections", str(warm_push), "<= 1 per 45 s window"))

    def cpu(self) -> None:
        """CPU per warm ``ssh host true``, the whole machine's (ssh, sshd, our processes and the bed's fake
        endpoint), each kind of ProxyCommand in a block of its own, blocks alternating. On a 2-core VM
        that ssh and sshd already keep busy, CPU is what a connection's latency costs under load; the
        bed's own share (this process: the fake endpoint and AWS) is said apart."""
        import resource

        def busy() -> int:
            with open("/proc/stat") as fh:
                v = [int(x) for x in fh.readline().split()[1:]]
            return sum(v) - v[3] - v[4]  # all but idle and iowait, in clock ticks

        per: dict[str, list[tuple[float, float]]] = {}
        names = ("nc baseline", "eic-proxy launcher", "reference relay direct")
        self.run("eic-proxy", ["ssh", "-F", str(self.configs["eic-proxy launcher"]), "web-1", "true"])  # the key nc uses
        for _ in range(3):
            for name in names:
                argv = ["ssh", "-F", str(self.configs[name]), "web-1", "true"]
                self.run(name, argv)  # not counted: the first after another kind
                r0, t0 = resource.getrusage(resource.RUSAGE_SELF), busy()
                for _ in range(self.runs):
                    self.run(name, argv)
                t1, r1 = busy(), resource.getrusage(resource.RUSAGE_SELF)
                bed = r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime
                per.setdefault(name, []).append(((t1 - t0) / TICK / self.runs, bed / self.runs))
        med = {name: (statistics.median(a for a, _ in xs) * 1000, statistics.median(b for _, b in xs) * 1000)
               for name, xs in per.items()}
        nc_ms = med["nc baseline"][0]
        ours_ms, bed_ms = med["eic-proxy launcher"]
        self.rows.append(("CPU per warm ssh host true, whole machine (ssh + sshd + ProxyCommand + the bed's endpoint)",
                          f"nc {nc_ms:.0f} ms; eic-proxy {ours_ms:.0f} ms, of which the fake endpoint {bed_ms:.0f} ms; "
                          f"reference relay {med['reference relay direct'][0]:.0f} ms",
                          f"eic-proxy's own processes ~{ours_ms - nc_ms - bed_ms:.0f} ms per connection"))

    def handshake(self) -> None:
        """Process start → WebSocket handshake at the endpoint, vs python -c pass + one TLS handshake.

        The reference relay (python + websocket-client, URL signed beforehand, nothing else) is
        measured the same way: it is the floor for any Python client built on websocket-client.
        """
        ep = next(iter(self.bed.aws.endpoints.values()))
        addr = ep["DnsName"]
        base, ours, ours_launched, ref = [], [], [], []
        ctx = ssl.create_default_context(cafile=str(self.bed.ca.pem_path))

        def until_handshake(argv: list[str], env: dict) -> float:
            seen = len(self.bed.eice.handshakes)
            t0 = time.time()
            p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                 env=env)
            while len(self.bed.eice.handshakes) == seen and p.poll() is None:
                time.sleep(0.001)
            at = self.bed.eice.handshakes[-1].at - t0
            p.stdin.close()
            p.wait(10)
            return at

        for _ in range(self.runs):
            t0 = time.time()
            subprocess.run([sys.executable, "-c", "pass"])
            with socket.create_connection((addr, 443)) as s, ctx.wrap_socket(s, server_hostname=addr):
                pass
            base.append(time.time() - t0)
            ours.append(until_handshake([self.exe, "connect", "web-1"], self.env))
            ours_launched.append(until_handshake([str(Path(self.exe).parent / "python"), "-S", launcher(), "connect", "web-1"],
                                                 self.env))
            self.presign()
            ref.append(until_handshake([sys.executable, f"{REPO}/bench/ref_relay.py"],
                                       dict(self.env, REF_URL_FILE=str(self.ref_url))))
        m_base, m_ours, m_ref = statistics.median(base), statistics.median(ours), statistics.median(ref)
        m_launched = statistics.median(ours_launched)
        self.rows.append(("start → handshake, warm, the ssh-config block's launcher",
                          f"{m_launched * 1000:.0f} ms (python -c pass + TLS {m_base * 1000:.0f} ms)",
                          f"{m_launched / m_base:.2f}x (target <= 1.25)"))
        self.rows.append(("start → handshake, warm, `eic-proxy connect`", f"{m_ours * 1000:.0f} ms",
                          f"{m_ours / m_base:.2f}x"))
        self.rows.append(("start → handshake, reference relay (floor)", f"{m_ref * 1000:.0f} ms",
                          f"{m_ref / m_base:.2f}x python+TLS; eic-proxy is {m_ours / m_ref:.2f}x this floor"))

    def fanout(self) -> None:
        hosts = [f"fan-{i}" for i in range(10)] * 5
        cfg = self.configs["eic-proxy direct"]
        self.bed.aws.reset()
        t0 = time.perf_counter()
        with ThreadPoolExecutor(50) as pool:
            list(pool.map(lambda h: self.run("eic-proxy", ["ssh", "-F", str(cfg), h, "true"]), hosts))
        wall = time.perf_counter() - t0
        pushes = self.bed.aws.count("SendSSHPublicKey")
        nc_cfg = self.home / "ssh_config_nc_fan"
        nc_cfg.write_text(self.configs["nc baseline"].read_text().replace(f"nc {self.inst.ip} %p", "nc %h %p"))
        ips = [inst.ip for inst in self.fleet] * 5
        t0 = time.perf_counter()
        with ThreadPoolExecutor(50) as pool:
            list(pool.map(lambda ip: self.run("nc", ["ssh", "-F", str(nc_cfg), ip, "true"]), ips))
        nc_wall = time.perf_counter() - t0
        self.rows.append(("fan-out 10 hosts x 5, wall", f"{wall:.2f} s (nc {nc_wall:.2f} s, {pushes} pushes)",
                          f"{wall / nc_wall:.2f}x nc"))

    def memory(self, tunnels: int = 20) -> None:
        """All eic-proxy processes with ``tunnels`` concurrent open tunnels (the endpoint's cap): through a
        lean helper (only warm connections since it started), through one that has loaded botocore after
        a first connection, and in-process. Each tunnel runs ``cat`` on the instance and echoes a line
        back through itself, so all are open at the moment of measurement. PSS shares each page among
        the processes that map it: the sum is the memory these processes really take."""
        cases = (("helper, lean", "eic-proxy direct", False), ("helper after a first connection", "eic-proxy direct", True),
                 ("--no-helper", "eic-proxy in-process", False))
        for label, name, cold_first in cases:
            stop_helpers(self.env)
            if cold_first:
                subprocess.run([self.exe, "cache", "clear"], env=self.env, capture_output=True)
            self.run("eic-proxy", ["ssh", "-F", str(self.configs[name]), "web-1", "true"])  # key, pushes, helper
            if cold_first:
                wait_ready(self.exe, self.env)
            errs = [tempfile.TemporaryFile() for _ in range(tunnels)]
            procs = [subprocess.Popen(["ssh", "-F", str(self.configs[name]), "web-1", "cat"], env=self.env,
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err) for err in errs]
            try:
                for p, err in zip(procs, errs):  # each answers through its own tunnel: all of them are open now
                    try:
                        p.stdin.write(b"x\n")
                        p.stdin.flush()
                        answered = p.stdout.read(2) == b"x\n"
                    except BrokenPipeError:
                        answered = False
                    if not answered:
                        err.seek(0)
                        raise RuntimeError(f"a tunnel of the {label} case did not answer (exit {p.wait(5)}): "
                                           f"{err.read().decode(errors='replace')[-600:]}")
                pids = ours()
                rss = pss = 0
                for pid in pids:
                    r, q = memory_kib(pid)
                    rss, pss = rss + r, pss + q
                if label.startswith("helper after"):
                    self._memory_kinds(pids, tunnels)
            finally:
                for p in procs:
                    with contextlib.suppress(BrokenPipeError):
                        p.stdin.close()
                for p in procs:
                    p.wait(30)
                for err in errs:
                    err.close()
            self.rows.append((f"memory, {tunnels} open tunnels, {label}: all eic-proxy processes",
                              f"PSS {pss / 1024:.0f} MiB (RSS summed {rss / 1024:.0f} MiB, {len(pids)} processes)",
                              "target <= 80 MiB" if label.startswith("helper") else "today's path"))

    def _memory_kinds(self, pids: dict, tunnels: int) -> None:
        """Rows: where the tunnel processes' private memory goes, by kind, per open tunnel (a carrier
        process holds up to 10 tunnels: helper/carrier.py)."""
        carriers = [pid for pid in pids if comm(pid) == TUNNEL]
        total: dict[str, list[int]] = {}
        for pid in carriers:
            for kind, (pss, dirty) in memory_by_kind(pid).items():
                acc = total.setdefault(kind, [0, 0])
                acc[0] += pss
                acc[1] += dirty
        if not carriers:
            return
        parts = sorted(total.items(), key=lambda kv: -kv[1][1])
        text = ", ".join(f"{k} {v[1] / tunnels / 1024:.2f} (PSS {v[0] / tunnels / 1024:.2f})" for k, v in parts
                         if v[1] >= 64 * len(carriers))
        self.rows.append(("memory of the tunnel processes per open tunnel by kind, after a first connection: "
                          "private dirty MiB", text, f"{tunnels} tunnels in {len(carriers)} processes"))

    def table(self) -> str:
        out = ["| measurement | eic-proxy (baselines) | ratio |", "|---|---|---|"]
        out += [f"| {a} | {b} | {c} |" for a, b, c in self.rows]
        return "\n".join(out)


def wait_ready(exe: str, env: dict) -> None:
    """Until the helper has loaded what first connections need (it does once one happened, when idle)."""
    deadline = time.monotonic() + 10
    while "first connections ready" not in subprocess.run([exe, "helper", "status"], env=env, capture_output=True,
                                                           text=True).stdout:
        if time.monotonic() > deadline:
            raise RuntimeError("the helper did not load the cold path within 10 s")
        time.sleep(0.1)


def stop_helpers(env: dict) -> None:
    """Stop the helper, and wait until it is gone: the next connection starts from nothing."""
    subprocess.run([str(REPO / "bench/out/install/venv/bin/eic-proxy"), "helper", "stop"], env=env, capture_output=True)
    deadline = time.monotonic() + 5
    while any(comm(pid) == HELPER for pid in ours()) and time.monotonic() < deadline:
        time.sleep(0.01)


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())
    ssh = subprocess.run(["ssh", "-V"], capture_output=True, text=True).stderr.strip()
    return (f"{platform.node()}: {os.cpu_count()} CPU ({cpu}), Python {platform.python_version()}, {ssh}, "
            f"kernel {platform.release()}")


PARTS = ("latency", "cpu", "handshake", "fanout", "memory", "throughput")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size-mib", type=int, default=512)
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--reps", type=int, default=3, help="repetitions of each throughput case (median)")
    p.add_argument("--skip-throughput", action="store_true")
    p.add_argument("--only", action="append", choices=PARTS, help="run only this part (repeatable)")
    args = p.parse_args()
    parts = args.only or [part for part in PARTS if not (args.skip_throughput and part == "throughput")]
    b = Bench(args.size_mib, args.runs, args.reps)
    try:
        for part in PARTS:
            if part in parts:
                getattr(b, part)()
    finally:
        b.close()
    print(f"machine: {machine()}\nsize: {args.size_mib} MiB, runs: {args.runs}, throughput reps: {args.reps}\n")
    print(b.table())
    return 0


if __name__ == "__main__":
    sys.exit(main())

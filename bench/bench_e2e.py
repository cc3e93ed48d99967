"""End-to-end benchmark: Django views fanning out to an async upstream, under gunicorn.

Run it from the repository root (``make bench-e2e`` installs wrk first)::

    .venv/bin/python bench/bench_e2e.py            # full run, about 15 minutes
    .venv/bin/python bench/bench_e2e.py --quick    # smoke run, under a minute
    .venv/bin/python bench/bench_e2e.py --rounds 6 --delay 0.05
    .venv/bin/python bench/bench_e2e.py --json bench/results/bench_e2e.json  # for chart.py

What runs, all on 127.0.0.1, each process stopped by its pid at the end:

* ``bench/upstream.py``: an aiohttp server answering ``/item/<n>`` after a
  fixed delay (20 ms), counting the TCP connections it accepts.
* Three sites of ``bench/e2e_site``, each two single-worker gunicorn gthread
  servers (one per core, 16 threads: one per load-generator connection):
  ``plain`` (Django without the app), ``looptoken`` (the app and its
  middleware), and ``control``, a second copy of ``plain``. Each fetching
  view gets the same 10 items from the upstream.
* wrk (``apt-get install wrk``) as the load generator, in its own process:
  32 connections, one thread per server of the site, bounded in time.

Every round measures every contender once, in a fresh shuffled order
(seeded, so a run can be repeated; a rotated order would give each contender
the same predecessor every round, and on this machine what ran just before
moves a measurement): a 1 s wrk warm-up (pools reach their steady state
again after idling through the other contenders), then a timed wrk run.
Around the timed run the driver reads the gunicorn workers' CPU time
(``utime + stime`` in ``/proc/<pid>/stat``) and the upstream's connection
counter. This machine is shared and noisy, so the report gives medians
across rounds, and ratios are medians of per-round ratios: measurements
taken side by side. The ``control`` site measures the measurement: the same
code as ``plain`` in other processes (A/A), so its ratio to ``plain`` shows
how far apart two identical contenders land in this run.

One round's ratio of two identical contenders lands anywhere from about
0.7 to 1.4 here, so a verdict on the median alone would be a coin toss
between contenders that do the same work. Each target is judged on the
median's 95% interval instead: PASS when the whole interval is on the
target's side of the line, FAIL when it is all on the wrong side, TIE when
it holds the line (the run cannot tell the two apart: what an A/A pair
gives). The interval needs at least 6 rounds; with 10 it spans about
0.8 to 1.1 for an A/A pair here: differences smaller than that are ties.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import os
import platform
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from types import FrameType

import httpx

ROOT = Path(__file__).resolve().parents[1]
# One single-worker gunicorn per core, each loaded by its own wrk thread: one
# gunicorn with 2 workers lets the kernel hand wrk's keep-alive connections
# to its workers as unevenly as 32 to 0, which varied throughput between runs
# more than the contenders differ.
SERVERS = 2
CONNECTIONS = 32
DELAY = 0.02
ITEMS = [{"id": n} for n in range(10)]
FULL = {"rounds": 10, "seconds": 3}
QUICK = {"rounds": 1, "seconds": 1}
WARMUP_S = 1
# Idle: at most 20 ms of CPU over 100 ms, twice in a row (an idle gunicorn uses ~0).
IDLE_SAMPLE_S = 0.1
IDLE_CPU_S = 0.02
SERVER_NOISE = ("Traceback", "Unclosed", "Task was destroyed", "was never awaited")

# wrk's script: thread i loads the i-th server; the summary is one JSON line.
WRK_REPORT = """
local ports = {}
for port in string.gmatch(os.getenv("BENCH_E2E_PORTS"), "%d+") do
  ports[#ports + 1] = port
end
local threads = 0

setup = function(thread)
  threads = threads + 1
  thread.addr = wrk.lookup("127.0.0.1", ports[threads])[1]
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "p50_us": %.0f, "p99_us": %.0f, ' ..
    '"errors": %d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.status + e.timeout))
end
"""


@dataclass(frozen=True)
class Contender:
    """One view to load: which site serves it and what it fetches with."""

    key: str
    label: str
    site: str  # a key of SITES
    path: str
    library: str  # "aiohttp", "httpx", or "" for the trivial view


CONTENDERS = (
    Contender("sync", "1. sequential sync `httpx.Client`, per thread", "plain", "sync/httpx/", ""),
    *(
        c
        for lib in ("aiohttp", "httpx")
        for c in (
            Contender(
                f"django/{lib}",
                "2. Django's own `async def` view (new client per request)",
                "plain",
                f"django/{lib}/",
                lib,
            ),
            Contender(
                f"thread/{lib}",
                "3. hand-written loop thread, persistent client",
                "plain",
                f"thread/{lib}/",
                lib,
            ),
            *(
                [
                    Contender(
                        f"thread/{lib}/control",
                        "3b. the same as 3, on a second Django-alone site (A/A control)",
                        "control",
                        f"thread/{lib}/",
                        lib,
                    )
                ]
                if lib == "aiohttp"  # the library of the targets
                else []
            ),
            Contender(
                f"runs_async/{lib}",
                "4. `@runs_async` + `loop_resource`",
                "looptoken",
                f"runs_async/{lib}/",
                lib,
            ),
            Contender(
                f"async_views/{lib}",
                "5. `ASYNC_VIEWS` `async def` view + `loop_resource`",
                "looptoken",
                f"async_views/{lib}/",
                lib,
            ),
            Contender(
                f"await_multiple/{lib}",
                "6. `await_multiple` from a sync view + `loop_resource`",
                "looptoken",
                f"await_multiple/{lib}/",
                lib,
            ),
        )
    ),
    Contender("trivial/plain", "trivial sync view, Django alone", "plain", "trivial/", ""),
    Contender(
        "trivial/control",
        "trivial sync view, Django alone, second site (A/A control)",
        "control",
        "trivial/",
        "",
    ),
    Contender(
        "trivial/looptoken",
        "trivial sync view, app + `LoopTokenMiddleware`",
        "looptoken",
        "trivial/",
        "",
    ),
)
# Site name -> E2E_MODE: ``control`` runs the same code as ``plain``.
SITES = {"plain": "plain", "control": "plain", "looptoken": "looptoken"}


def progress(message: str) -> None:
    """Progress on stderr; stdout carries only the report."""
    print(message, file=sys.stderr, flush=True)


# -- processes -----------------------------------------------------------------


def listening_socket() -> socket.socket:
    """A socket listening on a free 127.0.0.1 port, to hand to a child process."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    return sock


@dataclass
class Process:
    """A child process and the file its output goes to."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def terminate(self) -> None:
        """SIGTERM by pid, if it still runs."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)

    def wait_stopped(self, timeout: float = 20) -> None:
        """Wait for it to exit; SIGKILL by pid if it hangs."""
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            progress(f"{self.name} (pid {self.popen.pid}) ignored SIGTERM; killing it")
            self.popen.kill()
            self.popen.wait(10)

    def output(self) -> str:
        """What the process wrote so far."""
        return self.log.read_text(errors="replace")


@dataclass
class Fleet:
    """Every process the benchmark started, stopped together: all signalled, then
    each waited for (stopping them one by one took seconds)."""

    processes: list[Process] = field(default_factory=list)

    def stop(self) -> None:
        """SIGTERM each by its pid, then wait for each."""
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            process.wait_stopped()


def spawn(
    fleet: Fleet,
    name: str,
    command: list[str],
    env: dict[str, str],
    sockets: Sequence[socket.socket],
    logdir: Path,
) -> Process:
    """Start ``command`` with ``sockets`` inherited, as one of ``fleet``."""
    log = logdir / f"{name}.log"
    with log.open("wb") as out:  # the child keeps its own copy
        popen = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            pass_fds=[sock.fileno() for sock in sockets],
        )
    process = Process(name, popen, log)
    fleet.processes.append(process)
    # Only the child accepts: a dead child must refuse connections, not queue them.
    for sock in sockets:
        sock.close()
    return process


def get(url: str, timeout: float = 60) -> httpx.Response:
    """One GET on a new connection; the servers' sockets listen already, so this
    waits for the server to serve rather than polling for it to bind."""
    response = httpx.get(url, timeout=timeout)
    response.raise_for_status()
    return response


@dataclass
class Upstream:
    """The aiohttp upstream: where its items are and how many connections it took."""

    process: Process
    url: str
    stats_url: str

    def connections(self) -> int:
        """TCP connections accepted on the items socket since it started."""
        return int(get(self.stats_url).json()["connections"])


def start_upstream(fleet: Fleet, delay: float, logdir: Path) -> Upstream:
    """Start ``bench/upstream.py`` and wait until it answers."""
    items, stats = listening_socket(), listening_socket()
    url = f"http://127.0.0.1:{items.getsockname()[1]}"
    stats_url = f"http://127.0.0.1:{stats.getsockname()[1]}/stats"
    command = [
        sys.executable,
        str(ROOT / "bench" / "upstream.py"),
        *("--fd", str(items.fileno()), "--stats-fd", str(stats.fileno())),
        *("--delay", str(delay)),
    ]
    process = spawn(fleet, "upstream", command, dict(os.environ), [items, stats], logdir)
    upstream = Upstream(process, url, stats_url)
    try:
        upstream.connections()
        assert get(f"{url}/item/7").json() == {"id": 7}
    except (httpx.HTTPError, AssertionError) as exc:
        raise RuntimeError(f"the upstream does not answer ({exc}):\n{process.output()}") from exc
    return upstream


def children(pid: int) -> set[int]:
    """Pids of ``pid``'s child processes."""
    found: set[int] = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:  # gone meanwhile
            continue
        # The command name may hold spaces and parentheses: fields follow the last ")".
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.add(int(entry))
    return found


def cpu_seconds(pids: set[int]) -> float:
    """User plus system CPU seconds of ``pids`` (all their threads, living or gone)."""
    ticks = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime: fields 14 and 15
    return ticks / os.sysconf("SC_CLK_TCK")


@dataclass
class Site:
    """One site of the benchmark: one single-worker gunicorn per core."""

    name: str  # a key of SITES
    mode: str  # E2E_MODE: "plain" or "looptoken"
    servers: list[Process]
    ports: list[int]

    @property
    def url(self) -> str:
        """The first server's URL (wrk's threads go to every server's port)."""
        return f"http://127.0.0.1:{self.ports[0]}/"

    def workers(self) -> set[int]:
        """The pids of every server's worker."""
        return set().union(*(children(server.popen.pid) for server in self.servers))


def start_site(
    fleet: Fleet,
    name: str,
    upstream: Upstream,
    args: argparse.Namespace,
    logdir: Path,
) -> Site:
    """Start the site's gunicorn servers (gthread); ``wait_serving`` waits for them."""
    mode = SITES[name]
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "bench.e2e_site.settings",
        "PYTHONPATH": str(ROOT),
        "E2E_MODE": mode,
        "E2E_UPSTREAM": upstream.url,
        "E2E_POOL": str(args.pool),
        "E2E_BACKEND": args.backend,
    }
    site = Site(name, mode, [], [])
    for index in range(SERVERS):
        sock = listening_socket()
        site.ports.append(sock.getsockname()[1])
        command = [
            sys.executable,
            "-m",
            "gunicorn",
            *("--bind", f"fd://{sock.fileno()}"),
            *("--worker-class", "gthread", "--workers", "1"),
            *("--threads", str(threads_per_worker(args.connections))),
            *("--keep-alive", "5", "--graceful-timeout", "10", "--log-level", "warning"),
            "bench.e2e_site.wsgi:application",
        ]
        process_name = f"gunicorn-{name}-{index}"
        site.servers.append(spawn(fleet, process_name, command, env, [sock], logdir))
    return site


def wait_serving(site: Site) -> None:
    """Wait until each of the site's workers serves (they boot meanwhile)."""
    for server, port in zip(site.servers, site.ports, strict=True):
        try:
            # Answered by the worker: it has loaded Django and the URLs.
            get(f"http://127.0.0.1:{port}/trivial/")
        except httpx.HTTPError as exc:
            output = server.output()
            raise RuntimeError(f"{server.name} does not serve ({exc}):\n{output}") from exc
    if len(site.workers()) != SERVERS:
        raise RuntimeError(f"expected {SERVERS} gunicorn workers, found {site.workers()}")


def threads_per_worker(connections: int) -> int:
    """Threads per gunicorn worker: one per load-generator connection in all."""
    return max(1, connections // SERVERS)


def start_all(
    stack: contextlib.ExitStack, args: argparse.Namespace, logdir: Path
) -> tuple[Upstream, dict[str, Site]]:
    """The upstream and every site, serving; their processes stop when ``stack`` closes."""
    fleet = Fleet()
    stack.callback(fleet.stop)
    upstream = start_upstream(fleet, args.delay, logdir)
    sites = {name: start_site(fleet, name, upstream, args, logdir) for name in SITES}
    for site in sites.values():
        wait_serving(site)
    return upstream, sites


def check_sites(sites: dict[str, Site]) -> dict[str, str]:
    """Each site is what it claims; every contender answers the 10 items, on every
    server. Returns the loop class each site runs its coroutines on."""
    loops: dict[str, str] = {}
    for site in sites.values():
        for port in site.ports:
            url = f"http://127.0.0.1:{port}/"
            where = get(url + "where/").json()
            if site.mode == "plain" and where["looptoken_imported"]:
                raise RuntimeError("the plain site imported django_looptoken")
            if site.mode == "looptoken" and not where["shared_loop"]:
                raise RuntimeError("ASYNC_VIEWS did not take effect in the looptoken site")
            loops[site.mode] = where["loop"]
            for contender in CONTENDERS:
                if contender.site == site.name:
                    check_answer(contender, get(url + contender.path))
    return loops


def check_answer(contender: Contender, response: httpx.Response) -> None:
    """The 10 items from a fetching view, ``ok`` from the trivial one."""
    if contender.path == "trivial/":
        if response.content != b"ok":
            raise RuntimeError(f"{contender.key} answered {response.content!r}")
    elif (body := response.json()) != {"items": ITEMS}:
        raise RuntimeError(f"{contender.key} answered {body!r}")


# -- load ----------------------------------------------------------------------


@dataclass(frozen=True)
class WrkRun:
    """What one wrk run reports."""

    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int


def start_wrk(
    site: Site, path: str, seconds: int, connections: int, script: Path
) -> subprocess.Popen[str]:
    """Start loading ``path`` for ``seconds`` with ``connections`` connections, spread
    evenly over the site's servers (one wrk thread per server)."""
    command = ["wrk", f"-t{len(site.ports)}", f"-c{connections}", f"-d{seconds}s"]
    return subprocess.Popen(
        [*command, "--timeout", "10s", "-s", str(script), site.url + path],
        env={**os.environ, "BENCH_E2E_PORTS": " ".join(map(str, site.ports))},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish_wrk(process: subprocess.Popen[str], seconds: int) -> WrkRun:
    """Wait for a wrk run (killed by its pid if it overruns) and read its report."""
    try:
        out, err = process.communicate(timeout=seconds + 30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    if process.returncode:
        raise RuntimeError(f"wrk failed ({process.returncode}): {err.strip()}")
    report = json.loads(out.strip().splitlines()[-1])
    return WrkRun(
        report["requests"],
        report["duration_us"] / 1e6,
        report["p50_us"] / 1000,
        report["p99_us"] / 1000,
        report["errors"],
    )


def run_wrk(site: Site, path: str, seconds: int, connections: int, script: Path) -> WrkRun:
    """One wrk run, to its end."""
    return finish_wrk(start_wrk(site, path, seconds, connections, script), seconds)


@dataclass(frozen=True)
class Sample:
    """One contender's timed load: what wrk saw, and the CPU and connections it cost."""

    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_s: float
    upstream_cpu_s: float
    upstream_connections: int

    @property
    def rps(self) -> float:
        """Requests per second."""
        return self.requests / self.seconds


def combine(samples: Sequence[Sample]) -> Sample:
    """Several windows of one contender as one sample (latencies: the median window's)."""
    return Sample(
        requests=sum(s.requests for s in samples),
        seconds=sum(s.seconds for s in samples),
        p50_ms=statistics.median(s.p50_ms for s in samples),
        p99_ms=statistics.median(s.p99_ms for s in samples),
        errors=sum(s.errors for s in samples),
        cpu_s=sum(s.cpu_s for s in samples),
        upstream_cpu_s=sum(s.upstream_cpu_s for s in samples),
        upstream_connections=sum(s.upstream_connections for s in samples),
    )


def wait_idle(pids: set[int], deadline_s: float = 60) -> None:
    """Wait until ``pids`` use (almost) no CPU: wrk has closed its connections, but
    the requests it left in flight run on and would be counted against the next job.

    No event says "every request finished", so CPU time is sampled (bounded).
    """
    deadline = time.monotonic() + deadline_s
    quiet = 0
    used = cpu_seconds(pids)
    while quiet < 2:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the servers stayed busy for {deadline_s} s after a run")
        time.sleep(IDLE_SAMPLE_S)
        used, before = cpu_seconds(pids), used
        quiet = quiet + 1 if used - before <= IDLE_CPU_S else 0


@dataclass(frozen=True)
class Bench:
    """What measuring needs: the servers, the load's shape, wrk's script."""

    sites: dict[str, Site]
    upstream: Upstream
    connections: int
    script: Path

    def everyone(self) -> set[int]:
        """Pids of every server process under load: all workers and the upstream."""
        return {self.upstream.process.popen.pid}.union(
            *(site.workers() for site in self.sites.values())
        )

    def warm_up(self, contender: Contender) -> None:
        """Load ``contender`` untimed: pools fill again after idling through the others."""
        site = self.sites[contender.site]
        run_wrk(site, contender.path, WARMUP_S, self.connections, self.script)

    def timed(self, contender: Contender, seconds: int) -> Sample:
        """One timed load, from idle servers to idle servers, with CPU and upstream
        connection counts read around it."""
        site = self.sites[contender.site]
        workers = site.workers()
        upstream_pid = {self.upstream.process.popen.pid}
        wait_idle(self.everyone())
        cpu_before = cpu_seconds(workers)
        upstream_cpu_before = cpu_seconds(upstream_pid)
        connections_before = self.upstream.connections()
        run = run_wrk(site, contender.path, seconds, self.connections, self.script)
        cpu = cpu_seconds(workers) - cpu_before
        upstream_cpu = cpu_seconds(upstream_pid) - upstream_cpu_before
        opened = self.upstream.connections() - connections_before
        wait_idle(self.everyone())
        if site.workers() != workers:
            raise RuntimeError(f"a gunicorn worker was replaced while measuring {contender.key}")
        return Sample(
            run.requests,
            run.seconds,
            run.p50_ms,
            run.p99_ms,
            run.errors,
            cpu,
            upstream_cpu,
            opened,
        )

    def measure(self, contender: Contender, seconds: int) -> Sample:
        """Warm up, then one timed window."""
        self.warm_up(contender)
        return self.timed(contender, seconds)

    def measure_group(self, group: Sequence[Contender], seconds: int) -> list[Sample]:
        """``seconds`` windows of 1 s for each of ``group``, in the order given and
        back again (A B C C B A A B C ...): a difference of a few percent would drown
        in this machine's drift between longer windows taken one after another."""
        for contender in group:
            self.warm_up(contender)
        there_and_back = [*group, *reversed(group)]
        windows: dict[Contender, list[Sample]] = {c: [] for c in group}
        for index in range(len(group) * seconds):
            contender = there_and_back[index % len(there_and_back)]
            windows[contender].append(self.timed(contender, 1))
        return [combine(windows[c]) for c in group]


# -- results -------------------------------------------------------------------


@dataclass
class Results:
    """Samples per contender key, one per round."""

    samples: dict[str, list[Sample]] = field(default_factory=dict)

    def median(self, key: str, attr: str) -> float:
        """Median of one figure across rounds."""
        return statistics.median(float(getattr(s, attr)) for s in self.samples[key])

    def ratios(self, a: str, b: str, attr: str = "rps") -> list[float]:
        """The per-round ratios a / b of one figure (measured in the same round)."""
        pairs = zip(self.samples[a], self.samples[b], strict=True)
        return [getattr(x, attr) / max(getattr(y, attr), 1e-9) for x, y in pairs]

    def ratio(self, a: str, b: str, attr: str = "rps") -> float:
        """Median of the per-round ratios a / b."""
        return statistics.median(self.ratios(a, b, attr))

    def cpu_per_request_ratio(self, a: str, b: str) -> list[float]:
        """Per-round ratios of worker CPU per request, a / b."""
        pairs = zip(self.samples[a], self.samples[b], strict=True)
        return [
            (x.cpu_s / max(x.requests, 1)) / max(y.cpu_s / max(y.requests, 1), 1e-12)
            for x, y in pairs
        ]

    def cpu_ms_per_request(self, key: str) -> float:
        """Median across rounds of worker CPU milliseconds per request."""
        return statistics.median(s.cpu_s * 1000 / max(s.requests, 1) for s in self.samples[key])

    def upstream_cpu_ms_per_request(self, key: str) -> float:
        """Median across rounds of the upstream's CPU milliseconds per request."""
        samples = self.samples[key]
        return statistics.median(s.upstream_cpu_s * 1000 / max(s.requests, 1) for s in samples)

    def connections_per_1000(self, key: str) -> float:
        """Upstream connections opened per 1,000 requests, over all rounds."""
        samples = self.samples[key]
        opened = sum(s.upstream_connections for s in samples)
        return opened * 1000 / max(sum(s.requests for s in samples), 1)

    def errors(self, key: str) -> int:
        """Failed requests over all rounds."""
        return sum(s.errors for s in self.samples[key])


TRIVIAL = ("trivial/plain", "trivial/control", "trivial/looptoken")


def run_rounds(bench: Bench, rounds: int, seconds: int) -> Results:
    """Every contender once per round, in a fresh shuffled order each round;
    the trivial views as one job, alternating with each other."""
    results = Results({c.key: [] for c in CONTENDERS})
    by_key = {c.key: c for c in CONTENDERS}
    jobs = [c.key for c in CONTENDERS if c.key not in TRIVIAL] + ["trivial"]
    shuffle = random.Random(rounds).shuffle
    started = time.monotonic()
    for index in range(rounds):
        order = jobs[:]
        shuffle(order)
        for job in order:
            if job == "trivial":
                group = list(TRIVIAL)
                shuffle(group)
                samples = bench.measure_group([by_key[key] for key in group], seconds)
                for key, sample in zip(group, samples, strict=True):
                    results.samples[key].append(sample)
                    progress(
                        f"  {key}: {sample.rps:,.0f} req/s, "
                        f"{sample.cpu_s * 1000 / max(sample.requests, 1):.3f} ms CPU/req"
                    )
            else:
                sample = bench.measure(by_key[job], seconds)
                results.samples[job].append(sample)
                progress(
                    f"  {job}: {sample.rps:,.0f} req/s, p99 {sample.p99_ms:.0f} ms, "
                    f"{sample.cpu_s * 1000 / max(sample.requests, 1):.2f} ms CPU/req"
                )
        progress(f"round {index + 1}/{rounds} done ({time.monotonic() - started:.0f} s)")
    return results


def table(results: Results, library: str) -> list[str]:
    """The Markdown table of one client library's contenders."""
    django = f"django/{library}"
    lines = [
        f"#### {library} client",
        "",
        "| contender | req/s | x Django's own | p50 ms | p99 ms | errors "
        "| worker CPU ms/req | upstream CPU ms/req | upstream conns / 1k req |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in CONTENDERS:
        if c.library != library and c.key != "sync":
            continue
        lines.append(
            f"| {c.label} | {results.median(c.key, 'rps'):,.0f} "
            f"| {results.ratio(c.key, django):.2f} "
            f"| {results.median(c.key, 'p50_ms'):.1f} | {results.median(c.key, 'p99_ms'):.1f} "
            f"| {results.errors(c.key)} | {results.cpu_ms_per_request(c.key):.2f} "
            f"| {results.upstream_cpu_ms_per_request(c.key):.2f} "
            f"| {results.connections_per_1000(c.key):,.0f} |"
        )
    return [*lines, ""]


def trivial_table(results: Results) -> list[str]:
    """The trivial view with and without the app."""
    lines = [
        "#### trivial sync view (the app's cost on views that do not use it)",
        "",
        "| site | req/s | p50 ms | p99 ms | errors | worker CPU ms/req |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for key in TRIVIAL:
        label = next(c.label for c in CONTENDERS if c.key == key)
        lines.append(
            f"| {label} | {results.median(key, 'rps'):,.0f} "
            f"| {results.median(key, 'p50_ms'):.1f} | {results.median(key, 'p99_ms'):.1f} "
            f"| {results.errors(key)} | {results.cpu_ms_per_request(key):.3f} |"
        )
    return [*lines, ""]


CONFIDENCE = 0.95
VERDICTS_EXPLAINED = (
    "PASS: the ratio's whole 95% interval is on the target's side of the line; "
    "TIE: the interval holds the line, so this run cannot tell the two apart (as it "
    "cannot an A/A pair); FAIL: the whole interval is on the wrong side."
)


def median_interval(values: Sequence[float]) -> tuple[float, float] | None:
    """An interval that holds the true median with at least 95% confidence, whatever
    the noise's distribution: the k-th smallest and k-th largest value, for the
    largest k the binomial distribution allows. None for fewer than 6 values."""
    ordered = sorted(values)
    n = len(ordered)
    found = None
    below = 0.0  # P(fewer than k of n values fall below the median)
    for k in range(1, n // 2 + 1):
        below += math.comb(n, k - 1) / 2**n
        if 1 - 2 * below < CONFIDENCE:
            break
        found = (ordered[k - 1], ordered[n - k])
    return found


@dataclass(frozen=True)
class Estimate:
    """A median of per-round ratios and its 95% interval (with too few rounds for
    one, the interval is the median alone and says so)."""

    median: float
    low: float
    high: float
    has_interval: bool

    @classmethod
    def of(cls, ratios: Sequence[float]) -> Estimate:
        """The estimate from one ratio per round."""
        median = statistics.median(ratios)
        interval = median_interval(ratios)
        low, high = interval or (median, median)
        return cls(median, low, high, interval is not None)

    def __str__(self) -> str:
        if not self.has_interval:
            return f"{self.median:.2f}x; too few rounds for an interval"
        return f"{self.median:.2f}x; 95% interval {self.low:.2f}-{self.high:.2f}"


def judge(estimate: Estimate, line: float, *, at_least: bool) -> str:
    """PASS, TIE or FAIL (``VERDICTS_EXPLAINED``) for "at least ``line``" or, with
    ``at_least=False``, "at most ``line``"."""
    if at_least:
        good, bad = estimate.low >= line, estimate.high < line
    else:
        good, bad = estimate.high <= line, estimate.low > line
    return "PASS" if good else "FAIL" if bad else "TIE"


def twin_check(estimate: Estimate) -> str:
    """What an A/A estimate says about the run."""
    if not estimate.has_interval:
        return str(estimate)
    if estimate.low <= 1.0 <= estimate.high:
        return f"{estimate}: holds 1.0, as identical code should"
    return (
        f"{estimate}: misses 1.0, so the two copies differed beyond this run's "
        "noise and the verdicts against them are suspect; run it again"
    )


def targets(results: Results) -> tuple[list[str], bool]:
    """The issue's targets (aiohttp client) as verdict lines; and whether none failed.

    Each verdict is on the median of per-round ratios and its 95% interval
    (``VERDICTS_EXPLAINED``). On this machine two identical contenders land
    within a few percent of each other only as a median over many rounds, so
    contenders that do the same work come out as a TIE on "at least as fast"
    and "no worse", as the A/A lines show identical ones do in the same run.
    """
    lines: list[str] = []
    passed = True

    def check(
        estimate: Estimate, line: float, text: str, *, at_least: bool = True, more: str = ""
    ) -> None:
        nonlocal passed
        verdict = judge(estimate, line, at_least=at_least)
        passed = passed and verdict != "FAIL"
        lines.append(f"- {verdict}: {text} ({estimate}{more})")

    def strict(ok: bool, text: str) -> None:
        nonlocal passed
        passed = passed and ok
        lines.append(f"- {'PASS' if ok else 'FAIL'}: {text}")

    for way in ("runs_async", "async_views", "await_multiple"):
        key = f"{way}/aiohttp"
        vs_django = Estimate.of(results.ratios(key, "django/aiohttp"))
        vs_thread = Estimate.of(results.ratios(key, "thread/aiohttp"))
        p99 = Estimate.of(results.ratios(key, "thread/aiohttp", "p99_ms"))
        check(vs_django, 2.0, f"{way} req/s >= 2x Django's own async view")
        check(vs_thread, 1.0, f"{way} req/s >= hand-written thread's")
        check(p99, 1.0, f"{way} p99 <= hand-written thread's", at_least=False)
        conns = results.connections_per_1000(key)
        strict(conns < 20, f"{way} < 20 upstream connections per 1,000 requests ({conns:.1f})")
    twin = "thread/aiohttp/control"
    lines.append(
        "- A/A, the hand-written thread on a second Django-alone site: req/s "
        f"{twin_check(Estimate.of(results.ratios(twin, 'thread/aiohttp')))}; p99 "
        f"{twin_check(Estimate.of(results.ratios(twin, 'thread/aiohttp', 'p99_ms')))}"
    )
    plain, control, app = TRIVIAL
    cpu = Estimate.of(results.cpu_per_request_ratio(app, plain))
    check(
        Estimate.of(results.ratios(app, plain)),
        0.97,
        "app + LoopTokenMiddleware on a trivial sync view costs < 3% req/s",
        more=f"; worker CPU per request {cpu}",
    )
    lines.append(
        "- A/A, the trivial view on a second Django-alone site: req/s "
        f"{twin_check(Estimate.of(results.ratios(control, plain)))}; worker CPU per "
        f"request {Estimate.of(results.cpu_per_request_ratio(control, plain))}"
    )
    errors = sum(results.errors(c.key) for c in CONTENDERS)
    strict(errors == 0, f"no failed requests ({errors})")
    return lines, passed


# -- report --------------------------------------------------------------------


def version(dist: str) -> str:
    """Installed version of ``dist``, or "not installed"."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def cpu_model() -> str:
    """The CPU's model name, from /proc/cpuinfo."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def header(args: argparse.Namespace, loops: dict[str, str], load: tuple[float, float]) -> str:
    """When, where, with what, and how the run was set up."""
    dists = ("django-looptoken", "Django", "asgiref", "gunicorn", "aiohttp", "httpx", "uvloop")
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    threads = threads_per_worker(args.connections)
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return "\n".join(
        [
            "## bench_e2e",
            "",
            f"- {date}; {cpu_model()}, {os.cpu_count()} CPUs; "
            f"load average {load[0]:.2f} at start, {load[1]:.2f} at end",
            f"- Python {platform.python_version()}; "
            + ", ".join(f"{dist} {version(dist)}" for dist in dists)
            + f"; {(wrk_version.stdout or wrk_version.stderr).split(' [')[0].strip()}",
            f"- per site {SERVERS} gunicorn servers (gthread, 1 worker x {threads} threads "
            f"each, one per core); wrk {SERVERS} threads x {threads} connections, one thread "
            f"per server ({args.connections} in all); upstream delay "
            f"{args.delay * 1000:g} ms; 10 items per request; client pools of "
            f"{args.pool} connections per process",
            f"- loops: app's shared loop `{loops['looptoken']}`, hand-written thread "
            f"`{loops['plain']}`",
            f"- {args.rounds} rounds, each contender once per round in a fresh shuffled order: "
            f"{WARMUP_S} s warm-up, then {args.seconds} s timed (the trivial views: "
            f"{args.seconds} windows of 1 s each, alternated A B C C B A); each timed window "
            "starts and ends with idle servers; medians across rounds, ratios are medians "
            "of per-round ratios, with the interval that holds the true median with 95% "
            "confidence (order statistics)",
            "",
        ]
    )


def report(
    results: Results, args: argparse.Namespace, loops: dict[str, str], load: tuple[float, float]
) -> tuple[str, bool]:
    """The whole Markdown report, and whether every target passed."""
    lines = [header(args, loops, load)]
    for library in ("aiohttp", "httpx"):
        lines += table(results, library)
    lines += trivial_table(results)
    target_lines, passed = targets(results)
    lines += [
        "Row 1 uses httpx's sync client in both tables (aiohttp has none); rows 2 and 3 "
        "run on the `plain` site (Django alone), 4 to 6 on the `looptoken` site, 3b on "
        "the `control` site (Django alone again, in other processes).",
        "",
        "Targets (aiohttp client):",
        "",
        *target_lines,
        "",
        VERDICTS_EXPLAINED,
        "",
    ]
    return "\n".join(lines), passed


def server_noise(processes: Sequence[Process]) -> list[str]:
    """Lines of the servers' output that signal a problem."""
    return [
        f"{process.name}: {line}"
        for process in processes
        for line in process.output().splitlines()
        if any(noise in line for noise in SERVER_NOISE)
    ]


# -- main ----------------------------------------------------------------------


def stop_on_sigterm() -> None:
    """Make SIGTERM raise ``SystemExit``, so that the ``finally`` blocks stop every
    process the benchmark started (by default SIGTERM would end it on the spot and
    leave them running)."""

    def exit_now(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, exit_now)


@contextlib.contextmanager
def wrk_script() -> Iterator[Path]:
    """wrk's Lua report script in a temporary directory, with the server logs."""
    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as tmp:
        script = Path(tmp) / "report.lua"
        script.write_text(WRK_REPORT)
        yield script


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; exit 1 if something broke (not if a target is missed)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short smoke run")
    parser.add_argument("--rounds", type=int, help=f"rounds (default {FULL['rounds']})")
    parser.add_argument("--seconds", type=int, help=f"timed seconds (default {FULL['seconds']})")
    parser.add_argument("--delay", type=float, default=DELAY, help="upstream delay, seconds")
    parser.add_argument("--connections", type=int, default=CONNECTIONS, help="concurrency")
    parser.add_argument(
        "--pool",
        type=int,
        help="connections per client pool, per process (default: sized to the concurrency, "
        "connections x 10 items / servers)",
    )
    parser.add_argument("--backend", choices=("auto", "asyncio", "uvloop"), default="auto")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    preset = QUICK if args.quick else FULL
    args.rounds = args.rounds or preset["rounds"]
    args.seconds = args.seconds or preset["seconds"]
    if args.rounds < 1 or args.seconds < 1:
        parser.error("--rounds and --seconds must be at least 1")
    if args.connections < SERVERS or args.connections % SERVERS:
        parser.error(f"--connections must be a positive multiple of {SERVERS}")
    # The "pool sized to the concurrency": every request in flight in
    # a process fans out to all its items at once.
    args.pool = args.pool or args.connections * len(ITEMS) // SERVERS
    if args.pool < 1:
        parser.error("--pool must be at least 1")
    if shutil.which("wrk") is None:
        parser.error("wrk is not installed: `apt-get install wrk`, or run `make bench-e2e`")

    stop_on_sigterm()
    load_start = os.getloadavg()[0]
    processes: list[Process] = []
    with wrk_script() as script, contextlib.ExitStack() as stack:
        logdir = script.parent
        try:
            upstream, sites = start_all(stack, args, logdir)
            processes = [upstream.process, *(p for site in sites.values() for p in site.servers)]
            loops = check_sites(sites)
            progress(f"servers up; {args.rounds} rounds of about {round_seconds(args):.0f} s")
            bench = Bench(sites, upstream, args.connections, script)
            results = run_rounds(bench, args.rounds, args.seconds)
        finally:
            stack.close()  # stop every process before reading their logs
            noise = server_noise(processes)
    load = (load_start, os.getloadavg()[0])
    text, _ = report(results, args, loops, load)
    print(text, flush=True)
    if args.json:
        write_json(args.json, results, args, loops, load)
    if noise:
        print("Server output that signals a problem:\n\n" + "\n".join(noise), flush=True)
    errors = sum(results.errors(c.key) for c in CONTENDERS)
    return 1 if noise or errors else 0


def round_seconds(args: argparse.Namespace) -> float:
    """Roughly how long one round takes (a timed window waits ~0.3 s for idle servers)."""
    seconds = float(args.seconds)
    trivial = len(TRIVIAL) * (WARMUP_S + seconds * 1.5)
    return (len(CONTENDERS) - len(TRIVIAL)) * (WARMUP_S + seconds + 0.5) + trivial


def write_json(
    path: str,
    results: Results,
    args: argparse.Namespace,
    loops: dict[str, str],
    load: tuple[float, float],
) -> None:
    """The report's figures as JSON (``--json PATH``, read by bench/chart.py)."""
    dists = ("django-looptoken", "Django", "asgiref", "gunicorn", "aiohttp", "httpx", "uvloop")
    payload = {
        "bench": "bench_e2e",
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(),
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "load": list(load),
        "versions": {dist: version(dist) for dist in dists},
        "loops": loops,
        "setup": {
            "rounds": args.rounds,
            "seconds": args.seconds,
            "connections": args.connections,
            "delay_s": args.delay,
            "pool": args.pool,
            "servers": SERVERS,
            "quick": args.quick,
        },
        "contenders": [
            {
                "key": c.key,
                "label": c.label,
                "library": c.library,
                "rps": results.median(c.key, "rps"),
                "p50_ms": results.median(c.key, "p50_ms"),
                "p99_ms": results.median(c.key, "p99_ms"),
                "errors": results.errors(c.key),
                "worker_cpu_ms_per_request": results.cpu_ms_per_request(c.key),
                "upstream_connections_per_1000": results.connections_per_1000(c.key),
            }
            for c in CONTENDERS
        ],
    }
    with open(path, "w") as out:
        json.dump(payload, out, indent=2)
        out.write("\n")


if __name__ == "__main__":
    sys.exit(main())

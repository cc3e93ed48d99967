"""Benchmark: the cost of running a coroutine from synchronous code.

Run it from the repository root::

    .venv/bin/python bench/bench_await.py             # full run, a few minutes
    .venv/bin/python bench/bench_await.py --quick     # smoke run, ~20 s
    .venv/bin/python bench/bench_await.py --rounds 30 --backend uvloop
    .venv/bin/python bench/bench_await.py --pin 1     # everything on CPU 1
    .venv/bin/python bench/bench_await.py --json bench/results/bench_await.json  # for chart.py

It measures microseconds per call of a trivial coroutine with one suspension
(``await asyncio.sleep(0); return 1``) run from sync code, through
``looptoken.await_`` and the alternatives: a bare lock hand-off through the
shared loop (the floor: one wake-up of the loop thread and one of the caller,
no coroutine), ``asyncio.run_coroutine_threadsafe``, score.asyncio's
``await_``, asgiref's ``async_to_sync``, ``asyncio.run`` and anyio's blocking
portal. Each is measured with 1 caller and with 8 concurrent callers (8
threads released together by a barrier; the figure is wall time divided by
all calls made, plus the total throughput).

Why rounds are interleaved: the cost of these calls is dominated by waking
threads up, and this machine's thread wake-up latency swings between regimes
that last seconds. Measuring contender A for a minute and then contender B
would compare regimes, not contenders. So every round runs every contender
once, each round takes ~75 ms per contender, and the report gives medians
across rounds; ratios are medians of the per-round ratios, i.e. of
measurements taken side by side.

Why the order is shuffled every round: the regime a measurement meets
depends on what ran just before it (after some jobs this VM's idle CPU
answers wake-ups fast for a while). A fixed order, even rotated, gives each
job the same predecessor in every round: in earlier versions of this file
``await_`` always followed anyio's 8-caller job, which made its 1-caller
figure up to twice as fast as the same code measured after other jobs.
A seeded shuffle gives every job varied predecessors, and a run can be
repeated.

``--pin CPU`` runs everything on that one CPU. The caller and the loop
thread then hand over on the CPU they share, so the VM's cross-CPU wake-up
latency (tens of µs here, and the regimes above) drops out, and what is left
is each contender's own cost: its Python work and two context switches. Run
both ways; the unpinned figures are what a server sees, the pinned ones
compare the code. Unpinned, contenders that run their own loop thread
(score.asyncio, anyio) also differ by where the scheduler put each thread,
which holds for the whole process: the same code has given score.asyncio
anything from 0.5x to 1.4x ``await_``'s single-call time from one process to
the next.

Each loop backend (asyncio, uvloop) runs in its own child process, since
Django settings can be configured only once per process; the parent prints
the versions and the children's Markdown tables. With 8 callers the figure
is wall time divided by all calls made: the issue's "no slower per call than
with one" asks whether the loop keeps up when calls arrive together. A child also measures the
resident memory growth over 100,000 ``await_`` calls. It leaves with
``os._exit`` because score.asyncio's loop thread is not a daemon and its stop
path is broken on Python 3.9+.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from importlib import metadata
from typing import NoReturn

BACKENDS = ("asyncio", "uvloop")
CALLERS = (1, 8)
MANY = CALLERS[-1]

FULL_ROUNDS = 15
QUICK_ROUNDS = 3
FULL_TARGET_MS = 75.0
QUICK_TARGET_MS = 20.0
FULL_MEMORY = (5_000, 100_000)  # (warm-up calls, measured calls)
QUICK_MEMORY = (1_000, 10_000)
MEMORY_LIMIT_MB = 5.0

Call = Callable[[], object]


async def triv() -> int:
    """The benchmarked coroutine: one suspension, then a result."""
    await asyncio.sleep(0)
    return 1


# -- contenders ------------------------------------------------------------------


@dataclass(frozen=True)
class Contender:
    """One way of running ``triv()`` from sync code.

    ``make_call`` runs once in each caller thread, before the barrier, and
    returns the function that thread calls repeatedly; ``expect`` is what that
    function must return.
    """

    key: str
    label: str
    make_call: Callable[[], Call]
    expect: object = 1


@dataclass
class Env:
    """What contender setups share: the backend, cleanups, the looptoken loop."""

    backend: str
    stack: ExitStack
    loop: asyncio.AbstractEventLoop
    keepalive: list[object] = field(default_factory=list)


def setup_await(env: Env) -> Contender:
    """``looptoken.await_`` (the child holds a token for the whole run)."""
    import django_looptoken as looptoken

    await_ = looptoken.await_

    def make_call() -> Call:
        return lambda: await_(triv())

    return Contender("await_", "`looptoken.await_`", make_call)


def setup_floor(env: Env) -> Contender:
    """The floor: a lock released by a callback on the shared loop, no coroutine."""
    call_soon = env.loop.call_soon_threadsafe

    def make_call() -> Call:
        lock = threading.Lock()
        lock.acquire()
        release = lock.release

        def call() -> None:
            call_soon(release)
            lock.acquire()

        return call

    return Contender("floor", "floor: lock hand-off via `call_soon_threadsafe`", make_call, None)


def setup_rcts(env: Env) -> Contender:
    """Bare ``run_coroutine_threadsafe(...).result()`` on the shared loop."""
    loop = env.loop

    def make_call() -> Call:
        return lambda: asyncio.run_coroutine_threadsafe(triv(), loop).result()

    return Contender("rcts", "`run_coroutine_threadsafe(...).result()`", make_call)


def setup_score(env: Env) -> Contender:
    """score.asyncio's ``await_``, with one of its tokens held (never released)."""
    import score.asyncio as sa  # type: ignore[import-untyped]

    # Importing score.asyncio installs uvloop's event loop policy; put the
    # default back so "builtin" (and asyncio.run, async_to_sync) mean asyncio.
    asyncio.set_event_loop_policy(None)

    conf = sa.init({"backend": "uvloop" if env.backend == "uvloop" else "builtin"})
    # Releasing the last token hits score's broken stop path; the child exits
    # with os._exit instead, and a dropped token would release itself.
    env.keepalive += [conf, conf.start_loop()]

    def make_call() -> Call:
        return lambda: conf.await_(triv())

    return Contender("score", "score.asyncio `await_`", make_call)


def setup_async_to_sync(env: Env) -> Contender:
    """``asgiref.sync.async_to_sync(triv)()``."""
    from asgiref.sync import async_to_sync

    def make_call() -> Call:
        return async_to_sync(triv)

    return Contender("a2s", "asgiref `async_to_sync` (builtin loop)", make_call)


def setup_asyncio_run(env: Env) -> Contender:
    """``asyncio.run(triv())``: a fresh builtin loop per call."""

    def make_call() -> Call:
        return lambda: asyncio.run(triv())

    return Contender("run", "`asyncio.run` (builtin loop)", make_call)


def setup_anyio(env: Env) -> Contender:
    """anyio's blocking portal, entered once for the whole run."""
    from anyio.from_thread import start_blocking_portal

    portal = env.stack.enter_context(
        start_blocking_portal(
            backend="asyncio", backend_options={"use_uvloop": env.backend == "uvloop"}
        )
    )

    def make_call() -> Call:
        return lambda: portal.call(triv)

    return Contender("anyio", "anyio blocking portal `call`", make_call)


SETUPS: tuple[Callable[[Env], Contender], ...] = (
    setup_await,
    setup_floor,
    setup_rcts,
    setup_score,
    setup_async_to_sync,
    setup_asyncio_run,
    setup_anyio,
)


# -- measuring -----------------------------------------------------------------


def measure(contender: Contender, callers: int, iterations: int) -> float:
    """Run ``iterations`` calls in each of ``callers`` threads; return the wall seconds.

    The threads start together at a barrier after one untimed call each; the
    wall time runs from the first start to the last finish.
    """
    barrier = threading.Barrier(callers)
    starts = [0.0] * callers
    ends = [0.0] * callers
    errors: list[BaseException] = []

    def worker(index: int) -> None:
        try:
            call = contender.make_call()
            result = call()
            if result != contender.expect:
                raise AssertionError(f"{contender.key} returned {result!r}")
            barrier.wait()
            start = time.perf_counter()
            for _ in range(iterations):
                call()
            ends[index] = time.perf_counter()
            starts[index] = start
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()

    threads = [
        threading.Thread(target=worker, args=(i,), name=f"caller-{i}") for i in range(callers)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    real = [e for e in errors if not isinstance(e, threading.BrokenBarrierError)]
    if errors:
        raise (real or errors)[0]
    return max(ends) - min(starts)


def calibrate(contender: Contender, callers: int, target: float) -> int:
    """Iterations per caller thread so that one measurement takes ~``target`` s."""
    iterations = 1
    while True:
        wall = measure(contender, callers, iterations)
        if wall >= target / 4 or iterations >= 1_000_000:
            return max(1, round(iterations * target / max(wall, 1e-9)))
        iterations *= 4


def rss_mb() -> float:
    """Current resident set size (VmRSS) in MB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def memory_growth(warmup: int, calls: int) -> tuple[float, float]:
    """RSS (MB) before and after ``calls`` ``await_`` calls, after ``warmup`` calls."""
    import django_looptoken as looptoken

    for _ in range(warmup):
        looptoken.await_(triv())
    gc.collect()
    before = rss_mb()
    for _ in range(calls):
        looptoken.await_(triv())
    gc.collect()
    return before, rss_mb()


# -- one backend (child process) -----------------------------------------------


@dataclass
class Results:
    """Per-call seconds per round, keyed by (contender key, callers)."""

    rounds: dict[tuple[str, int], list[float]] = field(default_factory=dict)

    def median_us(self, key: str, callers: int) -> float:
        """Median microseconds per call across rounds."""
        return statistics.median(self.rounds[key, callers]) * 1e6

    def ratio(self, a: tuple[str, int], b: tuple[str, int]) -> float:
        """Median of the per-round ratios a / b (measurements side by side)."""
        return statistics.median(
            x / y for x, y in zip(self.rounds[a], self.rounds[b], strict=True)
        )


def progress(message: str) -> None:
    """Report progress on stderr (stdout carries only the report)."""
    print(message, file=sys.stderr, flush=True)


def run_backend(
    backend: str, rounds: int, target: float, memory: tuple[int, int], json_path: str | None
) -> None:
    """Benchmark every contender on ``backend``; print the Markdown report (and save JSON)."""
    from django.conf import settings

    settings.configure(LOOPTOKEN={"BACKEND": backend, "AUTOSTART": False}, INSTALLED_APPS=[])
    import django_looptoken as looptoken

    with ExitStack() as stack:
        token = looptoken.start_loop()
        stack.callback(token.release)
        env = Env(backend, stack, looptoken.get_loop())
        contenders = [setup(env) for setup in SETUPS]

        jobs = [(c, n) for c in contenders for n in CALLERS]
        iterations: dict[tuple[str, int], int] = {}
        for contender, callers in jobs:
            iterations[contender.key, callers] = calibrate(contender, callers, target)
        progress(f"[{backend}] iterations per caller per round: {iterations}")

        results = Results({(c.key, n): [] for c, n in jobs})
        shuffle = random.Random(rounds).shuffle  # seeded: a run can be repeated
        started = time.perf_counter()
        for index in range(rounds):
            # A fresh order every round: a job's figure depends on what ran
            # just before it (see the module docstring), so no job may
            # always follow the same one.
            order = jobs[:]
            shuffle(order)
            for contender, callers in order:
                count = iterations[contender.key, callers]
                wall = measure(contender, callers, count)
                # Per call of the whole process: with 8 callers the loop serves
                # 8 calls at a time, so this is what concurrency costs per call.
                results.rounds[contender.key, callers].append(wall / (count * callers))
            progress(f"[{backend}] round {index + 1}/{rounds} done")
        elapsed = time.perf_counter() - started

        progress(f"[{backend}] memory: {memory[1]:,} await_ calls")
        before, after = memory_growth(*memory)
        loop_type = type(env.loop)

    print_report(
        backend,
        f"{loop_type.__module__}.{loop_type.__qualname__}",
        contenders,
        results,
        rounds,
        target,
        elapsed,
        memory,
        before,
        after,
    )
    if json_path:
        loop_name = f"{loop_type.__module__}.{loop_type.__qualname__}"
        save_backend_json(json_path, loop_name, contenders, results, rounds)


def verdict(ok: bool) -> str:
    """PASS or FAIL."""
    return "PASS" if ok else "FAIL"


def print_report(
    backend: str,
    loop_name: str,
    contenders: list[Contender],
    results: Results,
    rounds: int,
    target: float,
    elapsed: float,
    memory: tuple[int, int],
    before: float,
    after: float,
) -> None:
    """Print one backend's Markdown table, ratios, targets and memory line."""
    out: list[str] = [
        f"### Backend: {backend} (`{loop_name}`)",
        "",
        f"{rounds} interleaved rounds, each in a fresh shuffled order, of "
        f"~{target * 1000:.0f} ms per contender and caller count ({elapsed:.0f} s); medians "
        f"across rounds. With {MANY} callers, µs/call is the wall time divided by all calls "
        f"made (each caller waits ~{MANY}x that).",
        "",
        f"| contender | 1 caller µs/call | {MANY} callers µs/call | {MANY} callers calls/s |",
        "|---|---:|---:|---:|",
    ]
    for c in contenders:
        one = results.median_us(c.key, 1)
        many = results.median_us(c.key, MANY)
        out.append(f"| {c.label} | {one:,.1f} | {many:,.1f} | {1e6 / many:,.0f} |")

    def ratio(a: str, b: str, callers: int = 1, b_callers: int | None = None) -> float:
        return results.ratio((a, callers), (b, callers if b_callers is None else b_callers))

    vs_score = ratio("await_", "score")
    vs_rcts = ratio("await_", "rcts")
    scaling = ratio("await_", "await_", MANY, 1)
    growth = after - before
    out += [
        "",
        "Ratios (median of per-round ratios; 1 caller / 8 callers):",
        "",
        f"- await_ / floor: {ratio('await_', 'floor'):.2f} / {ratio('await_', 'floor', MANY):.2f}",
        f"- await_ / score.asyncio await_: {vs_score:.2f} / {ratio('await_', 'score', MANY):.2f}",
        f"- await_ / run_coroutine_threadsafe: {vs_rcts:.2f} / "
        f"{ratio('await_', 'rcts', MANY):.2f}",
        f"- await_ {MANY} callers / 1 caller (per call): {scaling:.2f} "
        f"(floor: {ratio('floor', 'floor', MANY, 1):.2f}, "
        f"score.asyncio: {ratio('score', 'score', MANY, 1):.2f})",
        "",
        "Targets:",
        "",
        f"- {verdict(vs_score <= 1.0)}: await_ <= score.asyncio await_, 1 caller "
        f"(ratio {vs_score:.2f})",
        f"- {verdict(vs_rcts < 1.0)}: await_ < run_coroutine_threadsafe, 1 caller "
        f"(ratio {vs_rcts:.2f})",
        f"- {verdict(scaling <= 1.0)}: await_ with {MANY} callers per call <= with 1 caller "
        f"(ratio {scaling:.2f})",
        f"- {verdict(growth < MEMORY_LIMIT_MB)}: RSS growth over {memory[1]:,} await_ calls "
        f"(after {memory[0]:,} warm-up calls) < {MEMORY_LIMIT_MB:g} MB: {growth:+.2f} MB "
        f"({before:.1f} -> {after:.1f} MB)",
        "",
    ]
    print("\n".join(out), flush=True)


def child_main(backend: str, rounds: int, quick: bool, json_path: str | None) -> NoReturn:
    """Run one backend, then leave with ``os._exit`` (score's loop never stops)."""
    code = 0
    try:
        target = (QUICK_TARGET_MS if quick else FULL_TARGET_MS) / 1000
        memory = QUICK_MEMORY if quick else FULL_MEMORY
        run_backend(backend, rounds, target, memory, json_path)
    except BaseException:
        traceback.print_exc()
        code = 1
    alive = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
    progress(f"[{backend}] threads left at os._exit (score.asyncio's loop expected): {alive}")
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


# -- parent --------------------------------------------------------------------


def version(dist: str) -> str:
    """Installed version of ``dist``, or "not installed"."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def header() -> str:
    """Versions and CPU count, as Markdown."""
    dists = ("django-looptoken", "Django", "uvloop", "asgiref", "anyio", "score.asyncio")
    cpus = os.cpu_count()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cpus
    lines = [
        "## bench_await",
        "",
        f"- Python {platform.python_version()} ({platform.python_implementation()}), "
        f"{platform.platform()}",
        *(f"- {dist} {version(dist)}" for dist in dists),
        f"- CPUs: {cpus} (usable by this process: {usable})",
        "",
    ]
    return "\n".join(lines)


def parent_main(args: argparse.Namespace, rounds: int) -> int:
    """Run one child per backend and print the combined report."""
    backends = [args.backend] if args.backend else list(BACKENDS)
    reports = [header()]
    failed = False
    for backend in backends:
        if backend == "uvloop" and version("uvloop") == "not installed":
            reports.append("### Backend: uvloop\n\nSkipped: uvloop is not installed.\n")
            continue
        command = [
            sys.executable,
            os.path.abspath(__file__),
            "--child",
            backend,
            "--rounds",
            str(rounds),
        ]
        if args.quick:
            command.append("--quick")
        if args.json:
            command += ["--json", f"{args.json}.{backend}.part"]
        progress(f"running {backend} ...")
        try:
            child = subprocess.run(
                command,
                stdout=subprocess.PIPE,
                text=True,
                timeout=120 if args.quick else 900,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
            reports.append(f"### Backend: {backend}\n\nTimed out.\n\n{out}")
            failed = True
            continue
        if child.returncode:
            failed = True
            reports.append(
                f"### Backend: {backend}\n\nFailed (exit code {child.returncode}); "
                f"see stderr.\n\n{child.stdout}"
            )
        else:
            reports.append(child.stdout)
    print("\n".join(reports), flush=True)
    if args.json:
        write_json(args.json, backends, rounds, args.quick)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments; run the parent, or a child for one backend."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short smoke run (~20 s)")
    parser.add_argument(
        "--rounds",
        type=int,
        default=None,
        help=f"interleaved rounds (default {FULL_ROUNDS}, --quick {QUICK_ROUNDS})",
    )
    parser.add_argument("--backend", choices=BACKENDS, help="run only this backend")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    parser.add_argument(
        "--pin", type=int, metavar="CPU", help="run everything on this one CPU (see above)"
    )
    parser.add_argument("--child", choices=BACKENDS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    rounds = args.rounds or (QUICK_ROUNDS if args.quick else FULL_ROUNDS)
    if rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.pin is not None:
        usable = sorted(os.sched_getaffinity(0))
        if args.pin not in usable:
            parser.error(f"--pin {args.pin}: this process may run on CPUs {usable} only")
        # Before any thread starts; the children inherit it.
        os.sched_setaffinity(0, {args.pin})
    if args.child:
        child_main(args.child, rounds, args.quick, args.json)
    return parent_main(args, rounds)


# -- JSON (``--json PATH``, read by bench/chart.py) ----------------------------


def save_backend_json(
    path: str, loop_name: str, contenders: list[Contender], results: Results, rounds: int
) -> None:
    """A child's figures: median µs per call by contender and caller count."""
    figures = {
        "loop": loop_name,
        "rounds": rounds,
        "contenders": [
            {
                "key": c.key,
                "label": c.label,
                "us_per_call": {str(n): results.median_us(c.key, n) for n in CALLERS},
            }
            for c in contenders
        ],
    }
    with open(path, "w") as out:
        json.dump(figures, out)


def write_json(path: str, backends: list[str], rounds: int, quick: bool) -> None:
    """Gather the children's figures with the run's versions into one JSON file."""
    figures: dict[str, object] = {}
    for backend in backends:
        part = f"{path}.{backend}.part"
        if os.path.exists(part):  # a child that failed or was skipped wrote none
            with open(part) as data:
                figures[backend] = json.load(data)
            os.remove(part)
    dists = ("django-looptoken", "Django", "uvloop", "asgiref", "anyio", "score.asyncio")
    payload = {
        "bench": "bench_await",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "cpus_usable": sorted(os.sched_getaffinity(0)),
        "versions": {dist: version(dist) for dist in dists},
        "rounds": rounds,
        "quick": quick,
        "callers": list(CALLERS),
        "backends": figures,
    }
    with open(path, "w") as out:
        json.dump(payload, out, indent=2)
        out.write("\n")


if __name__ == "__main__":
    sys.exit(main())

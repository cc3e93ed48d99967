"""Benchmark: many callers at once, ``await_`` against a hand-written loop thread.

Run it from the repository root::

    .venv/bin/python bench/bench_scaling.py             # full run, ~10 minutes
    .venv/bin/python bench/bench_scaling.py --quick     # smoke run, ~1 minute
    .venv/bin/python bench/bench_scaling.py --callers 200 1000 --backend uvloop
    .venv/bin/python bench/bench_scaling.py --greenlets   # callers are gevent greenlets
    .venv/bin/python bench/bench_scaling.py --breakdown   # and where each call's time goes

N threads each call, over and over, a coroutine that sleeps 0-5 ms (a
network call's shape), through ``looptoken.await_`` and through a
hand-written loop thread (``asyncio.run_coroutine_threadsafe(...).result()``
on a loop of the same backend, in the same process); and the same with ten
such coroutines per call (``await_multiple`` against ``asyncio.gather``
through the hand-written thread). It reports calls per second and the p50,
p99 and p999 of each call's latency, and the app's ratio to the thread's.

With ``--breakdown`` each call is also cut in three, from marks the
coroutines take on the loop: hand-in to the first coroutine's start ("to
the loop"), the coroutines' run, sleep included ("on the loop"), and the
last one's end to the caller running again ("back to the caller"). With
``--greenlets`` the child process is gevent-patched first and the callers
are greenlets of its main thread, as in a gevent worker; the hand-written
loop thread is then a native thread, as it must be under gevent.

Rounds are interleaved and their order shuffled (seeded), as in
``bench_await.py``: every round runs every contender once at each caller
count, so a ratio compares measurements taken side by side. Each backend runs
in its own child process (Django settings are configured once per process).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any

BACKENDS = ("asyncio", "uvloop")
FULL = {"callers": [1, 8, 32, 50, 200, 1000], "rounds": 5, "seconds": 2.0}
QUICK = {"callers": [1, 32, 200], "rounds": 2, "seconds": 0.5}
MULTIPLE = 10  # children per await_multiple call


async def sleepy(seconds: float, marks: list[float] | None = None) -> float:
    """The benchmarked coroutine: a 0-5 ms wait, as a network call would.
    With ``marks`` (``--breakdown``) it notes when it started and ended."""
    if marks is not None:
        marks.append(time.perf_counter())
    await asyncio.sleep(seconds)
    if marks is not None:
        marks.append(time.perf_counter())
    return seconds


@dataclass(frozen=True)
class Contender:
    """One way of making a call; ``call(rng)`` makes one, ``twin`` names the
    contender it is compared with (the app's against the thread's)."""

    key: str
    call: Callable[[random.Random, list[float] | None], object]
    twin: str | None = None


def contenders(loop: asyncio.AbstractEventLoop) -> list[Contender]:
    """The app's calls and the hand-written thread's, on ``loop`` for the latter."""
    import django_looptoken as looptoken

    def delays(rng: random.Random, count: int) -> list[float]:
        return [rng.uniform(0, 0.005) for _ in range(count)]

    def on_thread(coro: Coroutine[Any, Any, Any]) -> object:
        return asyncio.run_coroutine_threadsafe(coro, loop).result()

    async def gathered(seconds: list[float], marks: list[float] | None) -> list[float]:
        return list(await asyncio.gather(*(sleepy(s, marks) for s in seconds)))

    return [
        Contender(
            "await_",
            lambda rng, marks: looptoken.await_(sleepy(delays(rng, 1)[0], marks)),
            "thread",
        ),
        Contender("thread", lambda rng, marks: on_thread(sleepy(delays(rng, 1)[0], marks))),
        Contender(
            f"await_multiple x{MULTIPLE}",
            lambda rng, marks: looptoken.await_multiple(
                [sleepy(s, marks) for s in delays(rng, MULTIPLE)]
            ),
            f"thread gather x{MULTIPLE}",
        ),
        Contender(
            f"thread gather x{MULTIPLE}",
            lambda rng, marks: on_thread(gathered(delays(rng, MULTIPLE), marks)),
        ),
    ]


# The parts of a call --breakdown times: hand-in to the first child's start
# on the loop, the children's run (their sleep included), the last child's
# end to the caller running again.
PARTS = ("to_loop", "on_loop", "back")


# What keeps score.asyncio's loop running in the child (it is never stopped:
# its stop path is broken, so a child that ran it leaves with os._exit).
_score_tokens: list[object] = []


def score_contenders(backend: str) -> list[Contender]:
    """score.asyncio's ``await_`` and ``await_multiple`` (the ``bench`` extra),
    or none where it is not installed."""
    try:
        import score.asyncio as sa  # type: ignore[import-untyped]
    except ImportError:
        return []
    # Importing it installs uvloop's event loop policy: put the default back.
    asyncio.set_event_loop_policy(None)
    conf = sa.init({"backend": "uvloop" if backend == "uvloop" else "builtin"})
    _score_tokens.append((conf, conf.start_loop()))

    def delays(rng: random.Random, count: int) -> list[float]:
        return [rng.uniform(0, 0.005) for _ in range(count)]

    return [
        Contender(
            "score.asyncio await_",
            lambda rng, marks: conf.await_(sleepy(delays(rng, 1)[0], marks)),
        ),
        Contender(
            f"score.asyncio await_multiple x{MULTIPLE}",  # one after another, as it does
            lambda rng, marks: conf.await_multiple(
                [sleepy(s, marks) for s in delays(rng, MULTIPLE)]
            ),
        ),
    ]


def measure(
    contender: Contender, callers: int, seconds: float, seed: int, breakdown: bool = False
) -> dict[str, float]:
    """``callers`` threads calling for ``seconds``: calls/s and latency
    quantiles (ms); with ``breakdown``, the p50 and p99 of each of ``PARTS``."""
    latencies: list[list[float]] = [[] for _ in range(callers)]
    parts: list[list[tuple[float, float, float]]] = [[] for _ in range(callers)]
    barrier = threading.Barrier(callers + 1)
    stop_at = [0.0]

    def caller(index: int) -> None:
        rng = random.Random(seed * 100_003 + index)
        mine = latencies[index]
        my_parts = parts[index]
        barrier.wait()
        deadline = stop_at[0]
        while (began := time.perf_counter()) < deadline:
            marks: list[float] | None = [] if breakdown else None
            contender.call(rng, marks)
            woke = time.perf_counter()
            mine.append(woke - began)
            if marks:
                first, last = min(marks), max(marks)
                my_parts.append((first - began, last - first, woke - last))

    threads = [threading.Thread(target=caller, args=(i,), daemon=True) for i in range(callers)]
    for thread in threads:
        thread.start()
    stop_at[0] = time.perf_counter() + seconds
    barrier.wait()
    for thread in threads:
        thread.join()
    pooled = sorted(latency for mine in latencies for latency in mine)

    def quantile(q: float) -> float:
        return pooled[min(len(pooled) - 1, int(q * len(pooled)))] * 1000

    result = {
        "calls_per_s": len(pooled) / seconds,
        "p50_ms": quantile(0.5),
        "p99_ms": quantile(0.99),
        "p999_ms": quantile(0.999),
    }
    if breakdown:
        for position, part in enumerate(PARTS):
            values = sorted(p[position] for mine in parts for p in mine)
            for q in (0.5, 0.99):
                at = values[min(len(values) - 1, int(q * len(values)))] if values else 0.0
                result[f"{part}_p{round(q * 100)}_ms"] = at * 1000
    return result


def run_child(
    backend: str,
    callers: list[int],
    rounds: int,
    seconds: float,
    *,
    breakdown: bool = False,
    greenlets: bool = False,
) -> None:
    """Measure every contender at every caller count; print JSON on stdout.
    With ``greenlets`` the process is gevent-patched first: the callers are
    greenlets of one OS thread, as in a gevent worker."""
    if greenlets:
        from gevent import monkey

        monkey.patch_all()
        _keep_the_hub_busy()
    import django
    from django.conf import settings

    settings.configure(LOOPTOKEN={"BACKEND": backend, "AUTOSTART": False}, INSTALLED_APPS=[])
    django.setup()
    import django_looptoken as looptoken
    from django_looptoken._backends import build_loop, resolve_loop_factory

    loop = build_loop(backend, resolve_loop_factory(backend))
    if greenlets:  # what a hand-written loop thread takes under gevent: a native one
        from gevent.monkey import get_original

        get_original("_thread", "start_new_thread")(loop.run_forever, ())
    else:
        threading.Thread(target=loop.run_forever, name="hand-written", daemon=True).start()
    every = contenders(loop)
    if not greenlets:  # score.asyncio's loop would be a greenlet there
        every += score_contenders(backend)
    figures: dict[str, dict[str, list[dict[str, float]]]] = {}
    shuffle = random.Random(2026)
    with looptoken.start_loop():
        for round_number in range(rounds):
            for count in callers:
                order = list(every)
                shuffle.shuffle(order)
                for contender in order:
                    result = measure(contender, count, seconds, round_number, breakdown)
                    figures.setdefault(str(count), {}).setdefault(contender.key, []).append(result)
    report = {"backend": backend, "greenlets": greenlets, "figures": figures}
    json.dump(report, sys.stdout)
    if _score_tokens:  # its loop thread never ends: leave without waiting for it
        sys.stdout.flush()
        os._exit(0)


def _keep_the_hub_busy() -> None:
    # The hand-written thread's callers block in Future.result() on a lock
    # the loop thread releases; gevent, seeing a hub with nothing scheduled,
    # would end such a wait with LoopExit. A ticking greenlet keeps it going
    # (the app's callers do not need it: they wait on the hub's async watcher).
    import gevent

    def tick() -> None:
        while True:
            gevent.sleep(0.1)

    gevent.spawn(tick)


def _ratio_cell(mine: list[float], theirs: list[float]) -> str:
    ratios = sorted(a / b for a, b in zip(mine, theirs, strict=True) if b)
    return f"{statistics.median(ratios):.2f} ({ratios[0]:.2f}-{ratios[-1]:.2f})"


def _rows(report: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """Each table row's caller count, contender and that count's figures, in ``ORDER``."""
    for count, by_key in report["figures"].items():
        for key in sorted(by_key, key=ORDER.index):
            yield count, key, by_key


def table(report: dict[str, Any]) -> str:
    """The child's figures as Markdown: medians over rounds, and the app's
    ratio to the thread's (median of per-round ratios, min-max)."""
    lines = [
        f"#### {_title(report)}",
        "",
        "| callers | contender | calls/s | p50 ms | p99 ms | p999 ms "
        "| calls/s ratio | p99 ratio | p999 ratio |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for count, key, by_key in _rows(report):
        runs = by_key[key]
        twin = next((c for c in _TWINS if c[0] == key), None)

        def median(metric: str, runs: list[dict[str, float]] = runs) -> float:
            return statistics.median(run[metric] for run in runs)

        ratios = ["", "", ""]
        if twin is not None:
            theirs = by_key[twin[1]]
            ratios = [
                _ratio_cell([r[m] for r in runs], [r[m] for r in theirs])
                for m in ("calls_per_s", "p99_ms", "p999_ms")
            ]
        cells = [
            count,
            key,
            f"{median('calls_per_s'):,.0f}",
            *(f"{median(m):.2f}" for m in ("p50_ms", "p99_ms", "p999_ms")),
            *ratios,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _title(report: dict[str, Any]) -> str:
    callers = "greenlets (gevent)" if report.get("greenlets") else "threads"
    return f"{report['backend']}, callers are {callers}"


def breakdown_table(report: dict[str, Any]) -> str:
    """Where each contender's time goes (``--breakdown``), medians over rounds."""
    lines = [
        f"#### {_title(report)}: where the time goes",
        "",
        "| callers | contender | to the loop p50 / p99 ms | on the loop p50 / p99 ms "
        "| back to the caller p50 / p99 ms |",
        "|---:|---|---:|---:|---:|",
    ]
    for count, key, by_key in _rows(report):
        cells = [count, key]
        for part in PARTS:
            p50, p99 = (
                statistics.median(run[f"{part}_{q}_ms"] for run in by_key[key])
                for q in ("p50", "p99")
            )
            cells.append(f"{p50:.2f} / {p99:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


_TWINS = [("await_", "thread"), (f"await_multiple x{MULTIPLE}", f"thread gather x{MULTIPLE}")]
ORDER = [
    "await_",
    "thread",
    "score.asyncio await_",
    f"await_multiple x{MULTIPLE}",
    f"thread gather x{MULTIPLE}",
    f"score.asyncio await_multiple x{MULTIPLE}",
]


def main(argv: list[str] | None = None) -> int:
    """Run each backend's child and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short smoke run")
    parser.add_argument("--backend", choices=BACKENDS, help="run only this backend")
    parser.add_argument("--callers", type=int, nargs="+", help="caller counts to run")
    parser.add_argument("--rounds", type=int, help="interleaved rounds")
    parser.add_argument("--seconds", type=float, help="seconds per measurement")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    parser.add_argument("--breakdown", action="store_true", help="also time each part of a call")
    parser.add_argument(
        "--greenlets",
        action="store_true",
        help="callers are greenlets of a gevent-patched process",
    )
    parser.add_argument("--child", choices=BACKENDS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    plan = dict(QUICK if args.quick else FULL)
    callers = args.callers or plan["callers"]
    rounds = args.rounds or plan["rounds"]
    seconds = args.seconds or plan["seconds"]
    if args.child:
        run_child(
            args.child,
            callers,
            rounds,
            seconds,
            breakdown=args.breakdown,
            greenlets=args.greenlets,
        )
        return 0
    machine = f"Python {platform.python_version()} on {platform.machine()}"
    print(f"{machine}, {rounds} rounds x {seconds} s per contender and caller count")
    reports = []
    for backend in [args.backend] if args.backend else list(BACKENDS):
        command = [sys.executable, __file__, "--child", backend, "--rounds", str(rounds)]
        command += ["--seconds", str(seconds), "--callers", *map(str, callers)]
        command += ["--breakdown"] * args.breakdown + ["--greenlets"] * args.greenlets
        child = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True)
        report = json.loads(child.stdout)
        reports.append(report)
        print(table(report), "\n", sep="", flush=True)
        if args.breakdown:
            print(breakdown_table(report), "\n", sep="", flush=True)
    if args.json:
        with open(args.json, "w") as out:
            json.dump(reports, out, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: many callers at once, ``await_`` against a hand-written loop thread.

Run it from the repository root::

    .venv/bin/python bench/bench_scaling.py             # full run, ~10 minutes
    .venv/bin/python bench/bench_scaling.py --quick     # smoke run, ~1 minute
    .venv/bin/python bench/bench_scaling.py --callers 200 1000 --backend uvloop

N threads each call, over and over, a coroutine that sleeps 0-5 ms (a
network call's shape), through ``looptoken.await_`` and through a
hand-written loop thread (``asyncio.run_coroutine_threadsafe(...).result()``
on a loop of the same backend, in the same process); and the same with ten
such coroutines per call (``await_multiple`` against ``asyncio.gather``
through the hand-written thread). It reports calls per second and the p50,
p99 and p999 of each call's latency, and the app's ratio to the thread's.

Rounds are interleaved and their order shuffled (seeded), as in
``bench_await.py``: every round runs every contender once at each caller
count, so a ratio compares measurements taken side by side. Each backend runs
in its own child process (Django settings are configured once per process).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import random
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

BACKENDS = ("asyncio", "uvloop")
FULL = {"callers": [1, 8, 32, 200, 1000], "rounds": 5, "seconds": 2.0}
QUICK = {"callers": [1, 32, 200], "rounds": 2, "seconds": 0.5}
MULTIPLE = 10  # children per await_multiple call


async def sleepy(seconds: float) -> float:
    """The benchmarked coroutine: a 0-5 ms wait, as a network call would."""
    await asyncio.sleep(seconds)
    return seconds


@dataclass(frozen=True)
class Contender:
    """One way of making a call; ``call(rng)`` makes one, ``twin`` names the
    contender it is compared with (the app's against the thread's)."""

    key: str
    call: Callable[[random.Random], object]
    twin: str | None = None


def contenders(loop: asyncio.AbstractEventLoop) -> list[Contender]:
    """The app's calls and the hand-written thread's, on ``loop`` for the latter."""
    import django_looptoken as looptoken

    def delays(rng: random.Random, count: int) -> list[float]:
        return [rng.uniform(0, 0.005) for _ in range(count)]

    def on_thread(coro: Coroutine[Any, Any, Any]) -> object:
        return asyncio.run_coroutine_threadsafe(coro, loop).result()

    async def gathered(seconds: list[float]) -> list[float]:
        return list(await asyncio.gather(*(sleepy(s) for s in seconds)))

    return [
        Contender("await_", lambda rng: looptoken.await_(sleepy(delays(rng, 1)[0])), "thread"),
        Contender("thread", lambda rng: on_thread(sleepy(delays(rng, 1)[0]))),
        Contender(
            f"await_multiple x{MULTIPLE}",
            lambda rng: looptoken.await_multiple([sleepy(s) for s in delays(rng, MULTIPLE)]),
            f"thread gather x{MULTIPLE}",
        ),
        Contender(
            f"thread gather x{MULTIPLE}", lambda rng: on_thread(gathered(delays(rng, MULTIPLE)))
        ),
    ]


def measure(contender: Contender, callers: int, seconds: float, seed: int) -> dict[str, float]:
    """``callers`` threads calling for ``seconds``: calls/s and latency quantiles (ms)."""
    latencies: list[list[float]] = [[] for _ in range(callers)]
    barrier = threading.Barrier(callers + 1)
    stop_at = [0.0]

    def caller(index: int) -> None:
        rng = random.Random(seed * 100_003 + index)
        mine = latencies[index]
        barrier.wait()
        deadline = stop_at[0]
        while (began := time.perf_counter()) < deadline:
            contender.call(rng)
            mine.append(time.perf_counter() - began)

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

    return {
        "calls_per_s": len(pooled) / seconds,
        "p50_ms": quantile(0.5),
        "p99_ms": quantile(0.99),
        "p999_ms": quantile(0.999),
    }


def run_child(backend: str, callers: list[int], rounds: int, seconds: float) -> None:
    """Measure every contender at every caller count; print JSON on stdout."""
    import django
    from django.conf import settings

    settings.configure(LOOPTOKEN={"BACKEND": backend, "AUTOSTART": False}, INSTALLED_APPS=[])
    django.setup()
    import django_looptoken as looptoken
    from django_looptoken._backends import build_loop, resolve_loop_factory

    loop = build_loop(backend, resolve_loop_factory(backend))
    threading.Thread(target=loop.run_forever, name="hand-written", daemon=True).start()
    every = contenders(loop)
    figures: dict[str, dict[str, list[dict[str, float]]]] = {}
    shuffle = random.Random(2026)
    with looptoken.start_loop():
        for round_number in range(rounds):
            for count in callers:
                order = list(every)
                shuffle.shuffle(order)
                for contender in order:
                    result = measure(contender, count, seconds, round_number)
                    figures.setdefault(str(count), {}).setdefault(contender.key, []).append(result)
    json.dump({"backend": backend, "figures": figures}, sys.stdout)


def _ratio_cell(mine: list[float], theirs: list[float]) -> str:
    ratios = sorted(a / b for a, b in zip(mine, theirs, strict=True) if b)
    return f"{statistics.median(ratios):.2f} ({ratios[0]:.2f}-{ratios[-1]:.2f})"


def table(report: dict[str, Any]) -> str:
    """The child's figures as Markdown: medians over rounds, and the app's
    ratio to the thread's (median of per-round ratios, min-max)."""
    lines = [
        f"#### {report['backend']}",
        "",
        "| callers | contender | calls/s | p50 ms | p99 ms | p999 ms "
        "| calls/s ratio | p99 ratio | p999 ratio |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for count, by_key in report["figures"].items():
        for key in sorted(by_key, key=ORDER.index):
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


_TWINS = [("await_", "thread"), (f"await_multiple x{MULTIPLE}", f"thread gather x{MULTIPLE}")]
ORDER = [key for pair in _TWINS for key in pair]


def main(argv: list[str] | None = None) -> int:
    """Run each backend's child and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short smoke run")
    parser.add_argument("--backend", choices=BACKENDS, help="run only this backend")
    parser.add_argument("--callers", type=int, nargs="+", help="caller counts to run")
    parser.add_argument("--rounds", type=int, help="interleaved rounds")
    parser.add_argument("--seconds", type=float, help="seconds per measurement")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    parser.add_argument("--child", choices=BACKENDS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    plan = dict(QUICK if args.quick else FULL)
    callers = args.callers or plan["callers"]
    rounds = args.rounds or plan["rounds"]
    seconds = args.seconds or plan["seconds"]
    if args.child:
        run_child(args.child, callers, rounds, seconds)
        return 0
    machine = f"Python {platform.python_version()} on {platform.machine()}"
    print(f"{machine}, {rounds} rounds x {seconds} s per contender and caller count")
    reports = []
    for backend in [args.backend] if args.backend else list(BACKENDS):
        command = [sys.executable, __file__, "--child", backend, "--rounds", str(rounds)]
        command += ["--seconds", str(seconds), "--callers", *map(str, callers)]
        child = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True)
        report = json.loads(child.stdout)
        reports.append(report)
        print(table(report), "\n", sep="", flush=True)
    if args.json:
        with open(args.json, "w") as out:
            json.dump(reports, out, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

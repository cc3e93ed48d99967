"""Benchmark: what observability costs (lag probe, watcher thread, status socket).

Run it from the repository root::

    .venv/bin/python bench/bench_status.py            # full run, about two minutes
    .venv/bin/python bench/bench_status.py --quick    # smoke run, about 30 s

Three measurements, each loop backend in its own child processes:

* idle CPU: two processes side by side, each holding an idle shared loop, one
  with the monitor (probe, watcher, socket) and one without; each reports the
  CPU time (user + system, all threads, ``getrusage``) it used over the same
  idle window, as a percentage of one core; medians over rounds;
* ``await_`` microseconds per call of a one-suspension coroutine with and
  without the monitor, interleaved round by round in one process (the loop is
  restarted for each round, with or without the monitor's start hook), as
  ``bench_await.py`` does; the ratio is the median of per-round ratios;
* a status request's round trip (``ask()``: connect, request, answer) on an
  idle loop, and one ``collect()`` of the status directory (what
  ``loopstatus`` does per refresh), in milliseconds.

Targets (from the issue): under 1% of one core idle, no measurable ``await_``
latency, a status request under 5 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from typing import Any

BACKENDS = ("asyncio", "uvloop")


async def triv() -> int:
    """The benchmarked coroutine: one suspension, then a result."""
    await asyncio.sleep(0)
    return 1


# -- in the child ------------------------------------------------------------------


def _setup(backend: str, status_dir: str) -> None:
    sys.path.insert(0, os.getcwd())
    import django
    from django.conf import settings

    settings.configure(
        LOOPTOKEN={"BACKEND": backend, "AUTOSTART": False, "STATUS_DIR": status_dir},
        INSTALLED_APPS=["django_looptoken"],
    )
    django.setup()


def _monitor(on: bool) -> None:
    """Put the monitor's start hook in place, or take it out (for the next loop)."""
    from django_looptoken import _loop_run, _status

    hooks = _loop_run.started_hooks
    if on and _status._start_monitor not in hooks:
        hooks.append(_status._start_monitor)
    elif not on and _status._start_monitor in hooks:
        hooks.remove(_status._start_monitor)


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def child_idle(backend: str, on: bool, seconds: float, start_at: float) -> dict[str, float]:
    """Hold an idle loop; return the CPU used over ``seconds`` from ``start_at``."""
    import django_looptoken as looptoken

    _monitor(on)
    with looptoken.start_loop():
        time.sleep(max(start_at - time.time(), 0))  # both children measure together
        cpu, wall = _cpu_seconds(), time.monotonic()
        time.sleep(seconds)
        cpu, wall = _cpu_seconds() - cpu, time.monotonic() - wall
    return {"cpu_percent": 100 * cpu / wall}


def _per_call_us(target_s: float) -> float:
    import django_looptoken as looptoken

    await_ = looptoken.await_
    for _ in range(200):
        await_(triv())
    calls, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < target_s:
        for _ in range(100):
            await_(triv())
        calls += 100
    return 1e6 * elapsed / calls


def child_await(backend: str, rounds: int, target_s: float, status_dir: str) -> dict[str, Any]:
    """await_ with and without the monitor, interleaved; then status round trips."""
    import django_looptoken as looptoken
    from django_looptoken._status import project
    from django_looptoken._status_socket import ask, collect, socket_path

    figures: dict[bool, list[float]] = {True: [], False: []}
    ratios = []
    for round_ in range(rounds):
        order = (True, False) if round_ % 2 == 0 else (False, True)
        for on in order:
            _monitor(on)
            with looptoken.start_loop():
                figures[on].append(_per_call_us(target_s))
        ratios.append(figures[True][-1] / figures[False][-1])
    _monitor(True)
    ask_ms, collect_ms = [], []
    with looptoken.start_loop():
        path = socket_path(status_dir, os.getpid(), project())
        for _ in range(50):
            ask(path)
        for _ in range(500 if target_s > 0.03 else 100):
            start = time.perf_counter()
            ask(path)
            ask_ms.append(1000 * (time.perf_counter() - start))
        for _ in range(100 if target_s > 0.03 else 20):
            start = time.perf_counter()
            listing = collect(status_dir)
            collect_ms.append(1000 * (time.perf_counter() - start))
            assert len(listing.processes) == 1
    return {
        "on_us": statistics.median(figures[True]),
        "off_us": statistics.median(figures[False]),
        "ratio": statistics.median(ratios),
        "ratio_range": [min(ratios), max(ratios)],
        "ask_ms": _quantiles(ask_ms),
        "collect_ms": _quantiles(collect_ms),
    }


def _quantiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "p50": statistics.median(ordered),
        "p99": ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))],
        "max": ordered[-1],
    }


def child_main(args: argparse.Namespace) -> None:
    """Run one measurement and print its JSON."""
    with tempfile.TemporaryDirectory(prefix="bench-status-") as tmp:
        status_dir = os.path.join(tmp, "status")
        _setup(args.backend, status_dir)
        if args.child == "idle":
            result = child_idle(args.backend, args.monitor == "on", args.seconds, args.start_at)
        else:
            result = child_await(args.backend, args.rounds, args.target_ms / 1000, status_dir)
    print(json.dumps(result), flush=True)


# -- in the parent -----------------------------------------------------------------


def _spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, __file__, *args], stdout=subprocess.PIPE, text=True, cwd=os.getcwd()
    )


def _result(process: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
    out, _ = process.communicate(timeout=timeout)
    if process.returncode != 0:
        raise SystemExit(f"a benchmark child failed (exit code {process.returncode})")
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def parent_main(args: argparse.Namespace) -> None:
    """Run the children for each backend and print Markdown tables."""
    quick = args.quick
    idle_rounds, idle_seconds = (2, 3.0) if quick else (5, 10.0)
    await_rounds, target_ms = (6, 20.0) if quick else (30, 75.0)
    versions = ", ".join(
        f"{name} {metadata.version(name)}" for name in ("django", "uvloop", "asgiref")
    )
    print(f"Python {platform.python_version()}, {versions}, {os.cpu_count()} CPUs.\n")
    for backend in BACKENDS:
        print(f"#### Backend: {backend}\n")
        cpu: dict[str, list[float]] = {"on": [], "off": []}
        for _ in range(idle_rounds):
            start_at = time.time() + 3.0
            children = {
                mode: _spawn(
                    "--child", "idle", "--backend", backend, "--monitor", mode,
                    "--seconds", str(idle_seconds), "--start-at", str(start_at),
                )
                for mode in ("on", "off")
            }  # fmt: skip
            for mode, process in children.items():
                cpu[mode].append(_result(process, idle_seconds + 60)["cpu_percent"])
        timing = _result(
            _spawn(
                "--child", "await", "--backend", backend,
                "--rounds", str(await_rounds), "--target-ms", str(target_ms),
            ),
            600,
        )  # fmt: skip
        on_cpu, off_cpu = statistics.median(cpu["on"]), statistics.median(cpu["off"])
        low, high = timing["ratio_range"]
        print(
            f"Idle: {idle_rounds} rounds of {idle_seconds:g} s, both processes side by side. "
            f"await_: {await_rounds} interleaved rounds of ~{target_ms:g} ms each.\n"
        )
        print("| measure | monitor on | monitor off |")
        print("|---|---:|---:|")
        print(f"| idle CPU, % of one core (median) | {on_cpu:.3f} | {off_cpu:.3f} |")
        print(f"| `await_` µs/call (median) | {timing['on_us']:.1f} | {timing['off_us']:.1f} |")
        ask_ms, collect_ms = timing["ask_ms"], timing["collect_ms"]
        print()
        print("| status request | p50 ms | p99 ms | max ms |")
        print("|---|---:|---:|---:|")
        for label, q in (("`ask()` round trip", ask_ms), ("`collect()` of 1 socket", collect_ms)):
            print(f"| {label} | {q['p50']:.3f} | {q['p99']:.3f} | {q['max']:.3f} |")
        print()
        cost = on_cpu - off_cpu
        ratio = timing["ratio"]
        print("Targets:\n")
        print(f"- {_mark(cost < 1.0)}: probe + socket idle cost < 1% of one core: {cost:+.3f}%")
        print(
            f"- {_mark(ratio <= 1.05)}: `await_` on/off ratio <= 1.05 (median of per-round "
            f"ratios): {ratio:.3f} (range {low:.2f}-{high:.2f})"
        )
        print(f"- {_mark(ask_ms['p50'] < 5.0)}: status request < 5 ms: {ask_ms['p50']:.3f} ms\n")


def _mark(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def main() -> None:
    """Parse the arguments; run as the parent or as a child."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--child", choices=("idle", "await"), help=argparse.SUPPRESS)
    parser.add_argument("--backend", choices=BACKENDS, help=argparse.SUPPRESS)
    parser.add_argument("--monitor", choices=("on", "off"), help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--start-at", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--target-ms", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_main(args)
    else:
        parent_main(args)


if __name__ == "__main__":
    main()

"""Benchmark: one Prometheus scrape of 16 workers, as the metrics view answers it.

Run it from the repository root::

    .venv/bin/python bench/bench_scrape.py            # about 30 s
    .venv/bin/python bench/bench_scrape.py --quick    # about 15 s

Starts 16 worker processes of one project, each with a shared loop and its
status socket, then times what ``django_looptoken.urls``' ``metrics`` view
does per scrape: ask every socket (``StatusReport.gather()``) and write the
exposition (prometheus_client), in this process. Twice: with every loop
idle, and with one worker's loop blocked in ``time.sleep`` (its socket's
thread answers anyway). The goal is under 100 ms per scrape. The workers
are stopped by their pids (their input ends) when it is done.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORKERS = 16  # by default; --workers N
PROJECT = "bench.scrape"  # the settings module every process reports


def _setup(status_dir: str) -> None:
    sys.path.insert(0, str(ROOT))
    os.environ["DJANGO_SETTINGS_MODULE"] = PROJECT  # the project each status names
    import django
    from django.conf import settings

    settings.configure(
        INSTALLED_APPS=["django_looptoken"],
        LOOPTOKEN={"AUTOSTART": False, "BACKEND": "uvloop", "STATUS_DIR": status_dir},
    )
    django.setup()


def worker(status_dir: str) -> None:
    """A worker: a loop until stdin ends; ``block`` holds it in time.sleep."""
    _setup(status_dir)
    import django_looptoken as looptoken

    release = threading.Event()

    async def hold_the_loop() -> None:
        while not release.is_set():
            time.sleep(0.01)  # noqa: ASYNC251 - what a blocked loop does

    with looptoken.start_loop():
        print("ready", flush=True)
        for line in sys.stdin:
            if line.strip() == "block":
                looptoken.spawn(hold_the_loop())
                print("blocked", flush=True)
        release.set()


def scrape_ms(scrapes: int, workers: int) -> list[float]:
    """How long each of ``scrapes`` scrapes took, in ms."""
    from django_looptoken import _metrics
    from django_looptoken._status_report import StatusReport

    times = []
    for _ in range(scrapes):
        began = time.perf_counter()
        report = StatusReport.gather()
        body, _ = _metrics.exposition(report)
        times.append(1000 * (time.perf_counter() - began))
        assert len(report.processes) == workers, (report.processes, report.listing.silent)
        assert body.count(b"\nlooptoken_loop_running{") == workers
    return times


def row(label: str, times: list[float]) -> str:
    ordered = sorted(times)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return f"| {label} | {statistics.median(ordered):.1f} | {p99:.1f} | {ordered[-1]:.1f} |"


def main() -> None:
    """Parse the arguments; run the workers and the scrapes, print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer scrapes")
    parser.add_argument("--workers", type=int, default=WORKERS, help="how many (16)")
    parser.add_argument("--worker", metavar="STATUS_DIR", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker)
        return
    scrapes = 20 if args.quick else 100
    with tempfile.TemporaryDirectory(prefix="bench-scrape-") as tmp:
        status_dir = os.path.join(tmp, "status")
        _setup(status_dir)
        workers = [
            subprocess.Popen(
                [sys.executable, __file__, "--worker", status_dir],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(args.workers)
        ]
        try:
            for process in workers:
                assert process.stdout is not None
                assert process.stdout.readline() == "ready\n"
            idle = scrape_ms(scrapes, args.workers)
            blocked_one = workers[0]
            assert blocked_one.stdin is not None
            assert blocked_one.stdout is not None
            blocked_one.stdin.write("block\n")
            blocked_one.stdin.flush()
            assert blocked_one.stdout.readline() == "blocked\n"
            blocked = scrape_ms(scrapes, args.workers)
        finally:
            for process in workers:
                if process.stdin is not None:
                    process.stdin.close()
            for process in workers:
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(10)
    print(f"Python {platform.python_version()}, {os.cpu_count()} CPUs, {scrapes} scrapes each.\n")
    print(f"| {args.workers} workers | p50 ms | p99 ms | max ms |")
    print("|---|---:|---:|---:|")
    print(row("every loop idle", idle))
    print(row("one loop blocked in `time.sleep`", blocked))
    worst = max(statistics.median(idle), statistics.median(blocked))
    print(f"\n- {'PASS' if worst < 100 else 'FAIL'}: a scrape under 100 ms: {worst:.1f} ms (p50)")


if __name__ == "__main__":
    main()

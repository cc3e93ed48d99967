"""Benchmark: a gunicorn worker's instructions per request, counted exactly.

Run it from the repository root (needs ``valgrind``: ``apt-get install valgrind``)::

    .venv/bin/python bench/bench_instructions.py            # about 10 minutes
    .venv/bin/python bench/bench_instructions.py --quick    # about 5 minutes
    .venv/bin/python bench/bench_instructions.py --only trivial

Requests per second on this shared 2-vCPU machine scatter by 10% from one
second to the next, so ``bench_e2e.py`` cannot resolve a difference of a few
percent: two identical contenders tie there. Instructions can: callgrind
counts them, and the count is the same whatever else the machine is doing.
Two parts, on the sites of ``bench/e2e_site``:

* ``trivial``: the issue's "the middleware costs under 3%". A trivial sync
  view on ``plain`` (Django alone) and on ``looptoken`` (the app and
  ``LoopTokenMiddleware``), 1,000 requests counted.
* ``fetching``: what each way of fanning out to the upstream costs per
  request with aiohttp's client: the hand-written loop thread (``plain``)
  against ``@runs_async``, ``ASYNC_VIEWS`` and ``await_multiple``
  (``looptoken``), 200 requests counted, the upstream (``bench/upstream.py``,
  20 ms) running outside callgrind. No verdict: the issue's targets for these
  are requests/s and p99, which ``bench_e2e.py`` judges.

For each it starts one gunicorn gthread worker under callgrind on a free
127.0.0.1 port, sends warm-up requests, then ``N`` requests one after
another over one keep-alive connection, stops the server by its pid and
reads the worker's instruction total. Two runs with different ``N`` cancel
start-up and shutdown: the difference divided by the difference in ``N`` is
the worker's instructions per request, everything included (gunicorn's
parsing and socket calls, Django, the app, the loop and the client). The
kernel's share (system calls, context switches) is not in it.

The shared loop's lag probe and watcher thread tick on a clock, not per
request; under callgrind every request takes ~50x longer, so they would be
counted ~50x per request. The ``looptoken`` site here runs them 10x less
often while the loop has tasks (``SLOW_CALLBACK_DURATION`` 1 s, no
watchdog; with no task the probe ticks once a second anyway), which leaves
what the app costs per request. (Their own cost is ``bench_status.py``'s:
under 0.05% of one core idle, 0.3% while the loop has tasks.)
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import httpx
from bench_e2e import Fleet, listening_socket, spawn, start_upstream, stop_on_sigterm

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 300.0  # gunicorn boots 50x slower under callgrind
LIMIT = 0.03
UPSTREAM_DELAY = 0.02
POOL = 160  # as bench_e2e sizes it; sequential requests use 10 connections


@dataclass(frozen=True)
class View:
    """One view to count: its site, its path, its label."""

    site: str
    path: str
    label: str


TRIVIAL = (
    View("plain", "trivial/", "Django alone"),
    View("looptoken", "trivial/", "app + `LoopTokenMiddleware`"),
)
FETCHING = (
    View("plain", "thread/aiohttp/", "3. hand-written loop thread"),
    View("looptoken", "runs_async/aiohttp/", "4. `@runs_async` + `loop_resource`"),
    View("looptoken", "async_views/aiohttp/", "5. `ASYNC_VIEWS` `async def` view"),
    View("looptoken", "await_multiple/aiohttp/", "6. `await_multiple` from a sync view"),
)
# (warm-up, low N, high N) per part; quick runs count fewer requests.
FULL_COUNTS = {"trivial": (50, 200, 1200), "fetching": (20, 20, 220)}
QUICK_COUNTS = {"trivial": (50, 100, 400), "fetching": (20, 20, 70)}


def worker_instructions(
    fleet: Fleet, view: View, warmup: int, requests: int, outdir: Path, upstream: str
) -> int:
    """The gunicorn worker's instruction total after ``requests`` requests to ``view``."""
    sock = listening_socket()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/{view.path}"
    pattern = f"cg.{view.site}.{view.path.replace('/', '_')}{requests}"
    env = {
        **os.environ,
        "E2E_MODE": view.site,
        "E2E_UPSTREAM": upstream,
        "E2E_POOL": str(POOL),
        "DJANGO_SETTINGS_MODULE": "bench.e2e_site.settings_callgrind",
        "PYTHONPATH": str(ROOT),
    }
    command = [
        "valgrind",
        "--tool=callgrind",
        f"--callgrind-out-file={outdir}/{pattern}.%p",
        str(Path(sys.executable).parent / "gunicorn"),
        *("-k", "gthread", "--workers", "1", "--threads", "4"),
        *("--bind", f"fd://{sock.fileno()}"),
        "bench.e2e_site.wsgi:application",
    ]
    server = spawn(fleet, pattern, command, env, [sock], outdir)
    try:
        # The socket listens already: the first request waits for the worker
        # to boot (50x slower under callgrind) rather than polling for it.
        with httpx.Client(timeout=START_TIMEOUT_S) as client:
            for _ in range(1 + warmup + requests):
                client.get(url).raise_for_status()
    except httpx.HTTPError as exc:
        raise RuntimeError(
            f"gunicorn under callgrind did not serve {url}:\n{server.output()}"
        ) from exc
    finally:
        server.terminate()
        server.wait_stopped(START_TIMEOUT_S)
    # One output file per process: the master's and the worker's; the
    # worker is the one that served, so it executed more.
    return max(totals(path) for path in outdir.glob(f"{pattern}.[0-9]*"))


def totals(path: Path) -> int:
    """The instruction total from a callgrind output file."""
    for line in path.read_text().splitlines():
        if line.startswith(("totals:", "summary:")):
            return int(line.split()[1])
    raise RuntimeError(f"no totals in {path}")


def per_request(
    fleet: Fleet,
    views: tuple[View, ...],
    counts: tuple[int, int, int],
    outdir: Path,
    upstream: str,
) -> dict[View, float]:
    """Each view's worker instructions per request (two runs, differenced)."""
    warmup, low, high = counts
    found: dict[View, float] = {}
    for view in views:
        runs = [worker_instructions(fleet, view, warmup, n, outdir, upstream) for n in (low, high)]
        found[view] = (runs[1] - runs[0]) / (high - low)
        print(f"[{view.site} {view.path}] {found[view]:,.0f} instructions per request", flush=True)
    return found


def trivial_report(found: dict[View, float], counted: int) -> list[str]:
    """The trivial view's table and the middleware's verdict."""
    plain, app = (found[view] for view in TRIVIAL)
    ratio = app / plain
    verdict = "PASS" if ratio - 1 < LIMIT else "FAIL"
    return [
        "| site | instructions per trivial request (gunicorn gthread worker) |",
        "|---|---:|",
        *(f"| {view.label} | {found[view]:,.0f} |" for view in TRIVIAL),
        "",
        f"- {verdict}: app + LoopTokenMiddleware on a trivial sync view costs < 3% "
        f"(+{(ratio - 1) * 100:.1f}% instructions per request, {counted} requests counted)",
    ]


def fetching_report(found: dict[View, float], counted: int) -> list[str]:
    """The fetching views' table, each against the hand-written thread."""
    thread = found[FETCHING[0]]
    rows = [
        f"| {view.label} | {found[view]:,.0f} | "
        + ("" if view is FETCHING[0] else f"{(found[view] / thread - 1) * 100:+.1f}%")
        + " |"
        for view in FETCHING
    ]
    return [
        f"| view (aiohttp client, 10 items, {counted} requests counted) "
        "| instructions per request | vs the thread |",
        "|---|---:|---:|",
        *rows,
    ]


def main(argv: list[str] | None = None) -> int:
    """Count the chosen parts; print their tables (and the middleware's verdict)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests")
    parser.add_argument("--only", choices=("trivial", "fetching"), help="one part only")
    args = parser.parse_args(argv)
    counts = QUICK_COUNTS if args.quick else FULL_COUNTS
    parts = [args.only] if args.only else ["trivial", "fetching"]
    report: list[str] = []
    stop_on_sigterm()
    fleet = Fleet()
    with tempfile.TemporaryDirectory(prefix="bench-instructions-") as tmp:
        try:
            upstream = start_upstream(fleet, UPSTREAM_DELAY, Path(tmp)).url
            for part in parts:
                views = TRIVIAL if part == "trivial" else FETCHING
                found = per_request(fleet, views, counts[part], Path(tmp), upstream)
                counted = counts[part][2] - counts[part][1]
                make = trivial_report if part == "trivial" else fetching_report
                report += ["", *make(found, counted)]
        finally:
            fleet.stop()
    print("\n".join(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Benchmark: what the app and its middleware cost a trivial sync view, counted exactly.

Run it from the repository root (needs ``valgrind``: ``apt-get install valgrind``)::

    .venv/bin/python bench/bench_middleware.py            # about 6 minutes
    .venv/bin/python bench/bench_middleware.py --quick    # about 3 minutes

Requests per second on this shared 2-vCPU machine scatter by 10% from one
second to the next, so ``bench_e2e.py`` cannot resolve the issue's "the
middleware costs under 3%". Instructions can: callgrind counts them, and the
count is the same whatever else the machine is doing.

For each site of ``bench/e2e_site`` (``plain``: Django alone; ``looptoken``:
the app and ``LoopTokenMiddleware``) it starts one gunicorn gthread worker
under callgrind on a free 127.0.0.1 port, sends 50 warm-up requests, then
``N`` requests to the trivial view over one keep-alive connection, stops the
server by its pid and reads the worker's instruction total. Two runs with
different ``N`` cancel start-up and shutdown: the difference divided by the
difference in ``N`` is the worker's instructions per request, everything
included (gunicorn's parsing and socket calls, Django, the app).

The shared loop's lag probe and watcher thread tick on a clock, not per
request; under callgrind every request takes ~50x longer, so they would be
counted ~50x per request. The ``looptoken`` site here runs them 10x less
often (``SLOW_CALLBACK_DURATION`` 1 s, no watchdog), which leaves what the
app costs per request. (Their own cost is ``bench_status.py``'s: 0.3% of one
core, idle or not.)
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
SITES = ("plain", "looptoken")
WARMUP = 50
FULL_COUNTS = (200, 1200)
QUICK_COUNTS = (100, 400)
START_TIMEOUT_S = 300.0  # gunicorn boots 50x slower under callgrind
LIMIT = 0.03


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def worker_instructions(site: str, requests: int, outdir: Path) -> int:
    """The gunicorn worker's instruction total after ``requests`` trivial requests."""
    port = free_port()
    pattern = f"cg.{site}.{requests}"
    env = {
        **os.environ,
        "E2E_MODE": site,
        "DJANGO_SETTINGS_MODULE": "bench.e2e_site.settings_callgrind",
        "PYTHONPATH": str(ROOT),
    }
    command = [
        "valgrind",
        "--tool=callgrind",
        f"--callgrind-out-file={outdir}/{pattern}.%p",
        str(Path(sys.executable).parent / "gunicorn"),
        *("-k", "gthread", "--workers", "1", "--threads", "4"),
        *("--bind", f"127.0.0.1:{port}"),
        "bench.e2e_site.wsgi:application",
    ]
    server = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        url = f"http://127.0.0.1:{port}/trivial/"
        with httpx.Client(timeout=60) as client:
            wait_serving(client, url, server)
            for _ in range(WARMUP + requests):
                client.get(url).raise_for_status()
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(START_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    # One output file per process: the master's and the worker's; the
    # worker is the one that served, so it executed more.
    return max(totals(path) for path in outdir.glob(f"{pattern}.*"))


def wait_serving(client: httpx.Client, url: str, server: subprocess.Popen[bytes]) -> None:
    """Poll ``url`` until it answers; fail if the server exits or takes too long."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        with contextlib.suppress(httpx.TransportError):
            client.get(url).raise_for_status()
            return
        if server.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"gunicorn under callgrind did not serve {url}")
        time.sleep(0.5)


def totals(path: Path) -> int:
    """The instruction total from a callgrind output file."""
    for line in path.read_text().splitlines():
        if line.startswith(("totals:", "summary:")):
            return int(line.split()[1])
    raise RuntimeError(f"no totals in {path}")


def main(argv: list[str] | None = None) -> int:
    """Measure both sites; print the table and the verdict."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests")
    args = parser.parse_args(argv)
    low, high = QUICK_COUNTS if args.quick else FULL_COUNTS
    per_request: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-middleware-") as tmp:
        for site in SITES:
            counts = [worker_instructions(site, n, Path(tmp)) for n in (low, high)]
            per_request[site] = (counts[1] - counts[0]) / (high - low)
            print(f"[{site}] {per_request[site]:,.0f} instructions per request", flush=True)
    ratio = per_request["looptoken"] / per_request["plain"]
    print()
    print("| site | instructions per trivial request (gunicorn gthread worker) |")
    print("|---|---:|")
    print(f"| Django alone | {per_request['plain']:,.0f} |")
    print(f"| app + `LoopTokenMiddleware` | {per_request['looptoken']:,.0f} |")
    print()
    verdict = "PASS" if ratio - 1 < LIMIT else "FAIL"
    print(
        f"- {verdict}: app + LoopTokenMiddleware on a trivial sync view costs < 3% "
        f"(+{(ratio - 1) * 100:.1f}% instructions per request, {high - low} requests counted)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

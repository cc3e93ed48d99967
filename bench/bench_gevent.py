"""Benchmark: concurrent requests of one gevent worker (or eventlet server) waiting on the loop.

Run it from the repository root::

    .venv/bin/python bench/bench_gevent.py             # 10 rounds
    .venv/bin/python bench/bench_gevent.py --server eventlet
    .venv/bin/python bench/bench_gevent.py --rounds 2 --requests 50

One gunicorn worker (``-k gevent --worker-connections 1000``), or eventlet's
WSGI server, serves ``bench/gevent_site``: each request's greenlet calls
``looptoken.await_`` on a 200 ms coroutine, side by side with a view that
sleeps 200 ms on the hub alone (the floor). Each round sends
``--requests`` requests at once (aiohttp) and times the batch; the
worker's own ticker greenlet (every 2 ms) reports the hub's longest stall
in the round. Goal: 200 requests in about 0.2 s, as the
floor, with no stall over 20 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A free port on 127.0.0.1."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_worker(port: int, server: str) -> subprocess.Popen[bytes]:
    """One gunicorn gevent worker (or eventlet's server) serving the bench
    site; returns once it answers."""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "bench.gevent_site.settings"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    if server == "eventlet":
        command = [sys.executable, "-m", "bench.gevent_site.eventlet_serve", str(port)]
    else:
        command = [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}"]
        command += ["-k", "gevent", "-w", "1", "--worker-connections", "1000"]
        command += ["bench.gevent_site.wsgi:application"]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/stall/", timeout=1)
            return process
        except httpx.TransportError:
            time.sleep(0.05)  # bounded by the deadline; the port opening is the event
    process.kill()
    raise RuntimeError(f"{server}'s server did not answer within 30 s")


PATHS = {"await_": "sleep/", "hub's own sleep": "hub-sleep/"}


async def one_round(
    session: aiohttp.ClientSession, base: str, path: str, requests: int
) -> tuple[float, float]:
    """Send ``requests`` to ``path`` at once; the batch's wall time (s) and
    the hub's longest stall meanwhile (ms)."""

    async def get(path: str) -> Any:
        async with session.get(base + path) as response:
            assert response.status == 200, await response.text()
            return await response.json()

    await get("stall/")  # resets the worker's record
    began = time.perf_counter()
    await asyncio.gather(*(get(path) for _ in range(requests)))
    wall = time.perf_counter() - began
    return wall, (await get("stall/"))["stall_ms"]


async def measure(port: int, rounds: int, requests: int) -> dict[str, list[tuple[float, float]]]:
    """Each contender's wall time and stall per round, rounds interleaved,
    after one warm-up round of each."""
    base = f"http://127.0.0.1:{port}/"
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in PATHS}
    connector = aiohttp.TCPConnector(limit=requests + 1)
    async with aiohttp.ClientSession(connector=connector) as session:
        for path in PATHS.values():
            await one_round(session, base, path, requests)
        for _ in range(rounds):
            for name, path in PATHS.items():
                results[name].append(await one_round(session, base, path, requests))
    return results


def main() -> None:
    """Run the rounds, print the table (and write JSON with ``--json``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--server", choices=["gevent", "eventlet"], default="gevent")
    args = parser.parse_args()
    port = free_port()
    worker = start_worker(port, args.server)
    try:
        results = asyncio.run(measure(port, args.rounds, args.requests))
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)
    python = platform.python_version()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {python}")
    print(f"{args.server}; {args.requests} requests at once, {args.rounds} rounds")
    print("| the request waits with | wall time, median (min-max) | hub's longest stall, max |")
    print("|---|---|---|")
    for name, rows in results.items():
        walls = [wall * 1000 for wall, _ in rows]
        stalls = [stall for _, stall in rows]
        print(
            f"| {name} | {statistics.median(walls):.0f} ms ({min(walls):.0f}-{max(walls):.0f}) "
            f"| {max(stalls):.1f} ms |"
        )
    if args.json:
        report = {"server": args.server, "requests": args.requests, "results": results}
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

"""Streamed responses under WSGI: time to first byte and total time, and iterate()'s cost per item.

Run from the repository root (about a minute)::

    python bench/bench_stream.py [--rounds 5]

Part 1 relays a streamed response from an aiohttp upstream through one
gunicorn gthread worker (4 threads), one request at a time, three ways:

* ``looptoken``: an ``async def`` view returning a ``StreamingHttpResponse``
  over an async generator, with the app and ``LoopTokenMiddleware``: each
  chunk is fetched through ``iterate()`` when gunicorn writes the previous one.
* ``django``: the same view with Django alone, which collects the whole
  async stream with ``async_to_sync`` before the first byte goes out.
* ``thread``: no app; a sync view with a hand-written loop thread that
  fetches each chunk with ``asyncio.run_coroutine_threadsafe``.

Two loads: ``events``, 20 chunks of 1 KiB 50 ms apart (server-sent events,
an LLM's tokens), and ``bulk``, 64 MiB in 64 KiB chunks as fast as they come
(a proxied download). Each view opens its own aiohttp session inside the
generator, so all three do the same upstream work.

Part 2, in this process: the cost per item of ``iterate()`` over an async
generator, against ``await_(agen.__anext__())`` per item and
``run_coroutine_threadsafe(...).result()`` per item on the same loop.

This file is also the benchmark site (settings, URLs, views, WSGI
application) when ``BENCH_STREAM_SITE`` names a contender, and the upstream
with ``--upstream``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CONTENDERS = ("looptoken", "django", "thread")
LOADS = {
    # name: (chunks, chunk bytes, seconds between chunks)
    "events": (20, 1024, 0.05),
    "bulk": (1024, 64 * 1024, 0.0),
}
ITEMS = 20_000  # part 2

# -- the site (imported by gunicorn with BENCH_STREAM_SITE set) ---------------------

SITE = os.environ.get("BENCH_STREAM_SITE", "")
UPSTREAM = os.environ.get("BENCH_STREAM_UPSTREAM", "")
SECRET_KEY = "benchmark-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1"]
USE_TZ = True
DATABASES: dict[str, Any] = {}
ROOT_URLCONF = "bench.bench_stream"
INSTALLED_APPS = ["django_looptoken"] if SITE == "looptoken" else []
MIDDLEWARE = ["django_looptoken.middleware.LoopTokenMiddleware"] if SITE == "looptoken" else []
LOOPTOKEN = {"BACKEND": os.environ.get("BENCH_STREAM_BACKEND", "auto")}
LOGGING_CONFIG = None


async def relayed(query: str) -> AsyncIterator[bytes]:
    """The upstream's stream, chunk by chunk, through a session of its own."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{UPSTREAM}/stream?{query}") as upstream,
    ):
        async for chunk in upstream.content.iter_any():
            yield chunk


async def async_relay(request: Any) -> Any:
    """The ``looptoken`` and ``django`` contenders' view."""
    from django.http import StreamingHttpResponse

    return StreamingHttpResponse(relayed(request.GET.urlencode()))


_thread_loop: asyncio.AbstractEventLoop | None = None
_thread_lock = threading.Lock()


def _loop_thread() -> asyncio.AbstractEventLoop:
    global _thread_loop
    with _thread_lock:
        if _thread_loop is None:
            _thread_loop = asyncio.new_event_loop()
            threading.Thread(target=_thread_loop.run_forever, daemon=True).start()
        return _thread_loop


def thread_relay(request: Any) -> Any:
    """The ``thread`` contender's view: a loop thread, one future per chunk."""
    from django.http import StreamingHttpResponse

    loop = _loop_thread()
    source = relayed(request.GET.urlencode())

    def chunks() -> Iterator[bytes]:
        try:
            while True:
                try:
                    yield asyncio.run_coroutine_threadsafe(_next(source), loop).result()
                except StopAsyncIteration:
                    return
        finally:
            asyncio.run_coroutine_threadsafe(source.aclose(), loop).result()

    return StreamingHttpResponse(chunks())


async def _next(source: AsyncIterator[bytes]) -> bytes:
    return await source.__anext__()


if SITE:
    import warnings

    import aiohttp  # here, not on the loop at the first request
    from django.urls import path

    # Once per process, for the django contender: what this benchmark measures.
    warnings.filterwarnings("ignore", "StreamingHttpResponse must consume asynchronous")

    urlpatterns = [path("relay/", thread_relay if SITE == "thread" else async_relay)]

    from django.core.wsgi import get_wsgi_application

    application = get_wsgi_application()


# -- the upstream (run as ``bench_stream.py --upstream``) ----------------------------


def serve_upstream(fd: int) -> None:
    """``/stream?chunks=N&size=B&delay=S`` on the listening socket ``fd``, until SIGTERM."""
    import signal

    from aiohttp import web

    async def stream(request: web.Request) -> web.StreamResponse:
        chunks, size = int(request.query["chunks"]), int(request.query["size"])
        delay = float(request.query["delay"])
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for _ in range(chunks):
            if delay:
                await asyncio.sleep(delay)
            await response.write(b"x" * size)
        await response.write_eof()
        return response

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/stream", stream)
        runner = web.AppRunner(app, handle_signals=False)
        await runner.setup()
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        site = web.SockSite(runner, socket.socket(fileno=fd))
        await site.start()
        await stop.wait()
        await runner.cleanup()

    asyncio.run(main())


# -- measuring --------------------------------------------------------------------------


def listening_socket() -> socket.socket:
    sock = socket.create_server(("127.0.0.1", 0))
    sock.set_inheritable(True)
    return sock


def wait_serving(url: str, process: subprocess.Popen[bytes], deadline_s: float = 60) -> None:
    import httpx

    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url} exited with {process.returncode}")
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.TransportError:
            time.sleep(0.05)  # polling a server starting up, bounded by the deadline
    raise RuntimeError(f"{url} did not answer in {deadline_s} s")


@contextmanager
def started(
    command: list[str], env: dict[str, str], fds: tuple[int, ...] = ()
) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(command, cwd=ROOT, env=env, pass_fds=fds)
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def start_site(stack: ExitStack, contender: str, upstream: str) -> str:
    """gunicorn serving ``contender``; returns its relay URL once it answers."""
    sock = listening_socket()
    port = sock.getsockname()[1]
    env = {
        **os.environ,
        "BENCH_STREAM_SITE": contender,
        "BENCH_STREAM_UPSTREAM": upstream,
        "DJANGO_SETTINGS_MODULE": "bench.bench_stream",
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    env.pop("PYTHONDEVMODE", None)
    command = [
        *(sys.executable, "-m", "gunicorn", "--bind", f"fd://{sock.fileno()}"),
        *("--worker-class", "gthread", "--workers", "1", "--threads", "4"),
        *("--log-level", "warning", "bench.bench_stream:application"),
    ]
    process = stack.enter_context(started(command, env, (sock.fileno(),)))
    sock.close()
    url = f"http://127.0.0.1:{port}/relay/"
    wait_serving(url + "?chunks=1&size=1&delay=0", process)
    return url


def one_request(url: str, load: str) -> tuple[float, float, int]:
    """Seconds to the first body byte, seconds to the last, bytes received."""
    import httpx

    chunks, size, delay = LOADS[load]
    began = time.perf_counter()
    first = 0.0
    received = 0
    params = {"chunks": chunks, "size": size, "delay": delay}
    with httpx.stream("GET", url, params=params, timeout=120) as response:
        response.raise_for_status()
        for chunk in response.iter_raw():
            if not received:
                first = time.perf_counter() - began
            received += len(chunk)
    total = time.perf_counter() - began
    if received != chunks * size:
        raise RuntimeError(f"{url}: {received} bytes, not {chunks * size}")
    return first, total, received


def part1(rounds: int) -> list[str]:
    results: dict[tuple[str, str], list[tuple[float, float, int]]] = {}
    with ExitStack() as stack:
        upstream_sock = listening_socket()
        command = [sys.executable, __file__, "--upstream", str(upstream_sock.fileno())]
        stack.enter_context(started(command, dict(os.environ), (upstream_sock.fileno(),)))
        upstream = f"http://127.0.0.1:{upstream_sock.getsockname()[1]}"
        upstream_sock.close()
        urls = {name: start_site(stack, name, upstream) for name in CONTENDERS}
        for url in urls.values():
            one_request(url, "events")  # warm-up: imports, first connections
        for load in LOADS:
            for _ in range(rounds):
                for name, url in urls.items():  # interleaved, so drift hits all alike
                    results.setdefault((name, load), []).append(one_request(url, load))
    lines = [
        "| load | contender | first byte, median | total, median | total, min-max |",
        "|---|---|---:|---:|---:|",
    ]
    for load, (chunks, size, delay) in LOADS.items():
        what = f"{chunks} x {size // 1024} KiB" + (
            f", {delay * 1000:.0f} ms apart" if delay else ""
        )
        for name in CONTENDERS:
            samples = results[(name, load)]
            firsts = [s[0] for s in samples]
            totals = [s[1] for s in samples]
            lines.append(
                f"| {load} ({what}) | {name} | {_ms(statistics.median(firsts))} | "
                f"{_ms(statistics.median(totals))} | {_ms(min(totals))}-{_ms(max(totals))} |"
            )
    return lines


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:,.1f} ms"


def part2(rounds: int) -> list[str]:
    import django
    from django.conf import settings

    settings.configure(
        INSTALLED_APPS=["django_looptoken"],
        LOOPTOKEN={"AUTOSTART": False, "BACKEND": os.environ.get("BENCH_STREAM_BACKEND", "auto")},
        LOGGING_CONFIG=None,
    )
    django.setup()
    import django_looptoken as looptoken

    async def numbers() -> AsyncIterator[int]:
        for number in range(ITEMS):
            yield number

    def with_iterate() -> None:
        for _ in looptoken.iterate(numbers()):
            pass

    def with_await() -> None:
        source = numbers()
        while True:
            try:
                looptoken.await_(_next(source))  # type: ignore[arg-type]
            except StopAsyncIteration:
                return

    def with_threadsafe() -> None:
        loop = looptoken.get_loop()
        source = numbers()
        while True:
            try:
                asyncio.run_coroutine_threadsafe(_next(source), loop).result()  # type: ignore[arg-type]
            except StopAsyncIteration:
                return

    ways: dict[str, Callable[[], None]] = {
        "`iterate(agen)`": with_iterate,
        "`await_(anext(agen))` per item": with_await,
        "`run_coroutine_threadsafe(anext(agen), loop).result()` per item": with_threadsafe,
    }
    timings: dict[str, list[float]] = {name: [] for name in ways}
    with looptoken.start_loop():
        backend = type(looptoken.get_loop()).__module__ + "." + type(looptoken.get_loop()).__name__
        for round_number in range(rounds):
            order = list(ways.items())
            if round_number % 2:
                order.reverse()  # so that neither goes first every time
            for name, run in order:
                began = time.perf_counter()
                run()
                timings[name].append((time.perf_counter() - began) / ITEMS)
    lines = [f"Loop: `{backend}`, {ITEMS:,} items per run, median of {rounds} runs.", ""]
    lines += ["| per item | median | min-max |", "|---|---:|---:|"]
    for name, values in timings.items():
        lines.append(
            f"| {name} | {statistics.median(values) * 1e6:.1f} µs | "
            f"{min(values) * 1e6:.1f}-{max(values) * 1e6:.1f} µs |"
        )
    return lines


def machine() -> str:
    import django

    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, Django {django.get_version()}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="requests per contender and load")
    parser.add_argument("--upstream", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.upstream is not None:
        serve_upstream(args.upstream)
        return
    os.chdir(ROOT)
    print(f"Machine: {machine()}\n")
    print("\n".join(part1(args.rounds)))
    print()
    print("\n".join(part2(args.rounds)))


if __name__ == "__main__":
    main()

"""The end-to-end benchmark's upstream: an aiohttp server answering after a fixed delay.

``bench/bench_e2e.py`` starts it as its own process and hands it two
listening sockets it has bound on 127.0.0.1 (so no port can be taken in
between)::

    python bench/upstream.py --fd 5 --stats-fd 6 --delay 0.02

On the first socket ``GET /item/<n>`` answers ``{"id": <n>}`` after
``--delay`` seconds; every TCP connection accepted there is counted. On the
second, ``GET /stats`` answers ``{"connections": ..., "requests": ...}``:
reading the counters on a socket of their own opens no connection the
benchmark would count. SIGTERM or SIGINT stops the server cleanly.

aiohttp's low-level server (no router, no application) keeps the upstream's
own CPU per request small: it shares the machine's two cores with the
servers being measured.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web
from aiohttp.web_protocol import RequestHandler


@dataclass
class Counters:
    """What the upstream has served since it started."""

    connections: int = 0
    requests: int = 0


def make_handler(
    counters: Counters, delay: float
) -> Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]:
    """The request handler: items after ``delay`` seconds, counters at once."""

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        path = request.path
        if path.startswith("/item/"):
            counters.requests += 1
            await asyncio.sleep(delay)
            item = json.dumps({"id": int(path[len("/item/") :])})
            return web.Response(text=item, content_type="application/json")
        if path == "/stats":
            body = json.dumps({"connections": counters.connections, "requests": counters.requests})
            return web.Response(text=body, content_type="application/json")
        return web.Response(status=404, text="no such path\n")

    return handle


async def serve(items_sock: socket.socket, stats_sock: socket.socket, delay: float) -> None:
    """Serve both sockets until SIGTERM or SIGINT."""
    loop = asyncio.get_running_loop()
    counters = Counters()
    server = web.Server(make_handler(counters, delay))

    def counted() -> RequestHandler:
        counters.connections += 1
        return server()

    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    items = await loop.create_server(counted, sock=items_sock)
    stats = await loop.create_server(server, sock=stats_sock)
    try:
        await stop.wait()
    finally:
        for listener in (items, stats):
            listener.close()
        await server.shutdown(timeout=5)
        for listener in (items, stats):
            await listener.wait_closed()


def new_loop() -> asyncio.AbstractEventLoop:
    """uvloop's loop when it is installed (less CPU per request), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def main(argv: list[str] | None = None) -> None:
    """Parse the arguments and serve until stopped."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fd", type=int, required=True, help="listening socket for /item/<n>")
    parser.add_argument("--stats-fd", type=int, required=True, help="listening socket for /stats")
    parser.add_argument("--delay", type=float, default=0.02, help="seconds before each answer")
    args = parser.parse_args(argv)
    items_sock = socket.socket(fileno=args.fd)
    stats_sock = socket.socket(fileno=args.stats_fd)
    loop = new_loop()
    try:
        loop.run_until_complete(serve(items_sock, stats_sock, args.delay))
    finally:
        loop.close()


if __name__ == "__main__":
    main()

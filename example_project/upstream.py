"""The demo's slow upstream services: a small aiohttp server on 127.0.0.1.

``make demo`` (``demo.py``) starts it and stops it; by hand::

    python upstream.py --port 8001

Each route answers JSON after a realistic delay, as a real backend would:

=============  =======  ==============================================
route          delay    answer
=============  =======  ==============================================
``/weather``   0.3 s    today's weather in Lisbon
``/news``      0.4 s    three headlines
``/stocks``    0.5 s    three share prices
``/traffic``   0.2 s    incidents on the roads around town
``/ticker``    0.5 s    a streamed share price, one JSON line every
                        0.5 s (``?count=N`` lines, 20 by default)
=============  =======  ==============================================

Every answer also carries ``served``: the requests this server has answered
and the TCP connections it has accepted so far, so the dashboard can show
that its pooled client keeps reusing a few connections. SIGINT or SIGTERM
stops the server cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

HEADLINES = [
    "City council approves the new tram line",
    "Local bakery wins the national pastry prize",
    "Marathon closes the riverside road on Sunday",
    "Museum opens a wing for modern tiles",
    "Harbour welcomes the season's first cruise ship",
    "Library extends its opening hours",
]
SHARES = {"ACME": 132.4, "GLOBEX": 57.9, "INITECH": 18.25}
ROADS = ["A2 bridge", "Ring road", "Avenida da Liberdade", "Coast road"]


@dataclass
class Served:
    """What the server has answered since it started."""

    requests: int = 0
    connections: int = 0


def weather(rng: random.Random) -> dict[str, Any]:
    """Today's weather."""
    sky = rng.choice(["sunny", "partly cloudy", "light rain", "windy"])
    return {"city": "Lisbon", "temperature_c": rng.randint(14, 26), "sky": sky}


def news(rng: random.Random) -> dict[str, Any]:
    """Three of the day's headlines."""
    return {"headlines": rng.sample(HEADLINES, 3)}


def stocks(rng: random.Random) -> dict[str, Any]:
    """A few share prices that move a little on every call."""
    quotes = []
    for symbol, base in SHARES.items():
        change = round(rng.uniform(-2.5, 2.5), 2)
        price = round(base * (1 + change / 100), 2)
        quotes.append({"symbol": symbol, "price": price, "change_pct": change})
    return {"quotes": quotes}


def traffic(rng: random.Random) -> dict[str, Any]:
    """Incidents on the roads."""
    jams = rng.sample(ROADS, rng.randint(0, 2))
    return {"incidents": len(jams), "slow_roads": jams}


# Route: (delay in seconds, what it answers).
ROUTES: dict[str, tuple[float, Callable[[random.Random], dict[str, Any]]]] = {
    "/weather": (0.3, weather),
    "/news": (0.4, news),
    "/stocks": (0.5, stocks),
    "/traffic": (0.2, traffic),
}


TICK_S = 0.5


def ticker(served: Served, rng: random.Random) -> Any:
    """``/ticker``: ACME's price, one JSON line every ``TICK_S`` seconds, streamed."""

    async def handle(request: web.Request) -> web.StreamResponse:
        served.requests += 1
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        price = SHARES["ACME"]
        for number in range(1, int(request.query.get("count", "20")) + 1):
            await asyncio.sleep(TICK_S)
            price = round(price * (1 + rng.uniform(-0.01, 0.01)), 2)
            line = {"tick": number, "symbol": "ACME", "price": price, "pid": os.getpid()}
            await response.write(json.dumps(line).encode() + b"\n")
        await response.write_eof()
        return response

    return handle


def make_app(served: Served) -> web.Application:
    """The application: one handler per route of ``ROUTES``."""
    rng = random.Random()
    app = web.Application()

    def answer(delay: float, data: Callable[[random.Random], dict[str, Any]]) -> Any:
        async def handle(request: web.Request) -> web.Response:
            served.requests += 1
            await asyncio.sleep(delay)  # the slow backend this server stands in for
            body = {**data(rng), "served": {**vars(served), "pid": os.getpid()}}
            return web.json_response(body)

        return handle

    for path, (delay, data) in ROUTES.items():
        app.router.add_get(path, answer(delay, data))
    app.router.add_get("/ticker", ticker(served, rng))
    return app


async def serve(sock: socket.socket) -> None:
    """Serve on the listening socket ``sock`` until SIGINT or SIGTERM."""
    loop = asyncio.get_running_loop()
    served = Served()
    runner = web.AppRunner(make_app(served), handle_signals=False)
    await runner.setup()
    server = runner.server
    assert server is not None

    def counted() -> RequestHandler:
        served.connections += 1  # one handler per accepted TCP connection
        return server()

    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    listener = await loop.create_server(counted, sock=sock)
    try:
        await stop.wait()
    finally:
        listener.close()
        await runner.cleanup()  # closes the connections, waits for answers in flight
        await listener.wait_closed()


def listening_socket(args: argparse.Namespace) -> socket.socket:
    """The socket handed over with ``--fd``, or a new one on 127.0.0.1:``--port``."""
    if args.fd is not None:
        return socket.socket(fileno=args.fd)
    return socket.create_server(("127.0.0.1", args.port))


def main(argv: list[str] | None = None) -> None:
    """Parse the arguments and serve until stopped."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8001, help="port on 127.0.0.1")
    parser.add_argument("--fd", type=int, help="a listening socket to serve instead")
    sock = listening_socket(parser.parse_args(argv))
    asyncio.run(serve(sock))


if __name__ == "__main__":
    main()

"""Reading the upstream services with one pooled httpx client per worker.

``upstream`` is a ``loop_resource``: the first request a worker serves makes
its ``httpx.AsyncClient`` on the shared loop, every later request reuses it
(and its keep-alive connections), and the loop's shutdown sequence closes
it. Without the shared loop, each request would run on a new event loop and
could not reuse a client made on an earlier one.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpcore  # noqa: F401  (see below)
import httpx
from django.conf import settings
from django.utils import timezone

import django_looptoken as looptoken
from dashboard.models import Panel

TIMEOUT_S = 5.0
# The worker makes its client on the shared loop, on first use. What that
# would load there, blocking the loop for a few tenths of a second, is loaded
# here at import instead: httpx's transport (the httpcore import above) and
# the CA bundle.
SSL_CONTEXT = httpx.create_ssl_context()


class UpstreamClient:
    """The worker's httpx client for the upstreams, and how much it has served."""

    def __init__(self) -> None:
        self.http = httpx.AsyncClient(
            base_url=settings.EXAMPLE_UPSTREAM, timeout=TIMEOUT_S, verify=SSL_CONTEXT
        )
        self.created = timezone.now()
        self.requests = 0

    async def get_json(self, path: str) -> dict[str, Any]:
        """GET ``path`` from the upstream and decode its JSON answer."""
        self.requests += 1
        response = await self.http.get(path)
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data

    async def aclose(self) -> None:
        """Close the connection pool (the loop's shutdown sequence calls this)."""
        await self.http.aclose()


upstream = looptoken.loop_resource(UpstreamClient, close="aclose")


@dataclass
class Reading:
    """One panel's answer, and when it was asked for (seconds from the page's start)."""

    panel: Panel
    started_s: float
    seconds: float
    headline: str = ""
    details: list[str] = field(default_factory=list)
    error: str = ""
    served: dict[str, int] = field(default_factory=dict)


@dataclass
class PoolInfo:
    """Which client served the page: the same one in a worker, request after request."""

    client_id: str
    requests: int
    created: datetime
    pid: int
    loop: str
    thread: str


async def read(panel: Panel, page_started: float) -> Reading:
    """Ask ``panel``'s upstream with the worker's pooled client; errors become text."""
    started = time.perf_counter()
    reading = Reading(panel, started - page_started, 0.0)
    try:
        data = await upstream.get().get_json(panel.path)
    except httpx.HTTPError as exc:
        reading.error = (
            f"{type(exc).__name__} from {settings.EXAMPLE_UPSTREAM}{panel.path}: {exc}. "
            "Is the upstream server running? make demo starts it."
        )
    else:
        reading.served = data.pop("served", {})
        summary = SUMMARIES.get(panel.slug, raw)
        reading.headline, reading.details = summary(data)
    reading.seconds = time.perf_counter() - started
    return reading


async def pool_info() -> PoolInfo:
    """The pooled client of this worker's shared loop (made now if it is the first use)."""
    client = upstream.get()
    loop = asyncio.get_running_loop()
    return PoolInfo(
        client_id=hex(id(client)),
        requests=client.requests,
        created=client.created,
        pid=os.getpid(),
        loop=f"{type(loop).__module__}.{type(loop).__qualname__}",
        thread=threading.current_thread().name,
    )


# How each upstream's JSON becomes a headline and a few lines.


def weather(data: dict[str, Any]) -> tuple[str, list[str]]:
    """``{"city", "temperature_c", "sky"}``."""
    return f"{data['temperature_c']} °C, {data['sky']}", [data["city"]]


def news(data: dict[str, Any]) -> tuple[str, list[str]]:
    """``{"headlines": [...]}``."""
    headlines = list(data["headlines"])
    return headlines[0], headlines[1:]


def stocks(data: dict[str, Any]) -> tuple[str, list[str]]:
    """``{"quotes": [{"symbol", "price", "change_pct"}, ...]}``."""
    lines = [f"{q['symbol']} {q['price']:.2f} ({q['change_pct']:+.2f} %)" for q in data["quotes"]]
    return lines[0], lines[1:]


def traffic(data: dict[str, Any]) -> tuple[str, list[str]]:
    """``{"incidents", "slow_roads": [...]}``."""
    count = data["incidents"]
    headline = "Roads are clear" if not count else f"{count} slow road{'s' * (count > 1)}"
    return headline, list(data["slow_roads"])


def raw(data: dict[str, Any]) -> tuple[str, list[str]]:
    """Any other upstream: its keys and values."""
    return "", [f"{key}: {value}" for key, value in data.items()]


SUMMARIES: dict[str, Callable[[dict[str, Any]], tuple[str, list[str]]]] = {
    "weather": weather,
    "news": news,
    "stocks": stocks,
    "traffic": traffic,
}

"""What both sites share: the upstream's items, the two async clients, small views.

The upstream's address and the pool size come from the environment the
benchmark starts gunicorn with (``E2E_UPSTREAM``, ``E2E_POOL``).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import aiohttp
import httpx
from django.http import HttpRequest, HttpResponse, JsonResponse

UPSTREAM = os.environ.get("E2E_UPSTREAM", "http://127.0.0.1:8001")
ITEMS = 10
ITEM_URLS = [f"{UPSTREAM}/item/{n}" for n in range(ITEMS)]
# Pools sized to the benchmark's concurrency, as the recipes advise.
POOL = int(os.environ.get("E2E_POOL", "32"))
TIMEOUT = 10.0  # seconds; bounds every upstream call

Item = dict[str, Any]
C = TypeVar("C")


@dataclass(frozen=True)
class Library(Generic[C]):
    """An async HTTP client library: how to make a client, fetch one item, close it."""

    name: str
    make: Callable[[], C]
    fetch: Callable[[C, str], Awaitable[Item]]
    close: str

    async def fetch_all(self, client: C) -> list[Item]:
        """The ten items, fetched concurrently with ``client``."""
        return list(await asyncio.gather(*(self.fetch(client, url) for url in ITEM_URLS)))

    async def fetch_all_new_client(self) -> list[Item]:
        """The ten items with a client made for this call and closed after it."""
        client = self.make()
        try:
            return await self.fetch_all(client)
        finally:
            await getattr(client, self.close)()


def make_aiohttp() -> aiohttp.ClientSession:
    """An aiohttp session whose pool holds ``POOL`` connections."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=POOL),
        timeout=aiohttp.ClientTimeout(total=TIMEOUT),
    )


async def fetch_aiohttp(session: aiohttp.ClientSession, url: str) -> Item:
    """One item through aiohttp."""
    async with session.get(url) as response:
        response.raise_for_status()
        item: Item = await response.json()
        return item


def make_httpx() -> httpx.AsyncClient:
    """An httpx client whose pool keeps ``POOL`` connections (its default keeps 20 idle)."""
    return httpx.AsyncClient(
        limits=httpx.Limits(max_connections=POOL, max_keepalive_connections=POOL),
        timeout=TIMEOUT,
    )


async def fetch_httpx(client: httpx.AsyncClient, url: str) -> Item:
    """One item through httpx."""
    response = await client.get(url)
    response.raise_for_status()
    item: Item = response.json()
    return item


AIOHTTP = Library("aiohttp", make_aiohttp, fetch_aiohttp, close="close")
HTTPX = Library("httpx", make_httpx, fetch_httpx, close="aclose")


def items_response(items: list[Item]) -> JsonResponse:
    """The response of every fetching view."""
    return JsonResponse({"items": items})


def trivial(request: HttpRequest) -> HttpResponse:
    """A sync view that does nothing: what the app costs on views that do not use it."""
    return HttpResponse(b"ok", content_type="text/plain")

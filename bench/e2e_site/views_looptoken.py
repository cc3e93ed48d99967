"""Views of the ``looptoken`` site: the app's three ways, one pooled client per loop."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Generic

from django.http import HttpRequest, JsonResponse

import django_looptoken as looptoken
from bench.e2e_site.common import AIOHTTP, HTTPX, ITEM_URLS, C, Item, Library, items_response


@dataclass(frozen=True)
class Pooled(Generic[C]):
    """A library and its ``loop_resource``: one client per shared loop, reused."""

    lib: Library[C]
    pool: looptoken.LoopResource[C]

    async def fetch_all(self) -> list[Item]:
        """The ten items, fetched concurrently with the loop's client."""
        return await self.lib.fetch_all(self.pool.get())

    async def fetch(self, url: str) -> Item:
        """One item with the loop's client."""
        return await self.lib.fetch(self.pool.get(), url)


POOLED_AIOHTTP = Pooled(AIOHTTP, looptoken.loop_resource(AIOHTTP.make, close=AIOHTTP.close))
POOLED_HTTPX = Pooled(HTTPX, looptoken.loop_resource(HTTPX.make, close=HTTPX.close))


@looptoken.runs_async
async def runs_async(request: HttpRequest, pooled: Pooled[Any]) -> JsonResponse:
    """4. ``@runs_async``: Django sees a sync view."""
    return items_response(await pooled.fetch_all())


async def async_view(request: HttpRequest, pooled: Pooled[Any]) -> JsonResponse:
    """5. A plain ``async def`` view, run on the shared loop by ``ASYNC_VIEWS``."""
    return items_response(await pooled.fetch_all())


def await_multiple(request: HttpRequest, pooled: Pooled[Any]) -> JsonResponse:
    """6. A sync view fanning out with ``await_multiple``."""
    items: list[Item] = []
    for ok, value in looptoken.await_multiple([pooled.fetch(url) for url in ITEM_URLS]):
        if not ok:
            raise value
        items.append(value)
    return items_response(items)


async def where(request: HttpRequest) -> JsonResponse:
    """Proof for the benchmark that ``ASYNC_VIEWS`` took effect in this server."""
    running = asyncio.get_running_loop()
    loop = type(running)
    return JsonResponse(
        {
            "shared_loop": running is looptoken.get_loop(),
            "loop": f"{loop.__module__}.{loop.__qualname__}",
        }
    )

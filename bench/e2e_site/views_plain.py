"""Views of the ``plain`` site: what a Django project does without django_looptoken."""

from __future__ import annotations

import asyncio
import atexit
import os
import sys
import threading
from typing import Any

import httpx
from django.http import HttpRequest, JsonResponse

from bench.e2e_site.common import ITEM_URLS, TIMEOUT, Item, Library, items_response

# -- 1. a sequential sync client, persistent per thread ----------------------------

_local = threading.local()


def sync_client(request: HttpRequest) -> JsonResponse:
    """The ten items one after another with this thread's ``httpx.Client``."""
    client: httpx.Client | None = getattr(_local, "client", None)
    if client is None:
        client = _local.client = httpx.Client(timeout=TIMEOUT)
    items: list[Item] = []
    for url in ITEM_URLS:
        response = client.get(url)
        response.raise_for_status()
        items.append(response.json())
    return items_response(items)


# -- 2. Django's own async view under WSGI: a new loop, so a new client, per request --


async def django_own(request: HttpRequest, lib: Library[Any]) -> JsonResponse:
    """Django runs it through ``async_to_sync``: nothing bound to a loop survives."""
    return items_response(await lib.fetch_all_new_client())


# -- 3. the background loop thread teams write themselves --------------------------


def _new_loop() -> asyncio.AbstractEventLoop:
    # The same backend as the app's shared loop ("auto": uvloop when
    # installed), so that the comparison is about the plumbing.
    if os.environ.get("E2E_BACKEND", "auto") != "asyncio":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


_loop = _new_loop()
_thread = threading.Thread(target=_loop.run_forever, name="hand-written-loop", daemon=True)
_thread.start()
_clients: dict[Library[Any], Any] = {}  # touched on _loop only: one client per library


async def _fetch_on_thread(lib: Library[Any]) -> list[Item]:
    client = _clients.get(lib)
    if client is None:
        client = _clients[lib] = lib.make()
    return await lib.fetch_all(client)


def hand_written_thread(request: HttpRequest, lib: Library[Any]) -> JsonResponse:
    """``run_coroutine_threadsafe`` onto the module's loop thread, persistent client."""
    future = asyncio.run_coroutine_threadsafe(_fetch_on_thread(lib), _loop)
    return items_response(future.result(TIMEOUT))


async def _close_clients() -> None:
    for lib, client in _clients.items():
        await getattr(client, lib.close)()


@atexit.register
def _stop_thread() -> None:
    # Close the clients so the worker exits without "Unclosed" warnings.
    asyncio.run_coroutine_threadsafe(_close_clients(), _loop).result(TIMEOUT)
    _loop.call_soon_threadsafe(_loop.stop)
    _thread.join(TIMEOUT)


async def where(request: HttpRequest) -> JsonResponse:
    """Proof for the benchmark that this site runs without the app."""
    loop = type(_loop)
    return JsonResponse(
        {
            "looptoken_imported": "django_looptoken" in sys.modules,
            "loop": f"{loop.__module__}.{loop.__qualname__}",
        }
    )

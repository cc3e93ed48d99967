"""Views served by the real-server tests."""

from __future__ import annotations

import asyncio
import os

from django.http import HttpRequest, JsonResponse

import django_looptoken as looptoken
from django_looptoken._runtime import runtime


class Pool:
    """Stands for a connection pool: one per loop."""


pool = looptoken.loop_resource(Pool)


def _where() -> dict[str, object]:
    run = runtime().current_run
    return {
        "pid": os.getpid(),
        "loop": id(asyncio.get_running_loop()),
        "on_shared_loop": asyncio.get_running_loop() is looptoken.get_loop(),
        "tokens": run.tokens if run else 0,
        "pool": id(pool.get()),
    }


async def plain_async(request: HttpRequest) -> JsonResponse:
    """A plain async view, run through ASYNC_VIEWS."""
    await asyncio.sleep(0.01)
    return JsonResponse(_where())


@looptoken.runs_async
async def decorated(request: HttpRequest) -> JsonResponse:
    """A @runs_async view."""
    await asyncio.sleep(0.01)
    return JsonResponse(_where())

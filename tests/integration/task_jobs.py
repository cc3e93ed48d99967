"""Job functions for the task-worker tests (RQ imports them by name; the
Celery app wraps them): protected work left on the loop, and an async job
that calls a real upstream through one pooled client."""

from __future__ import annotations

import os

import aiohttp

import django_looptoken as looptoken
from tests.integration.lifecycle_views import finish_later, mark

http = looptoken.loop_resource(aiohttp.ClientSession, close="close")


def leave_protected_work(name: str, seconds: float = 1.0) -> int:
    """Spawn work that writes marker ``done-<name>`` after ``seconds``, wrapped
    in ``shutdown_waits_for``; return at once with this process's pid."""
    mark(f"started-{name}")
    looptoken.spawn(looptoken.shutdown_waits_for(finish_later(name, seconds)))
    return os.getpid()


def own_pid() -> int:
    """A job that does not use the loop: the pid of the process it ran in."""
    return os.getpid()


@looptoken.runs_async
async def fetch_peer(upstream: str) -> str:
    """An async job on the worker's shared loop: the upstream's view of the
    connection it came on."""
    async with http.get().get(f"{upstream}/peer") as response:
        peer: str = (await response.json())["peer"]
        return peer

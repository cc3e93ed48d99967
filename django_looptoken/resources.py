"""``loop_resource``: one lazily created object per life of the shared loop.

Connection pools (``httpx.AsyncClient``, ``aiohttp.ClientSession``, redis or
asyncpg pools) are bound to the loop they were made on. A ``LoopResource``
makes its object on first use inside the shared loop, hands the same one to
every later request, closes it in the shutdown sequence, and makes a fresh
one after a loop restart or a fork.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from django_looptoken import _shutdown
from django_looptoken._loop_run import LoopRun
from django_looptoken._runtime import runtime

logger = logging.getLogger("django_looptoken")

_T = TypeVar("_T")
Closer = str | Callable[[Any], Any] | None


class LoopResource(Generic[_T]):
    """A per-loop object made by ``factory`` on first ``get()`` on the shared loop."""

    def __init__(self, factory: Callable[[], _T], *, close: Closer = None) -> None:
        if not callable(factory):
            raise TypeError(f"loop_resource() needs a callable factory, not {factory!r}.")
        if not (close is None or isinstance(close, str) or callable(close)):
            raise TypeError(
                "loop_resource(close=...) takes a method name (such as 'aclose'), "
                f"a callable taking the instance, or None; not {close!r}."
            )
        self._factory = factory
        self._close = close

    def get(self) -> _T:
        """The instance for the running shared loop, made on first use."""
        running = asyncio._get_running_loop()
        run = runtime().run_for(running) if running is not None else None
        if run is None:
            raise RuntimeError(
                f"{self!r}.get() must be called inside a coroutine running on the shared "
                "loop (run it with looptoken.await_(), @runs_async or an async view): "
                "its instance belongs to that loop."
            )
        try:
            return run.resources[self]  # type: ignore[no-any-return]
        except KeyError:
            instance = run.resources[self] = self._factory()
            return instance

    async def _close_instance(self, instance: _T) -> None:
        if self._close is None:
            return
        closer = getattr(instance, self._close) if isinstance(self._close, str) else None
        result = closer() if closer is not None else self._close(instance)  # type: ignore[operator]
        if inspect.isawaitable(result):
            await result

    def __repr__(self) -> str:
        name = getattr(self._factory, "__qualname__", repr(self._factory))
        return f"<LoopResource of {name}>"


def loop_resource(factory: Callable[[], _T], *, close: Closer = None) -> LoopResource[_T]:
    """A lazily created per-loop object, e.g.
    ``http = loop_resource(httpx.AsyncClient, close="aclose")``; inside a
    coroutine on the shared loop ``http.get()`` returns the loop's instance.

    ``close`` is a method name or a callable taking the instance; the
    shutdown sequence calls it (awaiting what it returns, if awaitable).
    """
    return LoopResource(factory, close=close)


async def _close_resources(run: LoopRun) -> None:
    # Newest first, so a resource made from another closes before it.
    for resource, instance in reversed(list(run.resources.items())):
        assert isinstance(resource, LoopResource)
        try:
            await resource._close_instance(instance)
        except Exception:
            logger.exception("Closing %r failed.", resource)
    run.resources.clear()


_shutdown.closing_hooks.append(_close_resources)

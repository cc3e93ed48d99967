"""``loop_resource``: one lazily created object per life of the shared loop.

Connection pools (``httpx.AsyncClient``, ``aiohttp.ClientSession``, redis or
asyncpg pools) are bound to the loop they were made on. A ``LoopResource``
makes its object on first use inside the shared loop, hands the same one to
every later request, closes it in the shutdown sequence, and makes a fresh
one after a loop restart or a fork.

On any other running loop (an ASGI server's, or the one ``async_to_sync``
makes for a request when ``ASYNC_VIEWS`` is off) it does the same for that
loop: one instance per loop, closed when the loop shuts down its async
generators, as ``asyncio.run``, asgiref and uvicorn do before closing it.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import threading
import weakref
from collections.abc import AsyncGenerator, Callable
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
        """The instance for the running loop (the shared one, or an ASGI
        server's), made on first use."""
        running = asyncio._get_running_loop()
        if running is None:
            raise RuntimeError(
                f"{self!r}.get() must be called inside a coroutine running on an event "
                "loop (run it with looptoken.await_(), @runs_async or an async view): "
                "its instance belongs to that loop."
            )
        run = runtime().run_for(running)
        instances = run.resources if run is not None else _instances_on(running)
        try:
            return instances[self]  # type: ignore[no-any-return]
        except KeyError:
            instance = instances[self] = self._factory()
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


async def _close_all(instances: dict[Any, Any]) -> None:
    # Newest first, so a resource made from another closes before it.
    for resource, instance in reversed(list(instances.items())):
        assert isinstance(resource, LoopResource)
        try:
            await resource._close_instance(instance)
        except Exception:
            logger.exception("Closing %r failed.", resource)
    instances.clear()


async def _close_resources(run: LoopRun) -> None:
    await _close_all(run.resources)


class _OtherLoopInstances:
    """The instances made on one loop that is not the shared one.

    Nothing tells a library when someone else's loop ends, except that a
    loop closing cleanly first closes the async generators it has seen
    (``loop.shutdown_asyncgens()``). So a generator of ours takes its first
    step on that loop, and its ``finally`` closes the instances there, while
    the loop still runs them.
    """

    def __init__(self) -> None:
        self.instances: dict[LoopResource[Any], Any] = {}
        self._closer = self._close_when_the_loop_ends()  # strong: the loop keeps a weak one
        # One step, up to the yield: the loop's first-iteration hook sees it.
        with contextlib.suppress(StopIteration):
            self._closer.asend(None).send(None)

    async def _close_when_the_loop_ends(self) -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            await _close_all(self.instances)


_other_loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _OtherLoopInstances] = (
    weakref.WeakKeyDictionary()
)
_other_loops_lock = threading.Lock()  # each loop its own thread; the dict is shared


def _instances_on(loop: asyncio.AbstractEventLoop) -> dict[LoopResource[Any], Any]:
    with _other_loops_lock:
        entry = _other_loops.get(loop)
        if entry is None:
            entry = _other_loops[loop] = _OtherLoopInstances()
    return entry.instances


_shutdown.closing_step("loop_resource instances", _close_resources)

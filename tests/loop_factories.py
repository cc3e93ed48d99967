"""Loop factories named by dotted-path ``BACKEND`` settings in the tests."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

#: Every loop ``counting_loop_factory`` has built, oldest first.
created: list[asyncio.AbstractEventLoop] = []

#: Importable but not callable: an unusable ``BACKEND``.
NOT_CALLABLE = "not a loop factory"


def counting_loop_factory() -> asyncio.AbstractEventLoop:
    """Build a plain selector loop and remember it."""
    loop = asyncio.SelectorEventLoop()
    created.append(loop)
    return loop


#: Every coroutine ``traced_task_factory`` made a task of, oldest first.
traced: list[str] = []


def _traced_task(
    loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any], **kwargs: Any
) -> asyncio.Task[Any]:
    traced.append(coro.__qualname__)
    return asyncio.Task(coro, loop=loop, **kwargs)


def loop_with_a_task_factory() -> asyncio.AbstractEventLoop:
    """A plain selector loop with a task factory of its own, as tracing tools set."""
    loop = asyncio.SelectorEventLoop()
    loop.set_task_factory(_traced_task)
    return loop


def failing_loop_factory() -> asyncio.AbstractEventLoop:
    """A factory that raises, as one with a bug in it would."""
    raise RuntimeError("no loop today")


def closed_loop_factory() -> asyncio.AbstractEventLoop:
    """A factory that returns a loop it already closed."""
    loop = asyncio.SelectorEventLoop()
    loop.close()
    return loop

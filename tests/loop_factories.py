"""Loop factories named by dotted-path ``BACKEND`` settings in the tests."""

from __future__ import annotations

import asyncio

#: Every loop ``counting_loop_factory`` has built, oldest first.
created: list[asyncio.AbstractEventLoop] = []

#: Importable but not callable: an unusable ``BACKEND``.
NOT_CALLABLE = "not a loop factory"


def counting_loop_factory() -> asyncio.AbstractEventLoop:
    """Build a plain selector loop and remember it."""
    loop = asyncio.SelectorEventLoop()
    created.append(loop)
    return loop

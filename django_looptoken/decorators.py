"""``@runs_async``: an ``async def`` view that Django sees as a sync view."""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar, overload

from asgiref.sync import iscoroutinefunction

from django_looptoken.bridge import await_
from django_looptoken.conf import validate_timeout

_P = ParamSpec("_P")
_R = TypeVar("_R")
AsyncFunction = Callable[_P, Coroutine[Any, Any, _R]]

# Markers asgiref, inspect and asyncio use to flag a function as a coroutine
# function. functools.wraps copies them from an async class-based view's
# as_view(); left on the wrapper, Django would treat the sync view as async.
_COROUTINE_MARKERS = ("_is_coroutine", "_is_coroutine_marker")


@overload
def runs_async(func: AsyncFunction[_P, _R], /) -> Callable[_P, _R]: ...


@overload
def runs_async(
    *, timeout: float | None = None
) -> Callable[[AsyncFunction[_P, _R]], Callable[_P, _R]]: ...


def runs_async(
    func: AsyncFunction[_P, _R] | None = None, /, *, timeout: float | None = None
) -> Callable[_P, _R] | Callable[[AsyncFunction[_P, _R]], Callable[_P, _R]]:
    """Turn a coroutine function (an ``async def`` view, or what an async
    class-based view's ``as_view()`` returns) into a plain sync function that
    runs it on the shared loop through ``await_``, with ``timeout`` seconds
    (default ``DEFAULT_TIMEOUT``). Usable bare or with arguments.
    """
    validate_timeout(timeout, "runs_async")  # at decoration, not at the first call
    if func is None:
        return functools.partial(_decorate, timeout=timeout)
    return _decorate(func, timeout=timeout)


def _decorate(func: AsyncFunction[_P, _R], *, timeout: float | None) -> Callable[_P, _R]:
    if not callable(func) or not iscoroutinefunction(func):
        raise TypeError(
            f"@runs_async needs an async def function (or an async class-based view's "
            f"as_view()), but {func!r} is not a coroutine function; a sync view needs "
            "no decorator."
        )

    @functools.wraps(func)
    def run_on_shared_loop(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        return await_(func(*args, **kwargs), timeout=timeout)

    for marker in _COROUTINE_MARKERS:
        run_on_shared_loop.__dict__.pop(marker, None)
    return run_on_shared_loop

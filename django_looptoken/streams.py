"""Streams and scopes of async code, consumed from synchronous code.

``iterate`` turns an async iterator into a sync one whose items are fetched
on the shared loop; ``enter`` turns an async context manager into a sync one
whose ``__aenter__`` and ``__aexit__`` run there. Each step is one blocking
call, as with ``await_``: the caller's context and thread-sensitive hand-back
work as they do there, and nothing is fetched ahead of the caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import threading
import weakref
from collections.abc import AsyncIterable, AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any, Generic, TypeVar

from django_looptoken import _shutdown
from django_looptoken._call import Call
from django_looptoken._loop_run import LoopRun
from django_looptoken.bridge import _check_thread, _is_coroutine_function, _timeout
from django_looptoken.exceptions import LoopStoppedError
from django_looptoken.tokens import LoopToken, start_loop

logger = logging.getLogger("django_looptoken")

_T = TypeVar("_T")

# What a fetch returns at the end of the stream: ending with StopAsyncIteration
# would count every finished stream as a failed call in status().
_END: Any = object()


class SyncIterator(Iterator[_T]):
    """A sync iterator over an async one; see ``iterate``.

    A token is held from the first ``next()`` until the stream ends, fails or
    is closed. ``close()`` (also leaving a ``with`` block, or being
    garbage-collected) closes the async iterator on the loop.
    """

    __slots__ = ("__weakref__", "_closed", "_source", "_timeout", "_token")

    def __init__(self, source: AsyncIterator[_T], timeout: float | None) -> None:
        self._source = source
        self._timeout = timeout
        self._token: LoopToken | None = None
        self._closed = False

    def __iter__(self) -> SyncIterator[_T]:
        return self

    def __next__(self) -> _T:
        if self._closed:
            raise StopIteration
        if self._token is None:
            _check_thread("iterate")
            self._token = start_loop()
            _track(self, True)
        try:
            item: _T = Call(self._token._run, _fetch(self._source), self._timeout).wait()
        except BaseException:
            # A generator that raised has finished; any other async iterator
            # is closed too, so its upstream is released now.
            try:
                self.close()
            except Exception:  # the stream's own error is the one to raise
                logger.exception("Closing an iterate() stream after its error failed.")
            raise
        if item is _END:
            self._finish()
            raise StopIteration
        return item

    def close(self) -> None:
        """Close the async iterator on the loop (its ``finally`` runs) and release the token.

        Blocks until ``aclose()`` has finished. Closing twice is a no-op.
        """
        if self._closed:
            return
        self._closed = True
        token = self._token
        try:
            # Never started: nothing to close. Its loop gone: the shutdown
            # sequence closed it (see _close_open_streams).
            if token is not None and token.held and hasattr(self._source, "aclose"):
                _check_thread("iterate")
                # LoopStoppedError: the loop began to stop, the sequence closes it.
                with contextlib.suppress(LoopStoppedError):
                    Call(token._run, _close(self._source), self._timeout).wait()
        finally:
            self._finish()

    def _finish(self) -> None:
        self._closed = True
        _track(self, False)
        if self._token is not None:
            self._token.release()

    def __enter__(self) -> SyncIterator[_T]:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        token = self._token
        if self._closed or token is None or not token.held:
            return  # the common case: closed, or never started
        # Finalizers run in any thread, even the loop's: close on the loop
        # without waiting, then release the token there.
        self._closed = True
        source = self._source
        try:
            token.loop.call_soon_threadsafe(_close_in_background, source, token)
        except RuntimeError:
            token.release()  # the loop is closing; its tokens no longer count

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<SyncIterator over {self._source!r} ({state})>"


def iterate(source: AsyncIterable[_T], *, timeout: float | None = None) -> SyncIterator[_T]:
    """A sync iterator over ``source`` (an async iterator, generator or iterable),
    each item fetched on the shared loop when asked for.

    ``timeout`` (default ``DEFAULT_TIMEOUT``) bounds the wait for each item,
    not the whole stream: the fetch is cancelled and ``TimeoutError`` raised.
    Leaving the ``for`` loop early does not close the stream; ``close()`` or
    ``with iterate(...) as items:`` does, and so does an exception raised by
    the stream or a timeout.
    """
    _check_thread("iterate")
    if inspect.iscoroutine(source):
        source.close()
        raise TypeError(
            "iterate() takes an async iterator or async iterable (an async generator, "
            f"or an object with __aiter__), not the coroutine {source.__qualname__}: "
            "await it with await_(), or make it an async generator (yield items)."
        )
    if inspect.isasyncgenfunction(source) or (
        callable(source) and _is_coroutine_function(source) and not hasattr(source, "__aiter__")
    ):
        name = getattr(source, "__qualname__", repr(source))
        raise TypeError(
            f"iterate() takes an async iterator, but got the function {name} "
            f"itself: call it first, as in iterate({name}(...))."
        )
    if not hasattr(source, "__aiter__"):
        hint = (
            " It is a sync iterable: loop over it directly, no loop needed."
            if hasattr(source, "__iter__")
            else ""
        )
        raise TypeError(
            "iterate() takes an async iterator or async iterable (an async generator, "
            f"or an object with __aiter__), not {type(source).__name__}: {source!r}.{hint}"
        )
    return SyncIterator(aiter(source), _timeout(timeout, "iterate"))


class SyncContextManager(Generic[_T]):
    """A sync context manager around an async one; see ``enter``."""

    __slots__ = ("_manager", "_timeout", "_token")

    def __init__(self, manager: AbstractAsyncContextManager[_T], timeout: float | None) -> None:
        self._manager = manager
        self._timeout = timeout
        self._token: LoopToken | None = None

    def __enter__(self) -> _T:
        if self._token is not None:
            raise RuntimeError("enter() context managers can be entered only once.")
        _check_thread("enter")
        token = start_loop()
        try:
            value: _T = Call(token._run, _aenter(self._manager), self._timeout).wait()
        except BaseException:
            token.release()
            raise
        self._token = token
        return value

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        token = self._token
        assert token is not None, "__exit__ without __enter__"
        try:
            coro = _aexit(self._manager, exc_type, exc, tb)
            return bool(Call(token._run, coro, self._timeout).wait())
        finally:
            token.release()


def enter(
    manager: AbstractAsyncContextManager[_T], *, timeout: float | None = None
) -> SyncContextManager[_T]:
    """A sync context manager whose ``__enter__`` and ``__exit__`` run ``manager``'s
    ``__aenter__`` and ``__aexit__`` on the shared loop.

    ``with enter(client.stream("GET", url)) as response:`` behaves like
    ``async with``: the body's exception goes to ``__aexit__``, which may
    suppress it. A token is held from enter to exit. ``timeout`` (default
    ``DEFAULT_TIMEOUT``) bounds each of the two steps.
    """
    if inspect.iscoroutine(manager):
        manager.close()
        raise TypeError(
            "enter() takes an async context manager (an object with __aenter__ and "
            "__aexit__), not a coroutine: await it with await_() first if it returns one."
        )
    if not (hasattr(manager, "__aenter__") and hasattr(manager, "__aexit__")):
        if callable(manager) and not hasattr(manager, "__enter__"):
            name = getattr(manager, "__qualname__", repr(manager))
            raise TypeError(
                f"enter() takes an async context manager, but got {name} itself: "
                f"call it first, as in enter({name}(...))."
            )
        hint = (
            " It is a sync context manager: use a plain 'with'."
            if hasattr(manager, "__enter__")
            else ""
        )
        raise TypeError(
            "enter() takes an async context manager (an object with __aenter__ and "
            f"__aexit__), not {type(manager).__name__}: {manager!r}.{hint}"
        )
    return SyncContextManager(manager, _timeout(timeout, "enter"))


# -- on the loop ----------------------------------------------------------------------


async def _fetch(source: AsyncIterator[_T]) -> _T:
    try:
        return await source.__anext__()
    except StopAsyncIteration:
        return _END  # type: ignore[no-any-return]


async def _close(source: AsyncIterator[Any]) -> None:
    await source.aclose()  # type: ignore[attr-defined]


async def _aenter(manager: AbstractAsyncContextManager[_T]) -> _T:
    return await manager.__aenter__()


async def _aexit(
    manager: AbstractAsyncContextManager[Any],
    exc_type: type[BaseException] | None,
    exc: BaseException | None,
    tb: TracebackType | None,
) -> bool | None:
    return await manager.__aexit__(exc_type, exc, tb)


def _close_in_background(source: AsyncIterator[Any], token: LoopToken) -> None:
    """Close a dropped stream on the loop thread, then release its token."""

    async def close_then_release() -> None:
        try:
            aclose = getattr(source, "aclose", None)
            if aclose is not None:
                await aclose()
        except Exception:
            logger.exception("Closing a dropped iterate() stream failed.")
        finally:
            token.release()

    task = token.loop.create_task(close_then_release())
    _closing.add(task)  # the loop keeps only a weak reference to its tasks
    task.add_done_callback(_closing.discard)


_closing: set[asyncio.Task[None]] = set()

# Streams being iterated, so that the shutdown sequence can close those still
# open and leave no upstream connection to the garbage collector. Request
# threads add and discard while the loop thread may be taking a snapshot.
_open: weakref.WeakSet[SyncIterator[Any]] = weakref.WeakSet()
_open_lock = threading.Lock()


def _track(stream: SyncIterator[Any], is_open: bool) -> None:
    with _open_lock:
        if is_open:
            _open.add(stream)
        else:
            _open.discard(stream)


async def _close_open_streams(run: LoopRun) -> None:
    with _open_lock:
        streams = list(_open)
    for stream in streams:
        token = stream._token
        if token is None or token._run is not run or stream._closed:
            continue
        aclose = getattr(stream._source, "aclose", None)
        try:
            if aclose is not None:
                await aclose()
        except Exception:
            logger.exception("Closing an open iterate() stream at shutdown failed.")


_shutdown.closing_step("open iterate() streams", _close_open_streams)

"""Running coroutines on the shared loop from synchronous code.

``await_`` and ``await_multiple`` block the calling thread (holding a token
meanwhile); ``spawn`` returns at once; ``shutdown_waits_for`` marks work the
shutdown sequence must wait for instead of cancelling.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import inspect
import logging
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from types import CoroutineType
from typing import Any, TypeVar, cast

from asgiref.sync import iscoroutinefunction

from django_looptoken import _tasks
from django_looptoken._call import (
    TASKS_TAKE_A_CONTEXT,
    TIMEOUT_GRACE_SECONDS,
    Call,
    note_task_past_timeout,
)
from django_looptoken._handback import background_executor, enter_loop_thread
from django_looptoken._loop_run import LoopRun
from django_looptoken._runtime import runtime
from django_looptoken._tasks import Site
from django_looptoken.conf import looptoken_settings, validate_timeout

logger = logging.getLogger("django_looptoken")

_T = TypeVar("_T")


def await_(awaitable: Awaitable[_T], *, timeout: float | None = None) -> _T:
    """Run ``awaitable`` on the shared loop and block until it finishes.

    Returns its result or raises its exception. After ``timeout`` seconds
    (default ``DEFAULT_TIMEOUT``) the task is cancelled and ``TimeoutError``
    raised. The coroutine runs in a copy of the caller's context, whose
    changes flow back; thread-sensitive sync code it calls runs in this thread.
    """
    coro: Coroutine[Any, Any, _T]
    if type(awaitable) is CoroutineType and asyncio._get_running_loop() is None:
        coro = cast("Coroutine[Any, Any, _T]", awaitable)  # the common case, cheaply
    else:
        coro = _as_coroutine(awaitable, "await_", check_thread=True)
    try:
        if timeout is None:
            timeout = looptoken_settings.DEFAULT_TIMEOUT
        else:
            timeout = _timeout(timeout, "await_")
    except BaseException:
        coro.close()
        raise
    return _block_on(coro, timeout)


def _block_on(coro: Coroutine[Any, Any, _T], timeout: float | None) -> _T:
    """Hold a token, run ``coro`` as one call, release the token."""
    try:
        run = runtime().acquire()
    except BaseException:
        coro.close()
        raise
    try:
        return Call(run, coro, timeout).wait()
    finally:
        runtime().release(run)


def await_multiple(
    awaitables: Iterable[Awaitable[Any]], *, timeout: float | None = None
) -> list[tuple[bool, Any]]:
    """Run ``awaitables`` concurrently on the shared loop and block for all.

    Returns, in input order, ``(True, result)`` or ``(False, exception)`` for
    each. On timeout the unfinished ones are cancelled and reported as
    ``(False, TimeoutError(...))``.
    """
    if isinstance(awaitables, (str, bytes)) or not isinstance(awaitables, Iterable):
        _close_if_coroutine(awaitables)
        raise TypeError(f"await_multiple() takes an iterable of awaitables, not {awaitables!r}.")
    items = list(awaitables)
    coros: list[Coroutine[Any, Any, Any]] = []
    try:
        _check_thread("await_multiple")
        for item in items:
            coros.append(_as_coroutine(item, "await_multiple", check_thread=False))
        timeout = _timeout(timeout, "await_multiple")
    except BaseException:
        for coro in coros:
            coro.close()
        for item in items[len(coros) :]:
            _close_if_coroutine(item)
        raise
    if not coros:
        return []
    # The timeout applies per awaitable inside, not to the call as a whole.
    return _block_on(_gather_outcomes(coros, timeout), None)


async def _gather_outcomes(
    coros: list[Coroutine[Any, Any, Any]], timeout: float | None
) -> list[tuple[bool, Any]]:
    loop = asyncio.get_running_loop()
    tasks = [loop.create_task(coro) for coro in coros]
    late: set[asyncio.Task[Any]] = set()
    try:
        await _all_ended(loop, tasks, timeout)
        late = {task for task in tasks if not task.done()}
        if late:
            for task in late:
                task.cancel()
            _, stuck = await asyncio.wait(late, timeout=TIMEOUT_GRACE_SECONDS)
            run = runtime().run_for(loop)
            for task in stuck:  # they ignore their cancellation: the caller goes on
                if run is not None:
                    note_task_past_timeout(run, task, timeout)
    finally:
        for task in tasks:
            task.cancel()  # nothing if it ended; the caller left if not
    return [_outcome(task, task in late, timeout) for task in tasks]


def _all_ended(
    loop: asyncio.AbstractEventLoop, tasks: list[asyncio.Task[Any]], timeout: float | None
) -> asyncio.Future[None]:
    """Done once every task has ended, or ``timeout`` has passed.

    ``asyncio.wait`` would do, at a cost that showed: it builds sets, and
    takes its callback off every task again at the end (18% more
    instructions per ``await_multiple`` of ten than ``asyncio.gather``).
    """
    ended: asyncio.Future[None] = loop.create_future()
    left = len(tasks)

    def one_ended(_: object) -> None:
        nonlocal left
        left -= 1
        if not left and not ended.done():
            ended.set_result(None)

    for task in tasks:
        task.add_done_callback(one_ended)
    if timeout is not None:
        timer = loop.call_later(timeout, _settle, ended)
        ended.add_done_callback(lambda _: timer.cancel())
    return ended


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _outcome(task: asyncio.Task[Any], late: bool, timeout: float | None) -> tuple[bool, Any]:
    if late:
        if task.done() and not task.cancelled():
            task.exception()  # mark it retrieved: the timeout is what counts
        return (False, TimeoutError(f"Did not finish within {timeout} s and was cancelled."))
    if task.cancelled():
        return (False, asyncio.CancelledError())
    error = task.exception()
    return (True, task.result()) if error is None else (False, error)


class _SpawnedFuture(concurrent.futures.Future[_T]):
    """A spawn's future: logs an exception nobody retrieved when dropped."""

    _retrieved = False

    def result(self, timeout: float | None = None) -> _T:
        self._retrieved = True
        return super().result(timeout)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        self._retrieved = True
        return super().exception(timeout)

    def __del__(self) -> None:
        if self._retrieved or not self.done() or self.cancelled():
            return
        error = super().exception(0)
        if error is not None:
            logger.error("Exception in a spawned task nobody retrieved:", exc_info=error)


class _Spawn:
    """A spawned task from the caller's call until it has ended (kept in
    ``LoopRun.background`` under its task, where the task listing reads what
    it noted: see ``_tasks.Spawned``)."""

    def __init__(
        self,
        run: LoopRun,
        coro: Coroutine[Any, Any, Any],
        future: _SpawnedFuture[Any],
        site: Site | None,
    ) -> None:
        self.run = run
        self.coro = coro
        self.future = future
        self.site = site
        self.started = False
        self.context = contextvars.copy_context()
        self.task: asyncio.Task[Any] | None = None
        self.made = 0.0
        self.number = 0

    def start(self) -> None:
        run = self.run
        run.pending.discard(self)
        if run.stopping:  # spawned as the loop began to stop: never runs
            self.abort()
            return
        self.started = True
        enter_loop_thread(background_executor, self.context)
        # The task runs in the context start() ran in, where Python lets a task
        # be given one: a copy of it would hold the same values.
        if self.site is not None:  # notes are on: the listing reads them here
            self.made = time.monotonic()
            self.number = _tasks.next_number()
        _tasks.maker_of_next = _tasks.SPAWNED  # for the monitor's task factory
        if TASKS_TAKE_A_CONTEXT:
            task = run.loop.create_task(self.coro, context=self.context)
        else:  # pragma: no cover - Python 3.10
            task = run.loop.create_task(self.coro)
        _tasks.maker_of_next = None  # taken, unless no factory of ours ran
        run.background[task] = self
        if getattr(self.coro, "cr_code", None) is _PROTECTED_CODE:
            # spawn(shutdown_waits_for(x)): the task is only x's wrapper, so
            # the sequence leaves it to end with x, and the future gets x's outcome.
            run.protecting.add(task)
            task.add_done_callback(run.protecting.discard)
        self.task = task
        task.add_done_callback(self._on_done)

    def _on_done(self, task: asyncio.Task[Any]) -> None:
        self.run.background.pop(task, None)
        if task.cancelled():
            self.future.cancel()
        elif task.exception() is not None:
            self.future.set_exception(task.exception())
        else:
            self.future.set_result(task.result())

    def abort(self) -> None:
        """The loop stopped before the task could start: cancel its future."""
        if not self.started:
            self.started = True
            self.coro.close()
            self.future.cancel()


# Told of each spawn handed to the loop: how the test helpers
# (django_looptoken.testing) follow spawned work. Empty outside tests.
spawn_watchers: list[Callable[[_Spawn], None]] = []


def spawn(awaitable: Awaitable[_T]) -> concurrent.futures.Future[_T]:
    """Start ``awaitable`` as a background task on the shared loop; return at once.

    The loop keeps it alive until it finishes; an exception nobody retrieves
    from the returned future is logged. Cancelled at shutdown unless wrapped
    in ``shutdown_waits_for``.
    """
    coro = _as_coroutine(awaitable, "spawn", check_thread=False)
    try:
        run = runtime().running_run()
    except BaseException:
        coro.close()
        raise
    future: _SpawnedFuture[_T] = _SpawnedFuture()
    # Where the caller is, for the task listing: one frame, taken here (a
    # helper would take one more); the line is worked out when listed.
    site: Site | None = None
    if _tasks.NOTE_TASKS:
        caller = sys._getframe(1)
        site = caller.f_code, caller.f_lasti
    spawned = _Spawn(run, coro, future, site)
    # No token is held for the task (shutdown cancels it, it does not wait for
    # it); if the loop stops before the task starts, abort() cancels the future.
    run.start_soon(spawned, spawned.start, spawned.context, coro, "task")
    for watch in spawn_watchers:
        watch(spawned)
    return future


def shutdown_waits_for(awaitable: Awaitable[_T]) -> Awaitable[_T]:
    """Protect ``awaitable`` from the shutdown sequence (aiorun's semantics).

    Awaiting the result works like ``asyncio.shield``; in addition, the
    shutdown sequence does not cancel the work and waits for it (up to
    ``SHUTDOWN_TIMEOUT``). ``spawn(shutdown_waits_for(coro))`` says "finish
    this even if the process is asked to stop".
    """
    _check_awaitable(awaitable, "shutdown_waits_for")
    return _protected(awaitable)


async def _protected(awaitable: Awaitable[_T]) -> _T:
    inner = asyncio.ensure_future(awaitable)
    run = runtime().run_for(asyncio.get_running_loop())
    if run is not None:
        run.protected.add(inner)
        inner.add_done_callback(run.protected.discard)
    try:
        return await asyncio.shield(inner)
    except asyncio.CancelledError:
        inner.add_done_callback(_log_orphan_error)
        raise


_PROTECTED_CODE = _protected.__code__


def _log_orphan_error(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error(
            "Exception in shutdown_waits_for() work whose awaiter was cancelled:",
            exc_info=task.exception(),
        )


# -- checking what callers pass -------------------------------------------------


def _as_coroutine(
    awaitable: Awaitable[_T], name: str, *, check_thread: bool
) -> Coroutine[Any, Any, _T]:
    """Check ``awaitable`` and return it as a coroutine; never leaks it on error."""
    if check_thread:
        try:
            _check_thread(name)
        except RuntimeError:
            _close_if_coroutine(awaitable)
            raise
    if inspect.iscoroutine(awaitable):
        return awaitable
    _check_awaitable(awaitable, name)
    return _await(awaitable)


def _check_awaitable(awaitable: object, name: str) -> None:
    if inspect.isawaitable(awaitable):
        return
    if callable(awaitable) and _is_coroutine_function(awaitable):
        name_of = getattr(awaitable, "__qualname__", repr(awaitable))
        raise TypeError(
            f"{name}() takes an awaitable, but got the coroutine function {name_of} "
            f"itself: call it first, as in {name}({name_of}(...))."
        )
    raise TypeError(
        f"{name}() takes an awaitable (a coroutine, Task or Future), "
        f"not {type(awaitable).__name__}: {awaitable!r}."
    )


def _check_thread(name: str) -> None:
    running = asyncio._get_running_loop()
    if running is not None:
        where = (
            "the shared loop's own thread"
            if runtime().run_for(running) is not None
            else "a thread that is running an event loop"
        )
        raise RuntimeError(
            f"{name}() was called from {where}, where blocking would deadlock; "
            "in async code use 'await' on the awaitable instead."
        )


def _is_coroutine_function(obj: object) -> bool:
    # asgiref's test also knows functions marked with markcoroutinefunction,
    # such as what an async class-based view's as_view() returns.
    return iscoroutinefunction(obj) or iscoroutinefunction(getattr(obj, "__call__", None))  # noqa: B004


async def _await(awaitable: Awaitable[_T]) -> _T:
    return await awaitable


def _close_if_coroutine(obj: object) -> None:
    if inspect.iscoroutine(obj):
        obj.close()


def _timeout(timeout: float | None, name: str) -> float | None:
    if timeout is None:
        return looptoken_settings.DEFAULT_TIMEOUT
    return validate_timeout(timeout, name)

"""Where thread-sensitive sync code called from the shared loop runs.

asgiref's ``sync_to_async(thread_sensitive=True)`` (which Django's async ORM
uses) runs its function in the executor it finds in
``AsyncToSync.executors.current``. A coroutine run by ``await_`` finds the
blocked caller there, so ORM calls land in the request's own thread and
transaction; a spawned task finds ``background_executor``, one thread of the
app's that wraps each call in ``close_old_connections()``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import threading
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import asgiref.local
from asgiref.sync import AsyncToSync

from django_looptoken._native_pool import NativeThreadPool

try:
    # asgiref's own rule for moving a context between threads (it re-homes
    # its Local storage); using it keeps "as with async_to_sync" exact.
    from asgiref.sync import _restore_context as restore_context
except ImportError:  # pragma: no cover - older or newer asgiref

    def restore_context(context: contextvars.Context) -> None:
        """Set in the current context every variable ``context`` has changed."""
        for var, value in context.items():
            try:
                if var.get() is value:
                    continue
            except LookupError:
                pass
            var.set(value)


__all__ = [
    "BackgroundExecutor",
    "WorkItem",
    "background_executor",
    "caller_state",
    "current_executor",
    "enter_loop_thread",
    "restore_context",
    "return_to_caller",
    "set_current_executor",
]

_P = ParamSpec("_P")
_T = TypeVar("_T")


def current_executor() -> concurrent.futures.Executor | None:
    """The executor thread-sensitive calls would use in this context now."""
    return getattr(AsyncToSync.executors, "current", None)


def set_current_executor(executor: concurrent.futures.Executor | None) -> None:
    """Make ``executor`` receive this context's thread-sensitive calls."""
    AsyncToSync.executors.current = executor


# Moving a context between threads as asgiref does costs two Local accesses
# per await_ (a lock, a context manager and, when unset, an exception each)
# plus asgiref's generic copy. When asgiref's layout is the known one (its
# Local data in thread-tagged _Storage objects, AsyncToSync.executors in one
# ContextVar of its own), the same effect is had by touching the variables
# directly, several times cheaper on await_'s hot path. Any other layout
# takes the generic path through asgiref's own functions.
_Storage: Any = getattr(asgiref.local, "_Storage", None)
_EXECUTORS_VAR: contextvars.ContextVar[Any] | None = getattr(
    getattr(AsyncToSync.executors, "_storage", None), "_data", None
)
_MISSING = object()


def _direct_access_works() -> bool:
    if not isinstance(_EXECUTORS_VAR, contextvars.ContextVar) or _Storage is None:
        return False
    marker = object()

    def probe() -> bool:
        _EXECUTORS_VAR.set(_Storage(threading.get_ident(), {"current": marker}))
        return current_executor() is marker

    return contextvars.Context().run(probe)


_DIRECT = _direct_access_works()


def caller_state() -> object:
    """On the caller's thread, before the call: what ``return_to_caller`` restores."""
    return None if _DIRECT else current_executor()


# While a test collects spawned work (django_looptoken.testing): told of each
# call and spawn entering the loop thread, so that spawned tasks' calls can
# run in the test's thread while it blocks in a call of its own.
call_watcher: Callable[[concurrent.futures.Executor, contextvars.Context], None] | None = None


def enter_loop_thread(executor: concurrent.futures.Executor, context: contextvars.Context) -> None:
    """On the loop thread, running in ``context`` (copied from the caller): make
    asgiref's Local data visible here and route thread-sensitive calls."""
    if call_watcher is not None:
        call_watcher(executor, context)
    if not _DIRECT:
        restore_context(context)
        set_current_executor(executor)
        return
    here = threading.get_ident()
    for var, value in context.items():
        if type(value) is _Storage and var is not _EXECUTORS_VAR:
            var.set(_Storage(here, value.data))
    _EXECUTORS_VAR.set(_Storage(here, {"current": executor}))  # type: ignore[union-attr]


def return_to_caller(context: contextvars.Context, state: object) -> None:
    """On the caller's thread, after the call: take over what the coroutine set.

    The executor routing stays the caller's own; every other variable the
    coroutine changed is copied, asgiref's Local data re-homed to this thread.
    """
    if not _DIRECT:
        restore_context(context)
        set_current_executor(state)  # type: ignore[arg-type]
        return
    here = threading.get_ident()
    for var, value in context.items():
        if var is _EXECUTORS_VAR:
            continue
        current = var.get(_MISSING)
        if current is value:
            continue
        if type(value) is _Storage:
            if type(current) is _Storage and current.data is value.data:
                continue  # only re-homed on the way in: nothing was assigned
            value = _Storage(here, value.data)
        var.set(value)


class WorkItem:
    """A sync call handed to another thread, with the future that reports it."""

    __slots__ = ("args", "fn", "future", "kwargs")

    def __init__(
        self,
        future: concurrent.futures.Future[Any],
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        self.future = future
        self.fn = fn
        self.args = args
        self.kwargs = kwargs

    def run(self) -> None:
        """Run the call here and settle the future; interrupts still propagate."""
        if not self.future.set_running_or_notify_cancel():
            return
        try:
            result = self.fn(*self.args, **self.kwargs)
        except Exception as exc:
            self.future.set_exception(exc)
        except BaseException:
            # KeyboardInterrupt and the like belong to this thread, not to the
            # coroutine; the coroutine only learns that its call was cut.
            self.future.set_exception(asyncio.CancelledError())
            raise
        else:
            self.future.set_result(result)


def _with_fresh_connections(fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
    from django.db import close_old_connections

    close_old_connections()
    try:
        return fn(*args, **kwargs)
    finally:
        close_old_connections()


class BackgroundExecutor(concurrent.futures.Executor):
    """The thread where background tasks' thread-sensitive calls run.

    One thread, as asgiref's thread-sensitive mode requires, started on first
    use and replaced in a forked child. ``close_old_connections()`` around
    each call means no stale or leaked database connections.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pool: concurrent.futures.Executor | None = None
        # While a test collects spawned work (django_looptoken.testing), the
        # calls go there instead: to the test's thread and its transaction.
        self.redirect: concurrent.futures.Executor | None = None

    def forget_after_fork(self) -> None:
        """In a forked child: the parent's thread is gone, start afresh."""
        self._lock = threading.Lock()
        self._pool = None

    def _get_pool(self) -> concurrent.futures.Executor:
        with self._lock:
            if self._pool is None:
                # Not a ThreadPoolExecutor: the exit would wait for a call
                # stuck in it for ever; and under gevent the loop thread,
                # which submits here, would start a greenlet that never runs.
                self._pool = NativeThreadPool(1, "looptoken-sync")
            return self._pool

    def submit(
        self, fn: Callable[..., _T], /, *args: Any, **kwargs: Any
    ) -> concurrent.futures.Future[_T]:
        """Run ``fn`` in the background thread with fresh connections."""
        redirect = self.redirect
        if redirect is not None:
            return redirect.submit(fn, *args, **kwargs)
        return self._get_pool().submit(_with_fresh_connections, fn, *args, **kwargs)

    def run_item(self, item: WorkItem) -> None:
        """Run a call first handed to a caller that no longer waits."""
        redirect = self.redirect
        if redirect is not None:
            redirect.submit(item.run)
            return
        self._get_pool().submit(_with_fresh_connections, item.run)


background_executor = BackgroundExecutor()

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
import os
import threading
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from asgiref.sync import AsyncToSync

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
    "current_executor",
    "enter_loop_thread",
    "restore_context",
    "restore_executor",
    "save_executor",
    "set_current_executor",
]

_P = ParamSpec("_P")
_T = TypeVar("_T")


def current_executor() -> concurrent.futures.Executor | None:
    """The executor thread-sensitive calls would use in this context now."""
    return getattr(AsyncToSync.executors, "current", None)


def _find_executors_var() -> contextvars.ContextVar[Any] | None:
    # asgiref keeps AsyncToSync.executors in one ContextVar of its own. Saving
    # and restoring that variable directly is ~50x cheaper than going through
    # the Local (a lock, a context manager and, when unset, an exception),
    # which matters on await_'s hot path. Unknown layouts use the Local.
    var = getattr(getattr(AsyncToSync.executors, "_storage", None), "_data", None)
    return var if isinstance(var, contextvars.ContextVar) else None


_EXECUTORS_VAR = _find_executors_var()
_UNSET = object()


def save_executor() -> object:
    """Snapshot this context's executor setting, for ``restore_executor``."""
    if _EXECUTORS_VAR is None:
        return current_executor()
    return _EXECUTORS_VAR.get(_UNSET)


def restore_executor(saved: object) -> None:
    """Put back the executor setting ``save_executor`` returned."""
    if _EXECUTORS_VAR is None:
        set_current_executor(saved)  # type: ignore[arg-type]
    elif saved is _UNSET:
        set_current_executor(None)  # explicit None: the next snapshot is cheap
    else:
        _EXECUTORS_VAR.set(saved)


def set_current_executor(executor: concurrent.futures.Executor | None) -> None:
    """Make ``executor`` receive this context's thread-sensitive calls."""
    AsyncToSync.executors.current = executor


def enter_loop_thread(executor: concurrent.futures.Executor) -> None:
    """On the loop thread, inside a context copied from another thread:
    adopt the caller's asgiref Local data and route thread-sensitive calls."""
    restore_context(contextvars.copy_context())
    set_current_executor(executor)


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
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None

    def forget_after_fork(self) -> None:
        """In a forked child: the parent's thread is gone, start afresh."""
        self._lock = threading.Lock()
        self._pool = None

    def _get_pool(self) -> concurrent.futures.ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = concurrent.futures.ThreadPoolExecutor(
                    1, thread_name_prefix="looptoken-sync"
                )
            return self._pool

    def submit(
        self, fn: Callable[..., _T], /, *args: Any, **kwargs: Any
    ) -> concurrent.futures.Future[_T]:
        """Run ``fn`` in the background thread with fresh connections."""
        return self._get_pool().submit(_with_fresh_connections, fn, *args, **kwargs)

    def run_item(self, item: WorkItem) -> None:
        """Run a call first handed to a caller that no longer waits."""
        self._get_pool().submit(_with_fresh_connections, item.run)


background_executor = BackgroundExecutor()
os.register_at_fork(after_in_child=background_executor.forget_after_fork)

"""A pool of OS threads for the loop's executors, which Python's exit does not wait for.

The loop's default executor, and the background thread where spawned tasks'
thread-sensitive calls run, are such pools. Python's exit joins every thread
of a ``ThreadPoolExecutor``: one call stuck in it (a query that never
returns) would hold the process for ever after the drain gave up on it, and
asyncio's own ``shutdown_default_executor()``, cut at its deadline, blocks
the loop's thread until the executor's calls end. This pool's threads are
the OS's own (``_thread``), which the exit does not join, and its shutdown
is awaited without blocking the loop: ``SHUTDOWN_TIMEOUT`` bounds the exit.
Under gevent, too, a ``ThreadPoolExecutor`` started from the loop's thread
would make greenlets on that thread's hub, which never runs while the loop
does; this pool uses only native locks, so the loop thread can hand it work
and the caller's future settles from the pool's thread. Under eventlet,
whose loop is a green thread, the pool's threads and locks are eventlet's
green ones (see ``_greenlets``), so its work yields to the hub as the
loop's does.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

from django_looptoken._greenlets import monkey_patched, native_lock, start_native_thread

_T = TypeVar("_T")

_WorkItem = tuple[
    "concurrent.futures.Future[Any]", Callable[..., Any], tuple[Any, ...], dict[str, Any]
]


class NativeThreadPool(concurrent.futures.ThreadPoolExecutor):
    """Run calls in up to ``max_workers`` OS threads, started as work arrives
    and named ``<thread_name_prefix>_N`` (as a ``ThreadPoolExecutor`` names them).

    A ``ThreadPoolExecutor`` by type only, because asyncio's
    ``set_default_executor`` takes nothing else: it shares none of its
    machinery (queue, locks, threads), all of which gevent patches.
    """

    def __init__(self, max_workers: int, thread_name_prefix: str) -> None:  # no super()
        self._limit = max_workers
        self._prefix = thread_name_prefix
        self._started = 0
        self._lock = native_lock()
        self._queued: deque[_WorkItem] = deque()
        # One native lock per idle thread, held until work arrives for it.
        self._sleepers: list[Any] = []
        self._running = 0
        self._closed = False
        # Held while any thread runs: shutdown(wait=True) waits for it.
        self._all_gone = native_lock()

    def submit(
        self, fn: Callable[..., _T], /, *args: Any, **kwargs: Any
    ) -> concurrent.futures.Future[_T]:
        """Queue ``fn(*args, **kwargs)``; its future settles in a pool thread."""
        future: concurrent.futures.Future[_T] = concurrent.futures.Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot schedule new futures after shutdown")
            self._queued.append((future, fn, args, kwargs))
            if self._sleepers:
                self._sleepers.pop().release()
                return future
            if self._running >= self._limit:
                return future  # a busy thread takes it next
            if self._running == 0:
                self._all_gone.acquire()
            self._running += 1
            name = f"{self._prefix}_{self._started}"
            self._started += 1
        start_native_thread(lambda: self._serve(name))
        return future

    def _serve(self, name: str) -> None:
        if monkey_patched() is None:  # gevent's threading would make a greenlet's
            threading.current_thread().name = name  # what thread dumps and logs show
        wake = native_lock()
        wake.acquire()
        while True:
            with self._lock:
                item = self._queued.popleft() if self._queued else None
                if item is None:
                    if self._closed:
                        self._running -= 1
                        if self._running == 0:
                            self._all_gone.release()
                        return
                    self._sleepers.append(wake)
            if item is None:
                wake.acquire()  # released by submit() or shutdown()
                continue
            future, fn, args, kwargs = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                future.set_exception(exc)
            else:
                future.set_result(result)
            del future, fn, args, kwargs, item  # nothing of a call outlives it

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Take no more work; the threads finish what is queued and end."""
        with self._lock:
            self._closed = True
            if cancel_futures:
                while self._queued:
                    self._queued.popleft()[0].cancel()
            idle, self._sleepers = self._sleepers, []
            running = self._running > 0
        for wake in idle:
            wake.release()
        if wait and running:
            self._all_gone.acquire()
            self._all_gone.release()


_pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, NativeThreadPool] = (
    weakref.WeakKeyDictionary()
)


def give_native_executor(loop: asyncio.AbstractEventLoop, max_workers: int) -> None:
    """Make a native pool ``loop``'s default executor (threads ``looptoken-executor_N``)."""
    pool = _pools[loop] = NativeThreadPool(max_workers, "looptoken-executor")
    loop.set_default_executor(pool)


async def shutdown_native_executor(loop: asyncio.AbstractEventLoop) -> None:
    """``loop.shutdown_default_executor()`` for a native pool: the wait for
    its threads happens in a native thread (asyncio's own would start a
    greenlet there under gevent), and the loop runs on meanwhile; cut at
    the drain's deadline, it leaves the threads to end with the process."""
    pool = _pools.pop(loop, None)
    if pool is None:
        return
    done = loop.create_future()

    def shut_down() -> None:
        try:
            pool.shutdown(wait=True)
        finally:
            loop.call_soon_threadsafe(_settle, done)

    start_native_thread(shut_down)
    await done


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def has_native_executor(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether ``loop``'s default executor is a native pool."""
    return loop in _pools

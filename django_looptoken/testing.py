"""Testing code that uses the shared loop: spawned work made part of the test,
the loop's counters, a different ``LOOPTOKEN`` for one test, and a mixin for
Django's ``TestCase``. The pytest fixtures (``pytest_plugin``) are built on these.

A spawned task's thread-sensitive calls (the ORM) normally run in the app's
background thread, on a connection of its own: outside the test's transaction.
While a ``SpawnedWork`` collects, they run in the test's thread instead, when
the test waits for spawned work or blocks in a call of its own (``await_``,
a view), so their writes roll back with the test.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import os
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from django.test import override_settings

from django_looptoken import _handback, bridge
from django_looptoken._call import Call
from django_looptoken._handback import WorkItem, background_executor
from django_looptoken._runtime import STOPPED, runtime
from django_looptoken._status import snapshot

__all__ = [
    "LoopStatus",
    "SpawnedWork",
    "SpawnedWorkError",
    "SpawnedWorkMixin",
    "override_looptoken",
]

_T = TypeVar("_T")

# How long, at the end of a test, spawned work may take to finish (and, once
# cancelled, to clean up) before the test fails with what is still running.
WAIT_SECONDS = 5.0
SETTLE_SECONDS = 5.0
_PACKAGE = os.path.dirname(os.path.abspath(__file__))

# Set in the collecting thread's context: how the loop thread tells the calls
# that thread makes (await_, views) from other threads' calls.
_COLLECTING: contextvars.ContextVar[SpawnedWork | None] = contextvars.ContextVar(
    "looptoken_collecting", default=None
)


class SpawnedWorkError(AssertionError):
    """A task spawned during the test failed, or was still running at its end."""


@dataclass(eq=False)  # compared and hashed by identity
class _Followed:
    spawned: Any  # bridge._Spawn
    name: str
    where: str
    reported: bool = False

    @property
    def future(self) -> concurrent.futures.Future[Any]:
        return self.spawned.future  # type: ignore[no-any-return]


def _spawn_site() -> str:
    """The innermost frame outside this package: the code that called spawn()."""
    for frame in reversed(traceback.extract_stack()):
        if not os.path.abspath(frame.filename).startswith(_PACKAGE + os.sep):
            return f"{frame.filename}:{frame.lineno} in {frame.name}"
    return "an unknown place"


class _ToTheTestThread(concurrent.futures.Executor):
    """What spawned tasks' thread-sensitive calls are submitted to meanwhile."""

    def __init__(self, work: SpawnedWork) -> None:
        self._work = work

    def submit(
        self, fn: Callable[..., _T], /, *args: Any, **kwargs: Any
    ) -> concurrent.futures.Future[_T]:
        """Queue ``fn`` for the collecting thread (called on the loop thread)."""
        return self._work._queue(fn, args, kwargs)


class SpawnedWork:
    """Follows every task ``spawn()`` starts while it collects.

    The tasks' thread-sensitive calls are queued for the thread that started
    collecting and run there by ``wait()`` (so, in a test, on the test's
    database connection and in its transaction). Use it as a context manager,
    or ``start()`` and ``close()``; ``close()`` waits for the work first.
    """

    def __init__(self, timeout: float = WAIT_SECONDS) -> None:
        self.timeout = timeout
        self._changed = threading.Condition()
        self._work: deque[WorkItem] = deque()
        self._followed: list[_Followed] = []
        self._thread: int | None = None
        self._had_app_token = False
        self._executor = _ToTheTestThread(self)
        # The call the collecting thread is blocked in (loop thread only).
        self._call: Call[Any] | None = None
        self._marker: contextvars.Token[SpawnedWork | None] | None = None

    # -- collecting -------------------------------------------------------------

    def start(self) -> None:
        """Begin following spawned tasks; their sync calls come to this thread."""
        if background_executor.redirect is not None:
            raise RuntimeError(
                "Spawned work is already being collected (spawned_work, SpawnedWorkMixin or "
                "SpawnedWork): use one collector per test."
            )
        self._thread = threading.get_ident()
        self._had_app_token = runtime().app_token_run is not None
        self._marker = _COLLECTING.set(self)
        bridge.spawn_watchers.append(self._watch)
        _handback.call_watcher = self._on_call
        background_executor.redirect = self._executor

    def close(self) -> None:
        """Wait for the spawned work (``finish()``), then stop collecting.

        The loop is restored as the test found it: if the test shut it down
        and the app held its token (``AUTOSTART``), a fresh loop is started.
        """
        try:
            self.finish()
        finally:
            self._stop()

    def _stop(self) -> None:
        with contextlib.suppress(ValueError):
            bridge.spawn_watchers.remove(self._watch)
        if _handback.call_watcher == self._on_call:
            _handback.call_watcher = None
        if self._marker is not None:
            try:
                _COLLECTING.reset(self._marker)
            except ValueError:  # stopped from another context
                _COLLECTING.set(None)
            self._marker = None
        self._run_queued()  # calls of tasks nobody followed, while still in the test
        if background_executor.redirect is self._executor:
            background_executor.redirect = None
        self._run_queued()  # anything that arrived as the redirect was cleared
        if self._had_app_token and runtime().app_token_run is None:
            runtime().hold_app_token()

    def __enter__(self) -> SpawnedWork:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if exc_info[0] is None:
            self.close()
        else:  # the block failed: clean up, without hiding its error
            self.discard()

    def discard(self) -> None:
        """Stop collecting without checking: cancel what still runs (its
        cleanup's calls run here), then stop, as ``close()`` does."""
        try:
            self._cancel_unfinished()
        finally:
            self._stop()

    def _watch(self, spawned: Any) -> None:
        coro = spawned.coro
        name = getattr(coro, "__qualname__", None) or type(coro).__qualname__
        followed = _Followed(spawned, f"{name}()", _spawn_site())
        with self._changed:
            self._followed.append(followed)
        spawned.future.add_done_callback(self._notify)

    def _notify(self, _: object = None) -> None:
        with self._changed:
            self._changed.notify_all()

    # -- the executor spawned tasks' thread-sensitive calls go to ------------------

    def _on_call(
        self, executor: concurrent.futures.Executor, context: contextvars.Context
    ) -> None:
        # On the loop thread: a call of the collecting thread's starts.
        if isinstance(executor, Call) and context.get(_COLLECTING) is self:
            self._call = executor
            with self._changed:
                queued, self._work = self._work, deque()
            for item in queued:  # what came before: the thread serves it now
                executor.submit(item.run)

    def _queue(
        self, fn: Callable[..., _T], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> concurrent.futures.Future[_T]:
        # On the loop thread. While the collecting thread blocks in a call, it
        # runs the work there at once: waiting for it would never end.
        call = self._call
        if call is not None:
            if not (call._done or call._caller_left):
                return call.submit(fn, *args, **kwargs)
            self._call = None
        future: concurrent.futures.Future[_T] = concurrent.futures.Future()
        with self._changed:
            self._work.append(WorkItem(future, fn, args, kwargs))
            self._changed.notify_all()
        return future

    def _run_queued(self) -> None:
        while True:
            with self._changed:
                if not self._work:
                    return
                item = self._work.popleft()
            item.run()

    # -- waiting ------------------------------------------------------------------

    @property
    def tasks(self) -> list[concurrent.futures.Future[Any]]:
        """The futures of the tasks spawned so far, in spawn order."""
        with self._changed:
            return [followed.future for followed in self._followed]

    def wait(self, timeout: float | None = None) -> None:
        """Run the spawned tasks' sync calls here until all of them have finished.

        Raises ``SpawnedWorkError`` naming the tasks still running after
        ``timeout`` seconds (default ``self.timeout``) and where each was
        spawned, or for the first task that failed with the exception it
        raised (once: a later ``wait()`` does not raise it again).
        """
        if threading.get_ident() != self._thread:
            raise RuntimeError("wait() runs the tasks' calls, so call it from the test's thread.")
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        self._serve(deadline)
        unfinished = self._unfinished()
        if unfinished:
            raise SpawnedWorkError(
                f"{len(unfinished)} spawned task(s) still running after "
                f"{self.timeout if timeout is None else timeout} s:\n"
                + "\n".join(f"  {f.name}, spawned at {f.where}" for f in unfinished)
            )
        self._raise_first_failure()

    def finish(self) -> None:
        """The end of the test: ``wait()``; tasks still running are cancelled
        and reported (``SpawnedWorkError``), so none leaks into the next test."""
        try:
            self.wait()
        except SpawnedWorkError:
            stuck = self._cancel_unfinished()
            unfinished = [f for f in self._followed if f in stuck]
            if not unfinished:
                raise
            raise SpawnedWorkError(
                f"{len(unfinished)} spawned task(s) still running at the end of the test "
                f"(waited {self.timeout} s), cancelled:\n"
                + "\n".join(
                    f"  {f.name}, spawned at {f.where}, waiting at {stuck[f]}" for f in unfinished
                )
                + "\nAwait it, or wait for it in the test (spawned_work.wait()), or raise the "
                "wait with spawned_work.timeout."
            ) from None

    def shutdown(self, timeout: float | None = None) -> None:
        """``django_looptoken.shutdown(timeout)``, while this thread runs the
        tasks' sync calls: work protected by ``shutdown_waits_for`` can finish
        its ORM calls, in the test's transaction. At the end of the test the
        app's loop is started again if it was running (``AUTOSTART``)."""
        from django_looptoken.conf import looptoken_settings
        from django_looptoken.tokens import shutdown

        stopped: concurrent.futures.Future[None] = concurrent.futures.Future()

        def stop() -> None:
            try:
                shutdown(timeout)
            except BaseException as exc:
                stopped.set_exception(exc)
            else:
                stopped.set_result(None)
            finally:
                self._notify()

        thread = threading.Thread(target=stop, name="looptoken-test-shutdown", daemon=True)
        thread.start()
        budget = looptoken_settings.SHUTDOWN_TIMEOUT if timeout is None else timeout
        self._serve(time.monotonic() + budget + SETTLE_SECONDS, lambda: not stopped.done())
        stopped.result(SETTLE_SECONDS)

    def _serve(self, deadline: float, busy: Callable[[], object] | None = None) -> None:
        """Run queued calls until ``busy()`` is false (default: until every
        followed task has finished) or the deadline passes."""
        busy = busy or self._unfinished
        while True:
            self._run_queued()
            with self._changed:
                if self._work:
                    continue
                if not busy():
                    return
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                self._changed.wait(remaining)

    def _unfinished(self) -> list[_Followed]:
        return [f for f in list(self._followed) if not f.future.done()]

    def _raise_first_failure(self) -> None:
        for followed in list(self._followed):
            future = followed.future
            if followed.reported or future.cancelled() or future.exception() is None:
                continue
            followed.reported = True
            raise SpawnedWorkError(
                f"The spawned task {followed.name}, spawned at {followed.where}, raised "
                f"{type(future.exception()).__name__}: {future.exception()}"
            ) from future.exception()

    def _cancel_unfinished(self) -> dict[_Followed, str]:
        """Cancel what still runs (on the loop), serving its cleanup's calls here.

        Returns where each task was waiting when cancelled.
        """
        unfinished = self._unfinished()
        if not unfinished:
            return {}
        stuck: concurrent.futures.Future[dict[_Followed, str]] = concurrent.futures.Future()

        def cancel_on_loop() -> None:
            found = {}
            for followed in unfinished:
                task = followed.spawned.task
                found[followed] = _waiting_at(task)
                if task is not None:
                    task.cancel()
            stuck.set_result(found)

        try:
            unfinished[0].spawned.run.loop.call_soon_threadsafe(cancel_on_loop)
            where = stuck.result(SETTLE_SECONDS)
        except (RuntimeError, concurrent.futures.TimeoutError):  # the loop is gone
            where = {f: "an unknown place (the loop no longer runs)" for f in unfinished}
        self._serve(time.monotonic() + SETTLE_SECONDS)
        return where


def _waiting_at(task: asyncio.Task[Any] | None) -> str:
    if task is None:
        return "its start (it never ran)"
    frames = task.get_stack()
    if not frames:
        return "an unknown place"
    frame = frames[-1]
    return f"{frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}"


class SpawnedWorkMixin:
    """For ``django.test.TestCase`` (or ``SimpleTestCase``) subclasses.

    Each test collects its spawned work in ``self.spawned_work`` (a
    ``SpawnedWork``): the tasks' ORM calls run in the test's transaction when
    the test calls ``self.spawned_work.wait()``, and at the end of the test,
    before the rollback, every spawned task is waited for; one still running
    is cancelled and fails the test with its name and where it was spawned.
    """

    spawned_work: SpawnedWork

    def setUp(self) -> None:
        """Start collecting (subclasses overriding ``setUp`` call ``super().setUp()``)."""
        super().setUp()  # type: ignore[misc]
        self.spawned_work = SpawnedWork()
        self.spawned_work.start()
        self.addCleanup(self.spawned_work.close)  # type: ignore[attr-defined]


# -- the loop's status -----------------------------------------------------------


class LoopStatus:
    """The shared loop's status now, and what changed since this was made.

    Call it for ``django_looptoken.status()``; ``since_start()`` gives the
    counters' increase since then; ``pending_tasks()`` what runs on the loop.
    """

    COUNTERS = ("await_calls", "await_errors", "await_timeouts")

    def __init__(self) -> None:
        self._run = runtime().current_run
        self._start = snapshot(self._run)

    def __call__(self) -> dict[str, Any]:
        return snapshot(runtime().current_run)

    def since_start(self) -> dict[str, int]:
        """How much each counter grew since the start (a new loop counts from zero)."""
        run = runtime().current_run
        now = snapshot(run)
        base = self._start if run is self._run else dict.fromkeys(self.COUNTERS, 0)
        return {key: int(now[key]) - int(base[key]) for key in self.COUNTERS}

    def pending_tasks(self) -> list[str]:
        """The tasks on the loop now, each as its coroutine's name (``[]`` when none)."""
        run = runtime().current_run
        if run is None:
            return []
        found: concurrent.futures.Future[list[str]] = concurrent.futures.Future()

        def look() -> None:
            found.set_result(
                sorted(
                    getattr(task.get_coro(), "__qualname__", repr(task.get_coro()))
                    for task in asyncio.all_tasks(run.loop)
                )
            )

        try:
            run.loop.call_soon_threadsafe(look)
        except RuntimeError:  # closed meanwhile
            return []
        return found.result(SETTLE_SECONDS)


# -- a different LOOPTOKEN for a while ----------------------------------------------


def _stop_loop() -> None:
    from django_looptoken.tokens import shutdown

    if runtime().state is not STOPPED:
        shutdown()


@contextlib.contextmanager
def override_looptoken(**values: Any) -> Iterator[None]:
    """Run the block with these ``LOOPTOKEN`` keys and a loop started from them.

    The loop running now is shut down first; inside, the app's token is held
    if the new ``AUTOSTART`` says so, as at app load. After the block, that
    loop is shut down, the settings restored, and the app's token held again
    if it was before. Start no loop work that must outlive the block.
    """
    from django.conf import settings

    from django_looptoken.conf import looptoken_settings

    had_app_token = runtime().app_token_run is not None
    current = getattr(settings, "LOOPTOKEN", {})
    current = current if isinstance(current, dict) else {}
    _stop_loop()
    try:
        with override_settings(LOOPTOKEN={**current, **values}):
            try:
                if looptoken_settings.AUTOSTART:
                    runtime().hold_app_token()
                yield
            finally:
                _stop_loop()
    finally:
        if had_app_token:
            runtime().hold_app_token()

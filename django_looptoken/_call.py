"""One blocking call into the shared loop, seen from both of its threads.

The caller's thread sleeps on a waker until the task ends. Meanwhile it is
the task's executor for thread-sensitive sync code (``submit``): such work is
queued here and run by the sleeping thread, which the loop thread wakes for
it. The loop thread changes the call's state first and wakes the caller
after; the caller checks the state before each sleep.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import logging
import sys
import time
from collections import deque
from collections.abc import Callable, Coroutine, Generator
from types import FrameType
from typing import Any, Generic, TypeVar

from django_looptoken import _greenlets, _tasks, _waiting
from django_looptoken._handback import (
    WorkItem,
    background_executor,
    caller_state,
    enter_loop_thread,
    return_to_caller,
)
from django_looptoken._loop_run import LoopRun
from django_looptoken._tasks import Site, caller_of
from django_looptoken.exceptions import LoopStoppedError

_T = TypeVar("_T")


class _Suspend:
    """An awaitable that suspends once and resumes on the next ``send``."""

    def __await__(self) -> Generator[None, None, None]:
        yield


_FIRST_STEP = _Suspend()

# create_task(context=...) is new in Python 3.11.
TASKS_TAKE_A_CONTEXT = sys.version_info >= (3, 11)

# After a call's timeout its task is cancelled; a coroutine that has not
# finished its cancellation this much later (it swallows CancelledError, or
# its cleanup blocks) no longer holds the caller: the caller gets TimeoutError
# anyway, and the task, still running, is logged and counted in the status.
TIMEOUT_GRACE_SECONDS = 1.0

logger = logging.getLogger("django_looptoken")


Waker = _waiting.LockWaker | _waiting.DescriptorWaker | _greenlets.GreenletWaker


def pick_waker(*, alone: bool, greenlet: bool) -> Waker:
    """How the loop thread will wake a caller: alone, the caller gets the GIL
    with the wake-up (its thread's descriptor waker); among other callers, the
    loop thread keeps it and serves them on (a lock). Under gevent, the
    caller's hub wakes it and runs other greenlets meanwhile (``greenlet``)."""
    if greenlet:
        return _greenlets.GreenletWaker()
    if alone:
        try:
            return _waiting.thread_waker()
        except OSError:  # out of file descriptors: a lock wakes it too, a little later
            pass
    return _waiting.LockWaker()


class Call(concurrent.futures.Executor, Generic[_T]):
    """Run ``coro`` on ``run``'s loop and block the calling thread for it."""

    __slots__ = (
        "_began",
        "_caller_left",
        "_context",
        "_coro",
        "_done",
        "_error",
        "_result",
        "_run",
        "_started",
        "_task",
        "_timed_out",
        "_timeout",
        "_timer",
        "_waker",
        "_work",
    )

    def __init__(self, run: LoopRun, coro: Coroutine[Any, Any, _T], timeout: float | None) -> None:
        self._run = run
        self._coro = coro
        self._timeout = timeout
        self._context = contextvars.copy_context()
        self._began = time.perf_counter()
        self._waker: Waker
        self._work: deque[WorkItem] = deque()
        self._caller_left = False
        self._task: asyncio.Task[None] | None = None
        self._started = False
        self._timer: asyncio.TimerHandle | None = None
        self._timed_out = False
        self._done = False
        self._result: _T | None = None
        self._error: BaseException | None = None

    # -- the caller's thread ---------------------------------------------------

    def wait(self) -> _T:
        """Run the call; return its result or raise its exception."""
        run = self._run
        state = caller_state()
        # Before start_soon(): from then on, the loop's end may wake this call.
        # Under eventlet the loop is a green thread of the caller's OS thread:
        # only a lock (eventlet's) wakes the caller without blocking the hub.
        self._waker = pick_waker(
            alone=not run.pending and not run.green_loop, greenlet=run.greenlet_callers
        )
        try:
            run.start_soon(self, self._start, self._context, self._coro, "call")
            self._serve_until_done()
        except LoopStoppedError:
            raise
        except BaseException:
            # Interrupted (Ctrl-C) anywhere after scheduling, even before the
            # first wait: the task must not run on unattended.
            self._leave()
            raise
        finally:
            run.pending.discard(self)
            # Values the coroutine set flow back to the caller, as with asgiref.
            return_to_caller(self._context, state)
            if self._done:
                self._cut_cycle()
        if self._error is not None:
            try:
                raise self._error
            finally:
                self._error = None
        return self._result  # type: ignore[return-value]

    def caller_site(self, frames: dict[int, FrameType]) -> Site | None:
        """Where the caller, blocked in ``wait()`` while the task is pending,
        called from (for the task listing, off the loop; under gevent its
        greenlet's stack is not among ``frames``: None)."""
        return caller_of(frames, Call.wait.__code__, self)

    def _cut_cycle(self) -> None:
        # The context routes thread-sensitive calls to this call and the task
        # runs in the context: call -> task -> context -> call. Cutting the
        # call's edges once the loop is done with them frees it by reference
        # counting; left to the cyclic GC, a collection ran every few hundred
        # calls and cost as much as the rest of await_'s bookkeeping.
        self._task = None
        del self._context

    def _serve_until_done(self) -> None:
        while True:
            while self._work:
                self._work.popleft().run()
            if self._done:
                return
            self._waker.wait()

    def _leave(self) -> None:
        # Nobody will run handed-back work here any more. submit() runs on the
        # loop thread, so the loop thread also moves what is queued to the
        # background thread (no lock needed), then cancels the task.
        self._caller_left = True
        try:
            self._run.loop.call_soon_threadsafe(self._abandon)
        except RuntimeError:  # the loop is closed: nothing can submit any more
            self._abandon()

    def _abandon(self) -> None:
        while self._work:
            background_executor.run_item(self._work.popleft())
        if self._task is not None:
            self._task.cancel()

    # -- the loop's thread -------------------------------------------------------

    def submit(
        self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any
    ) -> concurrent.futures.Future[Any]:
        """Queue thread-sensitive sync work for the waiting caller's thread."""
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        item = WorkItem(future, fn, args, kwargs)
        if not (self._caller_left or self._done):
            self._work.append(item)
            self._waker.wake()
        else:
            # A task that outlived its caller (it was spawned from the call,
            # or the caller was interrupted) still gets its sync work done.
            background_executor.run_item(item)
        return future

    def _start(self) -> None:
        # Runs in the call's context. The task runs in it too (where Python
        # lets a task be given one), so what the coroutine sets is there for
        # the caller to take over; older Pythons copy it back at the end.
        run = self._run
        run.await_calls += 1
        enter_loop_thread(self, self._context)
        drive = self._drive()
        drive.send(None)  # to its first await: see _drive
        _tasks.maker_of_next = self  # for the monitor's task factory: see caller_site
        if TASKS_TAKE_A_CONTEXT:
            self._task = run.loop.create_task(drive, context=self._context)
        else:  # pragma: no cover - Python 3.10
            self._task = run.loop.create_task(drive)
        _tasks.maker_of_next = None  # taken, unless no factory of ours ran
        if self._timeout is not None:
            self._timer = run.loop.call_later(self._timeout, self._expire)

    async def _drive(self) -> None:
        # _start runs this up to the first await before the task exists, so
        # a cancel that lands before the task's first step is still caught
        # here. Settling in the last step wakes the caller one loop iteration
        # sooner than a done callback would, and costs no extra callback.
        try:
            await _FIRST_STEP
            self._started = True
            self._result = await self._coro
        except GeneratorExit:
            raise
        except BaseException as exc:  # even KeyboardInterrupt: it is the caller's
            self._error = exc
        finally:
            if not self._started:
                self._coro.close()  # never awaited: close it without a warning
            if not TASKS_TAKE_A_CONTEXT:  # pragma: no cover - Python 3.10
                self._context = contextvars.copy_context()
            self._settle()

    def _expire(self) -> None:
        if self._task is not None and not self._done:
            self._timed_out = True
            self._task.cancel()
            self._timer = self._run.loop.call_later(TIMEOUT_GRACE_SECONDS, self._give_up)

    def _give_up(self) -> None:
        """The task ignored its cancellation for the whole grace: let the
        caller go with TimeoutError; the task runs on, logged and counted."""
        task = self._task
        if self._done or task is None or task.done():
            return
        note_task_past_timeout(self._run, task, self._timeout)
        self._run.await_timeouts += 1
        self._run.await_errors += 1
        self._error = TimeoutError(
            f"The awaitable did not finish within {self._timeout} s, and was still running "
            f"{TIMEOUT_GRACE_SECONDS} s after it was cancelled (it does not let "
            "CancelledError end it); it runs on, logged with its stack."
        )
        self._run.await_seconds.observe(time.perf_counter() - self._began)
        self._done = True  # from now on submit() sends its sync work to the background
        self._waker.wake()

    def _settle(self) -> None:
        if self._done:
            return
        run = self._run
        if self._timer is not None:
            self._timer.cancel()
        if isinstance(self._error, asyncio.CancelledError):
            if self._timed_out:
                run.await_timeouts += 1
                timeout_error = TimeoutError(
                    f"The awaitable did not finish within {self._timeout} s and was cancelled."
                )
                # The cancellation's traceback shows where the coroutine was stuck.
                timeout_error.__cause__ = self._error
                self._error = timeout_error
            elif run.stopping:
                self._error = LoopStoppedError(
                    "The shared loop was shut down while this call waited."
                )
        if self._error is not None:
            run.await_errors += 1
        run.await_seconds.observe(time.perf_counter() - self._began)
        self._done = True  # the loop thread also runs submit(): no race with it
        self._waker.wake()

    def abort(self) -> None:
        """The loop ended for good under this call (called on the loop thread)."""
        if self._done:
            return
        if not self._started:
            self._coro.close()  # never started: no "was never awaited" warning
        self._error = LoopStoppedError("The shared loop stopped while this call waited.")
        self._done = True
        self._waker.wake()


def note_task_past_timeout(run: LoopRun, task: asyncio.Task[Any], timeout: float | None) -> None:
    """Log ``task`` (with its stack) as running on past its timeout and
    cancellation, and count it in ``run.past_timeout`` until it ends."""
    logger.warning(
        "A task still runs %.1f s after its timeout (%s s) cancelled it; its caller got "
        "TimeoutError and the task runs on. It does not let CancelledError end it, "
        "or its cleanup blocks. It is at:\n%s",
        TIMEOUT_GRACE_SECONDS,
        timeout,
        await_chain(task),
    )
    run.past_timeout.add(task)
    task.add_done_callback(run.past_timeout.discard)


def await_chain(task: asyncio.Task[Any]) -> str:
    """Where ``task`` is suspended: each coroutine it awaits, outermost first
    (``Task.print_stack`` shows only the outermost one)."""
    lines = []
    awaitable: Any = task.get_coro()
    for _ in range(100):  # a chain is short; a bound against a cycle
        frame = getattr(awaitable, "cr_frame", None) or getattr(awaitable, "gi_frame", None)
        if frame is None:
            break
        code = frame.f_code
        lines.append(f'  File "{code.co_filename}", line {frame.f_lineno}, in {code.co_name}')
        awaitable = getattr(awaitable, "cr_await", None) or getattr(
            awaitable, "gi_yieldfrom", None
        )
    return "\n".join(lines) or "  (no frame: the task is not suspended in a coroutine)"

"""The shutdown sequence, run on the loop when it stops (aiorun's order).

1. send ``loop_stopping``;
2. cancel every task not protected by ``shutdown_waits_for`` and wait for the
   cancellations;
3. wait for the protected ones, all within the deadline; then cancel what is
   left and log each task cut, with the stack it was stuck in;
4. close ``loop_resource`` instances, async generators, the default executor,
   each bounded by what is left of the deadline plus ``CLOSE_GRACE_SECONDS``;
5. send ``loop_stopped``; the loop thread then closes the loop.

``hurry()`` (a second Ctrl-C or SIGTERM during the drain) ends the waiting
at once: what still runs is cut as if the deadline had passed.
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from django_looptoken import signals
from django_looptoken._loop_run import LoopRun
from django_looptoken._native_pool import has_native_executor, shutdown_native_executor

logger = logging.getLogger("django_looptoken")

# Closing steps (resources, async generators, the executor) run after the
# tasks are gone; this much beyond the deadline keeps a hung close from
# holding the process past SHUTDOWN_TIMEOUT by more than about a second.
CLOSE_GRACE_SECONDS = 1.0

# What the sequence closes once the tasks are gone, in this order, before
# the async generators and the executor. The module that owns each thing
# says how to close it (``closing_step``); it cannot be imported here, since
# each of them imports the runtime, which imports this module.
CLOSING_STEPS = (
    "open iterate() streams",  # first: they read from the pools closed next
    "loop_resource instances",  # newest first
    "the status monitor",  # last: the status socket answers during the drain
)
_closers: dict[str, Callable[[LoopRun], Awaitable[None]]] = {}


def closing_step(step: str, close: Callable[[LoopRun], Awaitable[None]]) -> None:
    """Say how the sequence closes ``step`` (one of ``CLOSING_STEPS``)."""
    assert step in CLOSING_STEPS, step  # a step of ours, named above
    _closers[step] = close


def begin(run: LoopRun, timeout: float) -> None:
    """Start the shutdown sequence; called on the loop thread."""
    if run.stopping:
        return
    run.stopping = True
    run.cut_short = run.loop.create_future()
    task = run.loop.create_task(_sequence(run, timeout), name="looptoken-shutdown")
    task.add_done_callback(_stop_loop)


def hurry(run: LoopRun) -> None:
    """Stop waiting: start the sequence with no time left, or cut the running one short."""
    if not run.stopping:
        begin(run, 0.0)
    if run.cut_short is not None and not run.cut_short.done():
        run.cut_short.set_result(None)


def _stop_loop(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("The shutdown sequence failed.", exc_info=task.exception())
    task.get_loop().stop()


async def _sequence(run: LoopRun, timeout: float) -> None:
    loop = run.loop
    assert run.cut_short is not None
    cut_short = run.cut_short
    deadline = loop.time() + timeout

    def time_left() -> float:
        return 0.0 if cut_short.done() else max(deadline - loop.time(), 0.0)

    try:
        signals.send(signals.loop_stopping, loop)
        # Let tasks created just before the stop take their first step, so
        # that spawn(shutdown_waits_for(...)) has registered its protected work.
        await asyncio.sleep(0)
        me = asyncio.current_task()
        spared = run.protected | run.protecting
        unprotected = [t for t in asyncio.all_tasks() if t is not me and t not in spared]
        for task in unprotected:
            task.cancel()
        # Even with no time left, a turn lets well-behaved tasks take their
        # cancellation, so only the ones that resist it are reported cut.
        await asyncio.sleep(0)
        await _wait(unprotected, time_left, cut_short)
        await _wait([*run.protected, *run.protecting], time_left, cut_short)
        why = "when told not to wait" if cut_short.done() else f"after {timeout:.1f} s"
        await _cut_stragglers(me, why, quiet=set(run.protecting))
        for step in CLOSING_STEPS:
            close = _closers.get(step)
            if close is not None:
                await _run_step(close(run), f"closing {step}", time_left())
        await _run_step(loop.shutdown_asyncgens(), "shutting down async generators", time_left())
        shut_executor = (
            shutdown_native_executor(loop)
            if has_native_executor(loop)
            else loop.shutdown_default_executor()
        )
        await _run_step(shut_executor, "shutting down the default executor", time_left())
    finally:
        signals.send(signals.loop_stopped, loop)


async def _wait(
    tasks: Iterable[asyncio.Future[Any]],
    time_left: Callable[[], float],
    cut_short: asyncio.Future[None],
) -> None:
    """Wait until ``tasks`` are done, the time is up, or the wait is cut short."""
    pending = {t for t in tasks if not t.done()}
    while pending and time_left() > 0:
        _, pending = await asyncio.wait(
            pending | {cut_short}, timeout=time_left(), return_when=asyncio.FIRST_COMPLETED
        )
        pending.discard(cut_short)


async def _cut_stragglers(
    me: asyncio.Task[Any] | None, why: str, quiet: set[asyncio.Future[Any]]
) -> None:
    """Cancel what is left, logging each task with its stack (but the
    ``quiet`` ones, which only wait for a logged one)."""
    stragglers = [t for t in asyncio.all_tasks() if t is not me and not t.done()]
    for task in stragglers:
        if task in quiet:
            task.cancel()
            continue
        stack = io.StringIO()
        task.print_stack(file=stack)
        logger.warning(
            "Shutdown cut %r %s (the drain's deadline); it was stuck at:\n%s",
            task,
            why,
            stack.getvalue().rstrip(),
        )
        task.cancel()
    # One more turn lets the cancellations land; a task that still ignores
    # them is abandoned (it was logged above, so asyncio need not say it again).
    await asyncio.sleep(0)
    for task in stragglers:
        if not task.done():
            task._log_destroy_pending = False  # type: ignore[attr-defined]


async def _run_step(step: Awaitable[Any], what: str, time_left: float) -> None:
    budget = time_left + CLOSE_GRACE_SECONDS
    try:
        await asyncio.wait_for(step, budget)
    except asyncio.TimeoutError:
        logger.error("Shutdown step timed out after %.1f s: %s; going on.", budget, what)
    except Exception:
        logger.exception("Shutdown step failed: %s.", what)

"""One life of the shared loop: its thread, from the start handshake to close."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import logging
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine
from types import FrameType
from typing import Any, Protocol

from django_looptoken import _greenlets, _waiting
from django_looptoken._histogram import Histogram
from django_looptoken.exceptions import LoopStoppedError

logger = logging.getLogger("django_looptoken")

CONTROL_SIGNALS = {
    getattr(signal, name)
    for name in ("SIGINT", "SIGTERM", "SIGQUIT", "SIGHUP", "SIGUSR1", "SIGUSR2", "SIGWINCH")
    if hasattr(signal, name)
}

# Called on the loop thread with each new LoopRun before start() returns
# (the status monitor registers one).
started_hooks: list[Callable[[LoopRun], None]] = []

# After the shutdown sequence's own deadline, how long a thread that asked
# the loop to stop waits for the loop thread before giving up on it.
STOP_GRACE_SECONDS = 5.0
# Calls and spawns handed in are started on the loop in slices: after each
# BATCH of them, if the slice has taken BATCH_SECONDS, the rest waits for the
# next loop iteration. A single call never looks at the clock.
BATCH = 64
BATCH_SECONDS = 0.005
# A hand-in this large at once is a burst the watchdog names when the loop lags.
BURST = 1000


class Abortable(Protocol):
    """Work handed to the loop whose owner must hear if the loop goes away."""

    def abort(self) -> None:
        """Called on the loop thread after the loop stopped for good."""


class LoopRun:
    """The shared loop from its start to its close, and what it holds.

    Token counts and state transitions belong to the runtime (and its lock);
    this object owns the thread, the registries the shutdown sequence reads,
    and the call counters kept for status reporting. Registries and counters are only
    touched on the loop thread, except ``pending`` (see ``register``).
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        on_closed: Callable[[LoopRun], None],
        begin_shutdown: Callable[[LoopRun, float], None],
    ) -> None:
        self.loop = loop
        # The shutdown sequence, passed in: it reads this run's registries, so
        # this module cannot import it.
        self._begin_shutdown = begin_shutdown
        # One entry per token counted on this run. While the loop runs,
        # tokens are counted without the runtime's lock: list.append() and
        # pop() are atomic, and the runtime's stop decision re-checks this
        # list after clearing ``accepting`` (see Runtime.release).
        self.holders: list[None] = []
        # True while the runtime's state is RUNNING on this run (cleared for
        # an instant while a release checks whether it was the last).
        self.accepting = False
        self.stopping = False
        self.finished = False
        # The thread died of an unexpected error instead of being stopped.
        self.crashed = False
        # Resolved to end the shutdown sequence's waiting early (see hurry()).
        self.cut_short: asyncio.Future[None] | None = None
        # Set once the loop is closed. Waiters use it, not Thread.join(): a
        # join interrupted by a signal handler's exception marks a thread that
        # still runs as stopped, and every later join returns at once.
        self.closed = threading.Event()
        self.started_at = time.monotonic()
        self.thread: threading.Thread | None = None
        self.thread_id: int | None = None
        # Under eventlet, the loop's green thread (greenlet), whose frame is
        # not among sys._current_frames().
        self._green_thread: Any = None
        # The process's threads are gevent's greenlets: its callers wait on
        # their hub. Decided once, at the start (gevent patches before that).
        self.greenlet_callers = False
        # The loop is itself a green thread of eventlet's, on the callers' OS
        # thread (see _greenlets): callers wait on eventlet's locks.
        self.green_loop = False
        # Callers blocked in await_ and spawns not started yet: aborted if the
        # loop ends under them, so nobody waits on a loop that is gone.
        self.pending: set[Abortable] = set()
        # Tasks wrapped in shutdown_waits_for(), and spawned tasks (strong refs).
        self.protected: set[asyncio.Future[Any]] = set()
        # Spawned tasks that only wait for their shutdown_waits_for() work:
        # not cancelled with the rest, so their futures get the work's outcome.
        self.protecting: set[asyncio.Future[Any]] = set()
        # Spawned tasks (strong refs), each with its spawn (bridge._Spawn).
        self.background: dict[asyncio.Future[Any], Any] = {}
        # Tasks still running after their timeout and its grace: their callers
        # got TimeoutError (see _call.TIMEOUT_GRACE_SECONDS).
        self.past_timeout: set[asyncio.Future[Any]] = set()
        # loop_resource instances made on this loop, in creation order.
        self.resources: dict[object, Any] = {}
        self.await_calls = 0
        self.await_errors = 0
        self.await_timeouts = 0
        # From an await_ (or await_multiple) call to its outcome, on the loop thread.
        self.await_seconds = Histogram()
        self._on_closed = on_closed
        # Calls handed in from other threads, started by one loop callback.
        self._inbox: deque[tuple[Callable[[], object], contextvars.Context]] = deque()
        self._inbox_scheduled = False
        # The latest burst handed in at once (BURST or more): (size, when).
        self._burst: tuple[int, float] = (0, 0.0)

    @property
    def tokens(self) -> int:
        """How many tokens are counted on this run now."""
        return len(self.holders)

    def start(self) -> None:
        """Run the loop in a new daemon thread; return once it is running.

        A failure to start is raised here, in the caller, not lost in the thread.
        """
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        patched = _greenlets.monkey_patched()
        self.greenlet_callers = patched == "gevent"
        self.green_loop = patched == "eventlet"
        if self.greenlet_callers:
            # A greenlet would never yield to the hub: a native thread, which
            # has no threading.Thread (self.thread stays None).
            _greenlets.start_native_thread(lambda: self._main(ready))
        else:  # under eventlet, one of its green threads
            self.thread = threading.Thread(
                target=self._main, args=(ready,), name="looptoken-loop", daemon=True
            )
            self.thread.start()
        # In slices: an untimed wait of a greenlet whose hub has nothing else
        # to do ends in gevent's LoopExit, and Ctrl-C is heard in time.
        while True:
            with contextlib.suppress(concurrent.futures.TimeoutError):
                return ready.result(_waiting.SIGNAL_CHECK_SECONDS)

    def current_frame(self) -> FrameType | None:
        """The frame the loop's thread is in now (None once it has ended)."""
        if self._green_thread is not None:
            return self._green_thread.gr_frame  # type: ignore[no-any-return]
        return sys._current_frames().get(self.thread_id) if self.thread_id is not None else None

    def on_loop_thread(self) -> bool:
        """Whether the calling thread is this loop's thread."""
        return _greenlets.native_thread_id() == self.thread_id

    def hand_in(self, callback: Callable[[], object], context: contextvars.Context) -> None:
        """``call_soon_threadsafe(callback, context=context)``, coalesced.

        Calls that arrive while a drain is already scheduled ride along with
        it: one wake-up of the loop (one self-pipe write on asyncio) serves
        all the callers that arrive together. RuntimeError if the loop closed.
        """
        self._inbox.append((callback, context))
        # Appending before reading the flag, and the drain clearing it before
        # looking at the inbox, means no arrival is ever left without a drain.
        if not self._inbox_scheduled:
            self._inbox_scheduled = True
            try:
                self.loop.call_soon_threadsafe(self._drain_inbox)
            except RuntimeError:
                self._inbox_scheduled = False
                raise

    def _drain_inbox(self, rest_of_a_burst: bool = False) -> None:
        self._inbox_scheduled = False
        inbox = self._inbox
        if len(inbox) >= BURST and not rest_of_a_burst:
            self._burst = (len(inbox), time.monotonic())
        started = 0
        began = 0.0
        while inbox:
            callback, context = inbox.popleft()
            try:
                context.run(callback)
            except Exception as exc:  # as the loop would for its own callback
                self.loop.call_exception_handler(
                    {"message": f"Exception in callback {callback!r}", "exception": exc}
                )
            started += 1
            if started % BATCH == 0:
                # A burst (thousands of spawns at once) is started in slices,
                # each in its own loop iteration, so the probe's tick and the
                # tasks just started run between them.
                now = time.perf_counter()
                if not began:
                    began = now
                elif now - began > BATCH_SECONDS and inbox:
                    self._inbox_scheduled = True
                    self.loop.call_soon(self._drain_inbox, True)
                    return

    def recent_burst(self) -> int:
        """How many calls arrived at once in a burst of the last 2 s (else 0):
        what the watchdog names when the loop lags in the app's own code."""
        size, at = self._burst
        return size if time.monotonic() - at < 2.0 else 0

    def register(self, item: Abortable) -> bool:
        """Track ``item`` until it is discarded; False if the loop already ended.

        Called from any thread: the add happens before the ``finished`` check
        here, and ``_finish()`` sets ``finished`` before copying the set, so an
        item is either aborted by ``finish()`` or told here that it is too late.
        """
        self.pending.add(item)
        if self.finished:
            self.pending.discard(item)
            return False
        return True

    def start_soon(
        self,
        item: Abortable,
        start: Callable[[], object],
        context: contextvars.Context,
        coro: Coroutine[Any, Any, Any],
        what: str,
    ) -> None:
        """Track ``item`` and hand its ``start`` to the loop (run in ``context``);
        if the loop has stopped, close ``coro`` and raise LoopStoppedError
        naming ``what`` (a call, a task) could not start."""
        if self.register(item):
            try:
                self.hand_in(start, context)
                return
            except RuntimeError:  # the loop closed in between
                self.pending.discard(item)
        coro.close()  # never started: no "was never awaited" warning
        raise LoopStoppedError(f"The shared loop stopped before the {what} could start.")

    def _main(self, ready: concurrent.futures.Future[None]) -> None:
        self.thread_id = _greenlets.native_thread_id()
        # Process-control signals (Ctrl-C, a server's SIGTERM) must reach the
        # main thread: one the kernel gives this thread would not wake a main
        # thread blocked in await_. Threads started from here inherit the mask.
        # (Not a green thread's: its OS thread is the main thread.)
        if self.green_loop:
            self._green_thread = _greenlets.current_greenlet()
        else:
            signal.pthread_sigmask(signal.SIG_BLOCK, CONTROL_SIGNALS)
        try:
            for hook in started_hooks:
                self.loop.call_soon(hook, self)
            self.loop.call_soon(ready.set_result, None)
            self._run_forever()
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(exc)
            else:
                self.crashed = True
                logger.exception(
                    "The shared loop's thread died; the next start_loop() starts a fresh loop."
                )
                self._clean_up_after_crash()
        finally:
            if not ready.done():
                ready.set_exception(RuntimeError("the shared loop stopped before it ran"))
            self._finish()

    def _run_forever(self) -> None:
        while True:
            try:
                self.loop.run_forever()
                return
            except (KeyboardInterrupt, SystemExit) as exc:
                if not self.green_loop:
                    raise
                # A signal handler ran in the loop's green thread (its OS
                # thread is the main thread): the exception is the process's,
                # not the loop's. It goes to the hub, which raises it in the
                # main greenlet, as eventlet does for its green threads; the
                # loop runs on to drain.
                _greenlets.call_in_hub(_raise, exc)

    def _clean_up_after_crash(self) -> None:
        # The loop still works: cancel what it held, close its resources and
        # executor, so nothing is destroyed pending, and callers hear at once.
        self.stopping = False
        try:
            self._begin_shutdown(self, 0.0)
            self.loop.run_forever()  # the sequence stops the loop when done
        except BaseException:
            logger.exception("Cleaning up after the shared loop's thread died failed.")

    def _finish(self) -> None:
        self.stopping = True
        try:
            self.loop.close()
        except Exception:
            logger.exception("Closing the shared loop failed.")
        self.finished = True
        for item in list(self.pending):
            item.abort()
        self.pending.clear()
        self._on_closed(self)
        self.closed.set()

    def wait_closed(self, timeout: float) -> None:
        """Wait until the loop thread has closed the loop; on the loop thread
        itself return at once (it cannot wait for its own stop)."""
        if self.on_loop_thread():
            return
        if not _waiting.wait_event(self.closed, timeout + STOP_GRACE_SECONDS):
            logger.error(
                "The shared loop did not stop within %.1f s; its thread is left behind. "
                "Something on it does not return (a blocking call in a coroutine?).",
                timeout + STOP_GRACE_SECONDS,
            )


def _raise(exc: BaseException) -> None:
    raise exc

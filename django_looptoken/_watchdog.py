"""The watcher thread: slow callbacks and stalls of the shared loop.

A thread outside the loop follows the lag probe's heartbeat (``_lag_probe.LagProbe``).
When a beat is overdue by more than ``SLOW_CALLBACK_DURATION``, something is
holding the loop: the watcher counts one slow callback and notes what the
loop thread is running at that moment (``sys._current_frames()``), then logs
it with the duration once the loop runs again. When the beat is overdue by
more than ``WATCHDOG_SECONDS``, the loop thread's whole stack is logged, once
per stall. It wakes about once per probe interval, and sleeps otherwise;
the probe tells it when a beat comes due sooner than it expected.
"""

from __future__ import annotations

import asyncio
import logging
import os
import selectors
import sys
import threading
import time
import traceback
from collections.abc import Callable
from types import FrameType
from typing import Protocol

from django_looptoken._greenlets import NativeEvent, native_thread_id, start_thread

logger = logging.getLogger("django_looptoken")

# While the loop is blocked, how often the watcher looks whether it runs again.
BLOCKED_POLL_SECONDS = 0.05
# How long stop() waits for the thread (it wakes at once when told to stop).
JOIN_SECONDS = 2.0

# Frames of the loop's own machinery, skipped when naming what blocks it.
_MACHINERY = (
    os.path.dirname(asyncio.__file__) + os.sep,
    os.path.dirname(__file__) + os.sep,  # this package
    threading.__file__,
    selectors.__file__,
)


class Heartbeat(Protocol):
    """What the watcher reads of the probe (plain attributes, read without a lock)."""

    beats: int  # ticks so far
    due: float  # time.monotonic() when the next tick is due
    last_late_lag: float  # seconds the latest tick late by more than slow_after was late
    last_late_beat: int  # which beat that tick was


class Watcher:
    """One thread per life of the loop, watching its heartbeat."""

    def __init__(
        self,
        heartbeat: Heartbeat,
        loop_frame: Callable[[], FrameType | None],
        *,
        slow_after: float,
        stall_after: float | None,
        alive: Callable[[], bool],
        recent_burst: Callable[[], int] = lambda: 0,
    ) -> None:
        self.slow_callbacks = 0
        self.stalls = 0
        self._heartbeat = heartbeat
        self._frame = loop_frame  # where the loop's thread is now
        self._slow_after = slow_after
        self._stall_after = stall_after
        self._alive = alive
        self._last_burst = recent_burst
        # When (time.monotonic()) the thread next looks whether the beat came.
        self.next_look = 0.0
        # Native events: under gevent this thread and the loop's are native
        # threads, which gevent's patched Event cannot wake.
        self._stop = NativeEvent()
        # Set by look_again() and stop(): wakes the wait for the next beat.
        self._look_again = NativeEvent()
        self._ended = NativeEvent()
        self._started = False
        self._thread_id: int | None = None

    def start(self) -> None:
        """Start the thread (a daemon: it never keeps a process alive)."""
        self._started = True
        start_thread(self._run, "looptoken-watchdog")

    def _run(self) -> None:
        self._thread_id = native_thread_id()
        try:
            self._main()
        finally:
            self._ended.set()

    def look_again(self) -> None:
        """The next beat is due sooner than the thread expected: read it again."""
        self._look_again.set()

    def stop(self) -> None:
        """Stop the thread and wait for it."""
        self._stop.set()
        self._look_again.set()
        if self._started and self._thread_id != native_thread_id():
            self._ended.wait(JOIN_SECONDS)

    def _main(self) -> None:
        beat = self._heartbeat
        while self._alive():
            beats, due = beat.beats, beat.due
            self.next_look = due + self._slow_after
            wait = self.next_look - time.monotonic()
            if wait > 0 and self._look_again.wait(wait):
                # Cleared before due is read again, so no later wake is lost.
                self._look_again.clear()
                if self._stop.is_set():
                    return
                continue
            if beat.beats == beats and self._alive() and not self._stop.is_set():
                self._follow_block(beats, due)
            if self._stop.is_set():
                return

    def _follow_block(self, beats: int, due: float) -> None:
        """The beat is late: count it, name the culprit, wait for the loop to run again."""
        self.slow_callbacks += 1
        culprit = self._culprit()
        stalled = False  # the stack is logged once per stall
        overdue = time.monotonic() - due
        while self._heartbeat.beats == beats:
            overdue = time.monotonic() - due
            if self._stall_after is not None and not stalled and overdue >= self._stall_after:
                stalled = True
                self.stalls += 1
                logger.error(
                    "The shared loop has not run for %.1f s (WATCHDOG_SECONDS is %s). "
                    "Its thread is at:\n%s",
                    overdue,
                    self._stall_after,
                    self._stack(),
                )
            if self._stop.wait(BLOCKED_POLL_SECONDS) or not self._alive():
                return
        beat = self._heartbeat
        # The late tick measured the block, unless the loop was held inside
        # the tick itself, after it had measured its own (small) lag: then
        # the longest wait seen here is the best measure there is.
        blocked = beat.last_late_lag if beat.last_late_beat > beats else overdue
        logger.warning(
            "The shared loop was blocked for %.3f s (SLOW_CALLBACK_DURATION is %s s) by %s.",
            blocked,
            self._slow_after,
            culprit,
        )

    def _culprit(self) -> str:
        """Name what the loop thread runs: the outermost frame that is not the
        loop's machinery (the callback or coroutine), and where it is now."""
        frame = self._frame()
        if frame is None:
            return "nothing (the loop thread is gone)"
        stack: list[FrameType] = []
        while frame is not None:
            stack.append(frame)
            frame = frame.f_back
        stack.reverse()  # outermost first
        inner = stack[-1]
        outer = next((f for f in stack if not _is_machinery(f)), None)
        if outer is None:
            burst = self._last_burst()
            if burst:
                cause = f"a burst: {burst:,} calls of await_ or spawn handed in at once"
            else:
                cause = (
                    "a burst of callbacks, or a process starved of CPU or of the GIL "
                    "by other threads?"
                )
            return f"no code of yours: the loop thread was in {_describe(inner)} ({cause})"
        name = _describe(outer)
        return name if inner is outer else f"{name}, now in {_describe(inner)}"

    def _stack(self) -> str:
        frame = self._frame()
        if frame is None:
            return "  (the loop thread is gone)"
        return "".join(traceback.format_stack(frame)).rstrip()


def _is_machinery(frame: FrameType) -> bool:
    return frame.f_code.co_filename.startswith(_MACHINERY + _eventlets())


def _eventlets() -> tuple[str, ...]:
    # Under eventlet the loop's thread starts in eventlet's code (a green
    # thread), and a call eventlet patched ends in it (its hub).
    eventlet = sys.modules.get("eventlet")
    where = getattr(eventlet, "__file__", None)
    return (os.path.dirname(where) + os.sep,) if where else ()


def _describe(frame: FrameType) -> str:
    code = frame.f_code
    qualname = getattr(code, "co_qualname", code.co_name)  # co_qualname: Python 3.11+
    module = frame.f_globals.get("__name__", "?")
    return f"{module}.{qualname} ({code.co_filename}:{frame.f_lineno})"

"""The lag probe: a timer on the shared loop that records how late it fires.

It reschedules itself every ``interval`` while the loop has tasks and every
``IDLE_INTERVAL`` while it has none, and keeps one minute of samples; the
watcher (``_watchdog``) follows its heartbeat to see stalls.
"""

from __future__ import annotations

import asyncio
import contextvars
import math
import time
from collections import deque
from collections.abc import Callable

from django_looptoken._histogram import Histogram

WINDOW_SECONDS = 60.0
NO_LAG: dict[str, float | None] = {"p50": None, "p99": None, "max": None}
# The probe ticks often enough that any block longer than SLOW_CALLBACK_DURATION
# plus one interval covers a tick (and is seen), within these bounds.
MIN_INTERVAL = 0.025
MAX_INTERVAL = 0.5
# Between ticks while the loop has no task. Each tick needs the GIL, which
# under load means a forced switch away from a request thread. Coroutines
# (views, await_, spawn) all run in tasks, and the first task brings the
# fast interval back at once (the monitor's task factory wakes the probe).
IDLE_INTERVAL = 1.0


def probe_interval(slow_callback_duration: float) -> float:
    """Seconds between two ticks of the lag probe for a slow-callback threshold."""
    return min(max(slow_callback_duration / 2, MIN_INTERVAL), MAX_INTERVAL)


class LagProbe:
    """A self-rescheduling timer on the loop that records how late it fires.

    Only the loop thread writes; other threads read ``beats``, ``due`` and
    ``last_late_lag`` (the watcher) and copy the samples (``lag_ms()``).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, interval: float, late_after: float):
        self.loop = loop
        self.interval = interval
        self.idle_interval = max(IDLE_INTERVAL, interval)
        self.late_after = late_after
        self.beats = 0
        self.due = time.monotonic() + interval
        self.last_late_lag = 0.0
        self.last_late_beat = 0  # the beat that last_late_lag belongs to
        # Ticking at idle_interval: the last tick found the loop without tasks.
        self.idle = False
        # Called (on the loop thread) when wake() brings the next tick forward.
        self.on_wake: Callable[[], None] | None = None
        # Every tick's lag since the loop started (the minute above is recent).
        self.lag_histogram = Histogram()
        # CPU time the loop's thread had used at the latest tick.
        self.cpu_seconds = 0.0
        self._samples: deque[tuple[float, float]] = deque(
            maxlen=math.ceil(WINDOW_SECONDS / interval) + 1
        )
        self._timer: asyncio.TimerHandle | None = None
        # wake() runs inside whatever creates a task, often in a caller's
        # context: the ticks must not carry (and keep alive) its variables.
        self._context = contextvars.Context()

    def start(self) -> None:
        """Schedule the first tick (on the loop thread)."""
        self.due = time.monotonic() + self.interval
        self._timer = self.loop.call_later(self.interval, self._tick, context=self._context)

    def stop(self) -> None:
        """Cancel the next tick (on the loop thread)."""
        self.idle = False  # so that no wake() schedules another
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def wake(self) -> None:
        """Work arrives: if the probe idles, tick at the fast interval from now
        (on the loop thread)."""
        if not self.idle:
            return
        self.idle = False
        if self._timer is not None:
            self._timer.cancel()
        self.due = time.monotonic() + self.interval
        self._timer = self.loop.call_later(self.interval, self._tick, context=self._context)
        if self.on_wake is not None:
            self.on_wake()

    def _tick(self) -> None:
        now = time.monotonic()
        lag = max(now - self.due, 0.0)  # timers may fire a hair early
        self._samples.append((now, lag))
        self.lag_histogram.observe(lag)
        self.cpu_seconds = time.thread_time()  # this is the loop's thread
        if lag > self.late_after:
            # Before beats moves: the watcher reads them after it.
            self.last_late_lag = lag
            self.last_late_beat = self.beats + 1
        self.idle = not asyncio.all_tasks(self.loop)
        step = self.idle_interval if self.idle else self.interval
        self.due = now + step
        self.beats += 1
        self._timer = self.loop.call_later(step, self._tick, context=self._context)

    def lag_ms(self) -> dict[str, float | None]:
        """p50, p99 and max of the lag over the last minute, in milliseconds."""
        lags = self._lags_since(time.monotonic() - WINDOW_SECONDS)
        if not lags:
            return dict(NO_LAG)
        return {
            "p50": _rank(lags, 0.5),
            "p99": _rank(lags, 0.99),
            "max": round(lags[-1] * 1000, 3),
        }

    def lag_p99_ms(self, since: float) -> float | None:
        """p99 of the lag of the ticks since ``since`` (``time.monotonic()``), in ms."""
        lags = self._lags_since(since)
        return _rank(lags, 0.99) if lags else None

    def _lags_since(self, cutoff: float) -> list[float]:
        # A copy first: other threads read while the loop thread appends.
        return sorted(lag for at, lag in self._samples.copy() if at >= cutoff)


def _rank(lags: list[float], fraction: float) -> float:
    """The ``fraction`` quantile of sorted ``lags`` (nearest rank), in ms."""
    return round(lags[max(math.ceil(fraction * len(lags)) - 1, 0)] * 1000, 3)

"""The last ten minutes of a loop: lag p99, ``await_`` rate and tasks, per step.

A timer on the loop records one point every ``STEP_SECONDS`` (60 points,
bounded memory), from what the run and the lag probe already count; the
staff page draws them as small charts (``_sparkline``), and ``status()``
carries them for ``loopstatus --json`` and ``?format=json``.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections import deque
from typing import Any

from django_looptoken._lag_probe import LagProbe
from django_looptoken._loop_run import LoopRun

STEP_SECONDS = 10.0
POINTS = 60  # ten minutes of steps


class History:
    """Points of one life of the loop; only the loop thread writes them."""

    def __init__(self, run: LoopRun, probe: LagProbe) -> None:
        self.run = run
        self.probe = probe
        self.step = STEP_SECONDS
        self._points: deque[dict[str, Any]] = deque(maxlen=POINTS)
        self._last_calls = 0
        self._last_at = time.monotonic()
        self._timer: asyncio.TimerHandle | None = None
        # A context of its own: the timer must not keep a caller's variables.
        self._context = contextvars.Context()

    def start(self) -> None:
        """Schedule the first point (on the loop thread)."""
        self._last_at = time.monotonic()
        self._timer = self.run.loop.call_later(self.step, self._record, context=self._context)

    def stop(self) -> None:
        """Cancel the next point (on the loop thread)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def points(self) -> list[dict[str, Any]]:
        """The points, oldest first: ``at`` (Unix time), ``lag_p99_ms``,
        ``awaits_per_s`` and ``tasks``."""
        return list(self._points)

    def _record(self) -> None:
        now = time.monotonic()
        calls = self.run.await_calls
        elapsed = max(now - self._last_at, 1e-9)
        self._points.append(
            {
                "at": round(time.time(), 3),
                "lag_p99_ms": self.probe.lag_p99_ms(since=self._last_at),
                "awaits_per_s": round((calls - self._last_calls) / elapsed, 3),
                "tasks": len(asyncio.all_tasks(self.run.loop)),
            }
        )
        self._last_calls, self._last_at = calls, now
        self._timer = self.run.loop.call_later(self.step, self._record, context=self._context)

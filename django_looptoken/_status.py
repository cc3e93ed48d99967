"""``status()``: a snapshot of this process's shared loop, and what feeds it.

Each life of the loop gets a ``Monitor`` when it starts (a started hook, on
the loop thread, before ``start_loop()`` returns) and loses it in the
shutdown sequence (a closing hook). The monitor owns:

* the lag probe: a timer that reschedules itself every ``interval`` while
  the loop has tasks, and every ``IDLE_INTERVAL`` while it has none, and
  records how late it fires, kept for one minute;
* the watcher thread (``_watchdog``), which counts slow callbacks and
  logs stalls by following the probe's heartbeat;
* the status socket (``_status_socket``), served by the loop itself;
* an exception handler that logs what asyncio reports (such as task
  exceptions nobody retrieved) on the ``django_looptoken`` logger.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import math
import os
import platform
import time
import weakref
from collections import deque
from collections.abc import Callable, Coroutine, Generator
from typing import Any

import django
from asgiref.sync import AsyncToSync
from django.conf import settings

from django_looptoken import _loop_run, _process_role, _shutdown
from django_looptoken._backends import resolve_loop_factory, uvloop_available
from django_looptoken._loop_run import LoopRun
from django_looptoken._runtime import STOPPING, runtime
from django_looptoken._status_socket import StatusDirError, StatusServer, status_dir
from django_looptoken._watchdog import Watcher
from django_looptoken.conf import looptoken_settings

logger = logging.getLogger("django_looptoken")

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
# The coroutine asgiref's async_to_sync runs on the loop it was pointed at
# (the shared loop, for ASYNC_VIEWS): one per call, counted with the await_ calls.
_ASYNC_TO_SYNC_CODE = getattr(getattr(AsyncToSync, "main_wrap", None), "__code__", None)


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
        # Ticking at idle_interval: the last tick found the loop without tasks.
        self.idle = False
        # Called (on the loop thread) when wake() brings the next tick forward.
        self.on_wake: Callable[[], None] | None = None
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
        if lag > self.late_after:
            self.last_late_lag = lag  # before beats moves: the watcher reads it after
        self.idle = not asyncio.all_tasks(self.loop)
        step = self.idle_interval if self.idle else self.interval
        self.due = now + step
        self.beats += 1
        self._timer = self.loop.call_later(step, self._tick, context=self._context)

    def lag_ms(self) -> dict[str, float | None]:
        """p50, p99 and max of the lag over the last minute, in milliseconds."""
        cutoff = time.monotonic() - WINDOW_SECONDS
        lags = sorted(lag for at, lag in self._samples.copy() if at >= cutoff)
        if not lags:
            return dict(NO_LAG)

        def rank(fraction: float) -> float:
            return round(lags[max(math.ceil(fraction * len(lags)) - 1, 0)] * 1000, 3)

        return {"p50": rank(0.5), "p99": rank(0.99), "max": round(lags[-1] * 1000, 3)}


class Monitor:
    """The probe, the watcher and the status socket of one life of the loop."""

    def __init__(self, run: LoopRun) -> None:
        conf = looptoken_settings
        self.run = run
        self.probe = LagProbe(
            run.loop, probe_interval(conf.SLOW_CALLBACK_DURATION), conf.SLOW_CALLBACK_DURATION
        )
        assert run.thread_id is not None
        self.watcher = Watcher(
            self.probe,
            run.thread_id,
            slow_after=conf.SLOW_CALLBACK_DURATION,
            stall_after=conf.WATCHDOG_SECONDS,
            alive=lambda: not run.finished,
        )
        self.probe.on_wake = self.watcher.look_again
        self.server = StatusServer(
            run.loop, lambda: snapshot(run), status_dir(conf.STATUS_DIR), project()
        )
        # A task factory the loop already had (a BACKEND factory may set one):
        # new tasks still go through it, the monitor only looks at them first.
        self._task_factory: Callable[..., asyncio.Task[Any]] | None = None

    def start(self) -> None:
        """Start everything; called on the loop thread right after the loop starts."""
        loop = self.run.loop
        if loop.get_exception_handler() is None:
            loop.set_exception_handler(_log_loop_error)
        self._task_factory = loop.get_task_factory()  # type: ignore[assignment]
        loop.set_task_factory(self._new_task)
        self.probe.start()
        self.watcher.start()
        try:
            self.server.serve(self.server.bind())
        except (OSError, RuntimeError, StatusDirError) as exc:
            logger.error("The status socket is off for this loop (pid %d): %s", os.getpid(), exc)

    def _new_task(
        self,
        loop: asyncio.AbstractEventLoop,
        coro: Coroutine[Any, Any, Any] | Generator[Any, None, Any],
        **kwargs: Any,
    ) -> asyncio.Task[Any]:
        # Every task on the loop starts here, asgiref's for ASYNC_VIEWS too.
        self.probe.wake()
        if (
            _ASYNC_TO_SYNC_CODE is not None
            and getattr(coro, "cr_code", None) is _ASYNC_TO_SYNC_CODE
        ):
            self.run.await_calls += 1  # a caller blocked in async_to_sync, as in await_
        if self._task_factory is not None:
            return self._task_factory(loop, coro, **kwargs)
        return asyncio.Task(coro, loop=loop, **kwargs)

    async def close(self) -> None:
        """Stop everything; called on the loop thread in the shutdown sequence."""
        self.watcher.stop()
        self.probe.stop()
        if self.run.loop.get_task_factory() == self._new_task:
            self.run.loop.set_task_factory(self._task_factory)
        await self.server.close()


def _log_loop_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """asyncio's reports (an exception nobody retrieved, a failing callback),
    on the ``django_looptoken`` logger."""
    message = context.get("message") or "Unhandled error in the shared loop."
    details = "".join(
        f"\n{key}: {value!r}"
        for key, value in context.items()
        if key not in ("message", "exception")
    )
    logger.error("%s%s", message, details, exc_info=context.get("exception"))


_monitors: weakref.WeakKeyDictionary[LoopRun, Monitor] = weakref.WeakKeyDictionary()


def _start_monitor(run: LoopRun) -> None:
    monitor = _monitors[run] = Monitor(run)
    monitor.start()


async def _close_monitor(run: LoopRun) -> None:
    monitor = _monitors.get(run)
    if monitor is not None:
        await monitor.close()


_loop_run.started_hooks.append(_start_monitor)
_shutdown.closing_hooks.append(_close_monitor)


# -- the snapshot --------------------------------------------------------------------


def backend_name(loop: asyncio.AbstractEventLoop) -> str:
    """The loop's class as ``module.Qualname`` (``uvloop.Loop``)."""
    cls = type(loop)
    return f"{cls.__module__}.{cls.__qualname__}"


def project() -> str | None:
    """The settings module of this process (what ``loopstatus`` filters on)."""
    if settings.configured:
        module = getattr(settings, "SETTINGS_MODULE", None)
        if module:
            return str(module)
    return os.environ.get("DJANGO_SETTINGS_MODULE") or None


def _pending_tasks(run: LoopRun) -> int:
    if run.finished:
        return 0
    # Off the loop thread, asyncio.all_tasks() may see its task set change
    # under it and raise; it is only a count, so try again.
    for _ in range(100):
        try:
            return len(asyncio.all_tasks(run.loop))
        except RuntimeError:
            continue
    return 0


def snapshot(run: LoopRun | None) -> dict[str, Any]:
    """The status of ``run`` (None: no loop), as documented for ``status()``."""
    about_process = {
        "pid": os.getpid(),
        "role": _process_role.role(),
        "project": project(),
        "python": platform.python_version(),
        "django": django.get_version(),
    }
    if run is None:
        return {
            **about_process,
            "backend": None,
            "state": "stopped",
            "uptime_s": 0.0,
            "tokens": 0,
            "tasks": 0,
            "await_calls": 0,
            "await_errors": 0,
            "await_timeouts": 0,
            "lag_ms": dict(NO_LAG),
            "slow_callbacks": 0,
        }
    monitor = _monitors.get(run)
    if run.stopping or (runtime().state is STOPPING and runtime().current_run is run):
        state = "stopping"
    else:
        state = "stopped" if run.finished else "running"
    return {
        **about_process,
        "backend": backend_name(run.loop),
        "state": state,
        "uptime_s": round(time.monotonic() - run.started_at, 3),
        "tokens": run.tokens,
        "tasks": _pending_tasks(run),
        "await_calls": run.await_calls,
        "await_errors": run.await_errors,
        "await_timeouts": run.await_timeouts,
        "lag_ms": monitor.probe.lag_ms() if monitor is not None else dict(NO_LAG),
        "slow_callbacks": monitor.watcher.slow_callbacks if monitor is not None else 0,
    }


def status() -> dict[str, Any]:
    """A JSON-serialisable snapshot of this process's shared loop.

    Keys: ``pid``, ``role`` (``master``: forked the server's workers;
    ``worker``), ``backend``, ``state`` (``running``/``stopping``/``stopped``),
    ``uptime_s``, ``tokens``, ``tasks``, ``await_calls``, ``await_errors``,
    ``await_timeouts``, ``lag_ms`` (``p50``/``p99``/``max`` over the last
    minute), ``slow_callbacks``, ``project``, ``python``, ``django``. Callable
    from any thread; with no loop running the counts are zero.
    """
    return snapshot(runtime().current_run)


def would_start() -> dict[str, Any]:
    """What this configuration would start: backend, uvloop, settings, errors."""
    errors = [f"{problem.id}: {problem.msg}" for problem in looptoken_settings.problems()]
    backend: str | None = None
    if not errors:
        factory = resolve_loop_factory(looptoken_settings.BACKEND)
        if isinstance(factory, type):
            backend = f"{factory.__module__}.{factory.__qualname__}"
        elif getattr(factory, "__module__", None) == "uvloop":
            backend = "uvloop.Loop"
        else:
            backend = f"{looptoken_settings.BACKEND} (a loop factory)"
    return {
        "backend": backend,
        "uvloop_installed": uvloop_available(),
        "settings": looptoken_settings.merged(),
        "status_dir": status_dir(looptoken_settings.STATUS_DIR),
        "errors": errors,
    }

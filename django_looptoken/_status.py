"""``status()``: a snapshot of this process's shared loop, from its run and
its monitor (``_monitor``); and ``would_start()``, what the settings would
start when no loop runs.
"""

from __future__ import annotations

import asyncio
import os
import platform
import time
from typing import Any

import django
from django.conf import settings

from django_looptoken import _loop_run, _monitor, _process_role, _shutdown
from django_looptoken._backends import resolve_loop_factory, uvloop_available
from django_looptoken._histogram import Histogram
from django_looptoken._lag_probe import NO_LAG
from django_looptoken._loop_run import LoopRun
from django_looptoken._runtime import STOPPING, runtime
from django_looptoken._status_socket import status_dir
from django_looptoken.conf import looptoken_settings


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
            "tasks_past_timeout": 0,
            "lag_ms": dict(NO_LAG),
            "blocked_s": 0.0,
            "slow_callbacks": 0,
            "await_seconds": Histogram().snapshot(),
            "lag_seconds": Histogram().snapshot(),
            "loop_cpu_s": 0.0,
            "history": [],
        }
    monitor = _monitor.monitor_of(run)
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
        "tasks_past_timeout": len(run.past_timeout),
        "lag_ms": monitor.probe.lag_ms() if monitor is not None else dict(NO_LAG),
        "blocked_s": round(monitor.blocked_for(), 3) if monitor is not None else 0.0,
        "slow_callbacks": monitor.watcher.slow_callbacks if monitor is not None else 0,
        "await_seconds": run.await_seconds.snapshot(),
        "lag_seconds": (
            monitor.probe.lag_histogram if monitor is not None else Histogram()
        ).snapshot(),
        "loop_cpu_s": round(monitor.probe.cpu_seconds, 6) if monitor is not None else 0.0,
        "history": monitor.history.points() if monitor is not None else [],
    }


def status() -> dict[str, Any]:
    """A JSON-serialisable snapshot of this process's shared loop.

    Keys: ``pid``, ``role`` (``master``: forked the server's workers;
    ``worker``), ``backend``, ``state`` (``running``/``stopping``/``stopped``),
    ``uptime_s``, ``tokens``, ``tasks``, ``await_calls``, ``await_errors``,
    ``await_timeouts``, ``tasks_past_timeout`` (tasks still running after
    their call's timeout and cancellation), ``lag_ms`` (``p50``/``p99``/``max``
    over the last minute), ``blocked_s`` (how long the loop has been kept
    from its next timer, when longer than ``SLOW_CALLBACK_DURATION``; else 0),
    ``slow_callbacks``, ``await_seconds`` (how long ``await_`` and
    ``await_multiple`` calls took) and ``lag_seconds`` (every lag since the
    loop started) as histograms (``buckets``: ``[bound, cumulative count]``
    pairs, then ``sum``, ``count``), ``loop_cpu_s`` (CPU seconds the loop's
    thread had used at the probe's latest tick), ``history`` (a point per
    ten seconds over the last ten minutes: ``at``, ``lag_p99_ms``,
    ``awaits_per_s``, ``tasks``), ``project``, ``python``, ``django``.
    Callable from any thread; with no loop running the counts are zero.
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


def _start_monitor(run: LoopRun) -> None:
    _monitor.start(run, lambda: snapshot(run), project())


_loop_run.started_hooks.append(_start_monitor)
_shutdown.closing_step("the status monitor", _monitor.close)

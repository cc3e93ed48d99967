"""The monitor of one life of the shared loop.

Each life of the loop gets a ``Monitor`` when it starts (a started hook, on
the loop thread, before ``start_loop()`` returns) and loses it in the
shutdown sequence (its last closing step). The monitor owns:

* the lag probe (``_lag_probe``);
* the watcher thread (``_watchdog``), which counts slow callbacks and
  logs stalls by following the probe's heartbeat;
* the status socket (``_status_server``), served by a thread of its own, so
  a blocked loop still answers: its status, its pending tasks
  (``_tasks``), and a task's cancellation;
* an exception handler that logs what asyncio reports (such as task
  exceptions nobody retrieved) on the ``django_looptoken`` logger.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import weakref
from collections.abc import Callable, Coroutine, Generator
from typing import Any

from asgiref.sync import AsyncToSync

from django_looptoken import _process_role, _tasks
from django_looptoken._history import History
from django_looptoken._lag_probe import LagProbe, probe_interval
from django_looptoken._loop_run import LoopRun
from django_looptoken._status_server import StatusServer
from django_looptoken._status_socket import StatusDirError, status_dir
from django_looptoken._watchdog import Watcher
from django_looptoken.conf import looptoken_settings

logger = logging.getLogger("django_looptoken")

# The coroutine asgiref's async_to_sync runs on the loop it was pointed at
# (the shared loop, for ASYNC_VIEWS): one per call, counted with the await_ calls.
_ASYNC_TO_SYNC_CODE = getattr(getattr(AsyncToSync, "main_wrap", None), "__code__", None)


class Monitor:
    """The probe, the watcher and the status socket of one life of the loop."""

    def __init__(
        self, run: LoopRun, snapshot: Callable[[], dict[str, Any]], project: str | None
    ) -> None:
        conf = looptoken_settings
        self.run = run
        self.probe = LagProbe(
            run.loop, probe_interval(conf.SLOW_CALLBACK_DURATION), conf.SLOW_CALLBACK_DURATION
        )
        self.watcher = Watcher(
            self.probe,
            run.current_frame,
            slow_after=conf.SLOW_CALLBACK_DURATION,
            stall_after=conf.WATCHDOG_SECONDS,
            alive=lambda: not run.finished,
            recent_burst=run.recent_burst,
        )
        self.probe.on_wake = self.watcher.look_again
        self.history = History(run, self.probe)
        handlers = {
            "status": lambda request: snapshot(),
            "tasks": lambda request: {
                **_tasks.listing(run, self.blocked_for(), conf.SHUTDOWN_TIMEOUT),
                "role": _process_role.role(),
                "project": project,
            },
            "cancel": self._cancel,
        }
        self.server = StatusServer(handlers, status_dir(conf.STATUS_DIR), project)
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
        self.history.start()
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
            task = self._task_factory(loop, coro, **kwargs)
        else:
            task = asyncio.Task(coro, loop=loop, **kwargs)
        _tasks.note(task, loop)
        return task

    def blocked_for(self) -> float:
        """How long the loop has been kept from its probe's next tick, by one
        callback or a burst (seconds; 0 while that is under ``SLOW_CALLBACK_DURATION``)."""
        if self.run.finished:
            return 0.0
        overdue = time.monotonic() - self.probe.due
        return overdue if overdue > self.probe.late_after else 0.0

    def _cancel(self, request: dict[str, Any]) -> dict[str, Any]:
        """Cancel the pending task whose ``id`` (in the listing) is ``request["task"]``."""
        task_id = request.get("task")
        if type(task_id) is not int:
            return {"error": 'cancel takes the task\'s id: {"op": "cancel", "task": 12}'}
        task = _tasks.find(self.run, task_id)
        if task is None:
            return {"error": f"no pending task {task_id} in process {os.getpid()}"}
        self.run.loop.call_soon_threadsafe(task.cancel)
        return {
            "pid": os.getpid(),
            "task": task_id,
            "coroutine": _tasks.coroutine_of(task),
            "blocked_s": round(self.blocked_for(), 3),
        }

    async def close(self) -> None:
        """Stop everything; called on the loop thread in the shutdown sequence."""
        self.watcher.stop()
        self.probe.stop()
        self.history.stop()
        if self.run.loop.get_task_factory() == self._new_task:
            self.run.loop.set_task_factory(self._task_factory)
        self.server.close()


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


def start(run: LoopRun, snapshot: Callable[[], dict[str, Any]], project: str | None) -> None:
    """Give ``run`` its monitor and start it (on the loop thread)."""
    monitor = _monitors[run] = Monitor(run, snapshot, project)
    monitor.start()


async def close(run: LoopRun) -> None:
    """Stop the monitor of ``run``, if it has one (on the loop thread)."""
    monitor = _monitors.get(run)
    if monitor is not None:
        await monitor.close()


def monitor_of(run: LoopRun) -> Monitor | None:
    """The monitor of ``run`` (None before it starts)."""
    return _monitors.get(run)

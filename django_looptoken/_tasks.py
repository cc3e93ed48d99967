"""The loop's pending tasks: what is noted of each when it is made, and the
listing that ``loopstatus --tasks`` and the status page show.

Noted at creation, by the monitor's task factory (``note()``): a number, the
time, where it was made and the request it belongs to. Where it was made is
cheap to know: ``await_``, ``await_multiple`` and ``spawn`` record their
caller's line (``site_of_next``, set on the loop thread just before they
create the task); a task made by another task is placed at the first frame
above ``create_task`` that is neither asyncio's nor this package's, a walk
of a few frames at most, never the whole stack.

The listing (``listing()``) is built in the status socket's thread, off the
loop, so it answers while the loop is blocked: then it says for how long
and shows what the loop thread is running.
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import os
import sys
import time
import traceback
from types import CodeType, FrameType
from typing import Any

from django_looptoken._loop_run import LoopRun

# What a task was made by: its request (``GET /path``), set by the middleware.
request_label: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "looptoken_request", default=None
)

# Where a task was made: the code and the line.
Site = tuple[CodeType, int]

# Where the next task is made: set by await_, await_multiple and spawn on the
# loop thread right before they create it, taken by note().
site_of_next: Site | None = None

# Note tasks at all: bench/bench_tasks.py turns it off to measure what it costs.
NOTE_TASKS = True

# The listing shows at most this many tasks (the oldest).
MAX_LISTED = 500
# How many frames above create_task() note() looks for the code that made a task.
SITE_SEARCH_DEPTH = 8

_MACHINERY = (
    os.path.dirname(asyncio.__file__) + os.sep,
    os.path.dirname(__file__) + os.sep,  # this package
)
_numbers = itertools.count(1)


class TaskNote:
    """What was noted of a task when it was made."""

    __slots__ = ("created", "number", "request", "site")

    def __init__(self, site: Site | None) -> None:
        self.number = next(_numbers)
        self.created = time.monotonic()
        self.site = site
        self.request = request_label.get()


def note(task: asyncio.Task[Any]) -> None:
    """Note ``task``, just made (on the loop thread)."""
    global site_of_next
    if not NOTE_TASKS:
        return
    site, site_of_next = site_of_next, None
    if site is None:
        site = _maker_site(sys._getframe(2))
    task._looptoken = TaskNote(site)  # type: ignore[attr-defined]


def caller_site() -> Site | None:
    """The line outside this package that called into it (``await_``'s
    caller, past decorators such as ``runs_async``)."""
    if not NOTE_TASKS:
        return None
    return _maker_site(sys._getframe(2))


def _maker_site(frame: FrameType | None) -> Site | None:
    for _ in range(SITE_SEARCH_DEPTH):
        if frame is None:
            return None
        if not frame.f_code.co_filename.startswith(_MACHINERY):
            return frame.f_code, frame.f_lineno
        frame = frame.f_back
    return None


# -- the listing, off the loop ---------------------------------------------------------


def listing(run: LoopRun, blocked_s: float, long_after: float) -> dict[str, Any]:
    """The pending tasks of ``run``, oldest first (at most ``MAX_LISTED``),
    each a dict (see ``describe()``); ``blocked_s``: how long the loop has
    not run (0 if it runs), with the loop thread's stack then."""
    now = time.monotonic()
    running = asyncio.current_task(run.loop) if blocked_s else None
    pending = sorted((task for task in _all_tasks(run) if not task.done()), key=_made)
    rows = [describe(task, run, now, long_after, task is running) for task in pending]
    answer: dict[str, Any] = {
        "pid": os.getpid(),
        "total": len(rows),
        "tasks": rows[:MAX_LISTED],
        "blocked_s": round(blocked_s, 3),
        "loop_stack": _loop_stack(run) if blocked_s else None,
    }
    return answer


def describe(
    task: asyncio.Task[Any], run: LoopRun, now: float, long_after: float, running: bool
) -> dict[str, Any]:
    """One task: ``id`` (its number, for ``cancel``), ``coroutine``, ``age_s``,
    ``long``, ``created_at``, ``request``, ``await_chain`` (innermost last),
    ``protected`` (by ``shutdown_waits_for``), ``running``."""
    note: TaskNote | None = getattr(task, "_looptoken", None)
    chain, awaiting = _await_chain(task.get_coro())
    age = now - note.created if note is not None else 0.0
    return {
        "id": note.number if note is not None else None,
        "coroutine": chain[0]["function"] if chain else _name_of(task),
        "age_s": round(age, 3),
        "long": age >= long_after,
        "created_at": _made_at(*note.site) if note is not None and note.site else None,
        "request": note.request if note is not None else None,
        "await_chain": [f"{frame['function']} ({frame['at']})" for frame in chain],
        "awaiting": awaiting,
        "protected": task in run.protected or task in run.protecting,
        "running": running,
    }


def _name_of(task: asyncio.Task[Any]) -> str:
    """The coroutine's name even where its frames are all this package's
    (``shutdown_waits_for``'s wrapper), else the task's."""
    return str(getattr(task.get_coro(), "__qualname__", None) or task.get_name())


def _made(task: asyncio.Task[Any]) -> tuple[float, int]:
    """Oldest first; tasks made before the monitor noted them come last."""
    note: TaskNote | None = getattr(task, "_looptoken", None)
    return (note.created, note.number) if note is not None else (float("inf"), 0)


def find(run: LoopRun, number: int) -> asyncio.Task[Any] | None:
    """The pending task noted with ``number``, if there is one."""
    for task in _all_tasks(run):
        note: TaskNote | None = getattr(task, "_looptoken", None)
        if note is not None and note.number == number and not task.done():
            return task
    return None


def _all_tasks(run: LoopRun) -> list[asyncio.Task[Any]]:
    # Off the loop thread, the task set may change under the copy: try again.
    for _ in range(100):
        try:
            return list(asyncio.all_tasks(run.loop))
        except RuntimeError:
            continue
    return []


def _await_chain(coro: object) -> tuple[list[dict[str, str]], str | None]:
    """The frames a coroutine is suspended in, outermost first, without this
    package's own (await_'s wrapper); and what the innermost one awaits."""
    frames: list[dict[str, str]] = []
    current: object = coro
    for _ in range(100):  # a chain is short; a cycle must not hang the thread
        frame = _frame_of(current)
        if frame is None:
            break
        if not frame.f_code.co_filename.startswith(_MACHINERY[1]):
            code = frame.f_code
            frames.append(
                {"function": _qualname(code), "at": f"{code.co_filename}:{frame.f_lineno}"}
            )
        current = _awaited_by(current)
    awaiting = None if current is None or _frame_of(current) else _what(current)
    return frames, awaiting


def _frame_of(obj: object) -> FrameType | None:
    for name in ("cr_frame", "gi_frame", "ag_frame"):
        frame = getattr(obj, name, None)
        if frame is not None:
            return frame  # type: ignore[no-any-return]
    return None


def _awaited_by(obj: object) -> object:
    for name in ("cr_await", "gi_yieldfrom", "ag_await"):
        awaited = getattr(obj, name, None)
        if awaited is not None:
            return awaited
    return None


def _what(awaited: object) -> str:
    # A coroutine awaiting a future (or a task) holds the future's iterator:
    # C's hides which future it is.
    name = type(awaited).__name__
    return "Future" if name == "FutureIter" else name


def _qualname(code: CodeType) -> str:
    return getattr(code, "co_qualname", code.co_name)


def _made_at(code: CodeType, line: int) -> str:
    return f"{code.co_filename}:{line} in {_qualname(code)}"


def _loop_stack(run: LoopRun) -> list[str]:
    frame = sys._current_frames().get(run.thread_id) if run.thread_id is not None else None
    if frame is None:
        return []
    return [line.rstrip() for line in traceback.format_stack(frame)]

"""The loop's pending tasks: what is noted of each when it is made, and the
listing that ``loopstatus --tasks`` and the status page show.

Noted at creation, by the monitor's task factory (``note()``): the time,
who made it and the request it belongs to, in one tuple on the task; nothing
that needs a frame object, which costs more than the rest together. Who
made it (``maker_of_next``, set on the loop thread right before the task is
made): for ``await_`` and ``await_multiple``, the call itself, whose caller
is blocked in it while the task is pending, so the listing finds the
caller's line on that thread's stack; for a task made by another task, that
task, weakly (a wrapper of this package, such as ``await_multiple``'s,
passes on who made it). A spawned task is noted by its spawn (``Spawned``),
which the loop keeps anyway until the task ends: its caller's code and
instruction, taken with one frame lookup as it calls, the time, and its
context, which holds the request; so spawn pays for no tuple on the task.

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
import weakref
from types import CodeType, FrameType
from typing import Any, Protocol

from django_looptoken._loop_run import LoopRun

# What a task was made by: its request (``GET /path``), set by the middleware.
request_label: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "looptoken_request", default=None
)

# Where a task was made: the code and the instruction's offset in it (the
# line is worked out only when listed).
Site = tuple[CodeType, int]


class Caller(Protocol):
    """A call whose caller is blocked in it while its task is pending."""

    def caller_site(self, frames: dict[int, FrameType]) -> Site | None:
        """The caller's line, found on its thread's stack among ``frames``
        (``sys._current_frames()``, off the loop)."""


class Spawned(Protocol):
    """A spawn, kept in ``LoopRun.background`` under its task until the task ends."""

    site: Site | None  # None while notes are off
    made: float  # time.monotonic() when its task was made
    number: int  # the task's id in the listing
    context: contextvars.Context  # holds request_label


# Who makes the next task (a Caller, or SPAWNED: the spawn notes its task
# itself): set on the loop thread right before the task is made; taken by note().
maker_of_next: Caller | object | None = None
SPAWNED = object()

# Note tasks at all: bench/bench_tasks.py turns it off to measure what it costs.
NOTE_TASKS = True

# The listing shows at most this many tasks (the oldest).
MAX_LISTED = 500

_PACKAGE = os.path.dirname(__file__) + os.sep
# A task's id in the listing: short enough to type after --cancel.
_numbers = itertools.count(1)
next_number = _numbers.__next__


def note(task: asyncio.Task[Any], loop: asyncio.AbstractEventLoop) -> None:
    """Note ``task``, just made on ``loop`` (on the loop thread; the loop
    need not be running: the shutdown sequence of a crashed loop is made
    before the loop runs again)."""
    global maker_of_next
    if not NOTE_TASKS:
        return
    maker: object = maker_of_next
    maker_of_next = None
    if maker is SPAWNED:
        return
    if maker is None:
        # A task made by a task, or None. Weakly: a long-lived child must
        # not keep its ended parent's result (and traceback) alive.
        parent = asyncio.current_task(loop)
        maker = None if parent is None else weakref.ref(parent)
    task._looptoken = (  # type: ignore[attr-defined]
        time.monotonic(),
        maker,
        request_label.get(),
        next_number(),
    )


def caller_of(frames: dict[int, FrameType], code: CodeType, call: object) -> Site | None:
    """The line outside this package that called the call ``call`` whose
    ``code`` (its blocking method) runs on one of ``frames`` (a frame per
    thread, innermost)."""
    for innermost in frames.values():
        frame: FrameType | None = innermost
        while frame is not None and not (
            frame.f_code is code and frame.f_locals.get("self") is call
        ):
            frame = frame.f_back
        while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE):
            frame = frame.f_back  # await_, runs_async's wrapper ...
        if frame is not None:
            return frame.f_code, frame.f_lasti
    return None


# -- the listing, off the loop ---------------------------------------------------------

# A task's note: when it was made (time.monotonic()), who made it, its
# request, its id.
Note = tuple[float, "Site | Caller | weakref.ref[asyncio.Task[Any]] | None", "str | None", int]


def note_of(task: asyncio.Future[Any], run: LoopRun) -> Note | None:
    """What was noted of ``task`` when it was made, if anything."""
    note: Note | None = getattr(task, "_looptoken", None)
    if note is None:
        spawned: Spawned | None = run.background.get(task)
        if spawned is not None and spawned.site is not None:
            note = (spawned.made, spawned.site, spawned.context.get(request_label), spawned.number)
    return note


def listing(run: LoopRun, blocked_s: float, long_after: float) -> dict[str, Any]:
    """The pending tasks of ``run``, oldest first (at most ``MAX_LISTED``),
    each a dict (see ``describe()``); ``blocked_s``: how long the loop has
    not run (0 if it runs), with the loop thread's stack then."""
    now = time.monotonic()
    running = asyncio.current_task(run.loop) if blocked_s else None
    pending = sorted(
        (task for task in _all_tasks(run) if not task.done()), key=lambda task: _made(task, run)
    )
    frames = sys._current_frames()  # the callers blocked in await_, on their threads
    rows = [describe(task, run, now, long_after, task is running, frames) for task in pending]
    return {
        "pid": os.getpid(),
        "total": len(rows),
        "tasks": rows[:MAX_LISTED],
        "blocked_s": round(blocked_s, 3),
        "loop_stack": _loop_stack(run) if blocked_s else None,
    }


def describe(
    task: asyncio.Task[Any],
    run: LoopRun,
    now: float,
    long_after: float,
    running: bool,
    frames: dict[int, FrameType],
) -> dict[str, Any]:
    """One task: ``id`` (its number, for ``cancel``), ``coroutine``, ``age_s``, ``long``,
    ``created_at``, ``request``, ``await_chain`` (innermost last),
    ``awaiting``, ``protected`` (by ``shutdown_waits_for``), ``running``."""
    note = note_of(task, run)
    chain, awaiting = _await_chain(task.get_coro())
    age = now - note[0] if note is not None else 0.0
    return {
        "id": note[3] if note is not None else None,
        "coroutine": coroutine_of(task, chain),
        "age_s": round(age, 3),
        "long": age >= long_after,
        "created_at": _made_at(note[1], run, frames) if note is not None else None,
        "request": note[2] if note is not None else None,
        "await_chain": [f"{frame['function']} ({frame['at']})" for frame in chain],
        "awaiting": awaiting,
        "protected": task in run.protected or task in run.protecting,
        "running": running,
    }


def _made_at(maker: object, run: LoopRun, frames: dict[int, FrameType]) -> str | None:
    """Where the task was made: ``file:line in function``, or the task that
    made it (past this package's own wrapper tasks, to who made those)."""
    for _ in range(20):  # wrappers in wrappers, bounded
        if not isinstance(maker, weakref.ref):
            break
        parent = maker()
        if parent is None:
            return "by a task that has ended"
        note = note_of(parent, run)
        if not _is_ours(parent):
            return f"by task {note[3] if note else '?'} ({coroutine_of(parent)})"
        maker = note[1] if note is not None else None
    site = maker.caller_site(frames) if hasattr(maker, "caller_site") else maker
    if not isinstance(site, tuple):
        return None
    code, offset = site
    line = next(
        (line for start, end, line in code.co_lines() if start <= offset < end and line),
        code.co_firstlineno,
    )
    return f"{code.co_filename}:{line} in {_qualname(code)}"


def _is_ours(task: asyncio.Task[Any]) -> bool:
    code = getattr(task.get_coro(), "cr_code", None)
    return code is not None and code.co_filename.startswith(_PACKAGE)


def coroutine_of(task: asyncio.Task[Any], chain: list[dict[str, str]] | None = None) -> str:
    """The name a task is listed under: its outermost coroutine that is not
    this package's (``await_``'s wrapper runs the caller's), else its own."""
    if chain is None:
        chain = _await_chain(task.get_coro())[0]
    return chain[0]["function"] if chain else _name_of(task)


def _name_of(task: asyncio.Task[Any]) -> str:
    """The coroutine's name even where its frames are all this package's
    (``shutdown_waits_for``'s wrapper), else the task's."""
    return str(getattr(task.get_coro(), "__qualname__", None) or task.get_name())


def _made(task: asyncio.Task[Any], run: LoopRun) -> float:
    """Oldest first; tasks made before the monitor noted them come last."""
    note = note_of(task, run)
    return note[0] if note is not None else float("inf")


def find(run: LoopRun, task_id: int) -> asyncio.Task[Any] | None:
    """The pending task whose ``id`` is ``task_id``, if there is one."""
    for task in _all_tasks(run):
        note = note_of(task, run)
        if note is not None and note[3] == task_id and not task.done():
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
        if not frame.f_code.co_filename.startswith(_PACKAGE):
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


def _loop_stack(run: LoopRun) -> list[str]:
    frame = run.current_frame()
    if frame is None:
        return []
    return [line.rstrip() for line in traceback.format_stack(frame)]

"""What the task listing notes of each task in this process: the request it
belongs to, the line that made it (past ``runs_async``, for ``await_``,
``await_multiple`` and ``spawn``) or the task that made it, protection, and
a task cancelled by its id."""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import os
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from django.http import HttpRequest, HttpResponse
from django.test import RequestFactory

import django_looptoken as looptoken
from django_looptoken._status_socket import ask
from django_looptoken.middleware import LoopTokenMiddleware
from tests.support.processes import DEADLINE_S, wait_until

HERE = __file__


def tasks(served: Path) -> list[dict[str, Any]]:
    answer = ask(str(served), request={"op": "tasks"})
    assert answer["pid"] == os.getpid()
    return answer["tasks"]  # type: ignore[no-any-return]


def the_one(served: Path, coroutine: str) -> dict[str, Any]:
    """The one task listed under ``coroutine``, once the loop has started it."""
    found: list[dict[str, Any]] = []

    def listed() -> bool:
        found[:] = [t for t in tasks(served) if t["coroutine"].endswith(coroutine)]
        return bool(found)

    wait_until(listed, f"{coroutine} to be listed")
    (task,) = found
    return task


def here() -> str:
    """``file:line in function`` of the caller's line."""
    frame = sys._getframe(1)
    return f"{HERE}:{frame.f_lineno} in {frame.f_code.co_qualname}"


async def wait_on(gate: asyncio.Event) -> None:
    await gate.wait()


@pytest.mark.django_db  # the response's close() sends request_finished
def test_a_task_spawned_by_a_view_notes_its_request_and_line(served: Path) -> None:
    gate = looptoken.await_(_make_gate())
    made: list[str] = []

    def view(request: HttpRequest) -> HttpResponse:
        made.append(here()), looptoken.spawn(wait_on(gate))  # one line, which here() names
        return HttpResponse("ok")

    response = LoopTokenMiddleware(view)(RequestFactory().get("/shop/cart/"))
    response.close()
    try:
        task = the_one(served, "wait_on")
        assert task["request"] == "GET /shop/cart/"
        assert task["created_at"] == made[0]
        assert task["await_chain"][0] == f"wait_on ({HERE}:{wait_on.__code__.co_firstlineno + 1})"
        assert not task["protected"]
    finally:
        looptoken.get_loop().call_soon_threadsafe(gate.set)


def test_a_caller_blocked_in_await_through_runs_async_is_placed_at_its_own_line(
    served: Path,
) -> None:
    gate = looptoken.await_(_make_gate())
    made: list[str] = []

    @looptoken.runs_async
    async def fetch() -> None:
        await gate.wait()

    def caller() -> None:
        made.append(here()), fetch()  # one line, which here() names

    thread = threading.Thread(target=caller)
    thread.start()
    try:
        task = the_one(served, "fetch")
        assert task["created_at"] == made[0]  # the caller's line, not the decorator's
        assert task["request"] is None
    finally:
        looptoken.get_loop().call_soon_threadsafe(gate.set)
        thread.join(DEADLINE_S)


def test_await_multiples_tasks_and_tasks_made_by_tasks_are_placed_too(served: Path) -> None:
    gate = looptoken.await_(_make_gate())
    lines: list[str] = []

    async def parent() -> None:
        child = asyncio.create_task(wait_on(gate))
        lines.append("made")
        await child

    def caller() -> None:
        lines.append(here()), looptoken.await_multiple([parent()])  # one line

    thread = threading.Thread(target=caller)
    thread.start()
    try:
        wait_until(lambda: len(lines) == 2, "the child task")
        by_name = {t["coroutine"].rpartition(".")[2]: t for t in tasks(served)}
        # await_multiple's own wrapper task is passed over: the caller's line.
        assert by_name["parent"]["created_at"] == lines[0]
        parent = by_name["parent"]
        assert (
            by_name["wait_on"]["created_at"] == f"by task {parent['id']} ({parent['coroutine']})"
        )
        assert parent["awaiting"] == "Future"  # its child task
    finally:
        looptoken.get_loop().call_soon_threadsafe(gate.set)
        thread.join(DEADLINE_S)


def test_a_task_that_outlives_its_maker_does_not_keep_it_alive(served: Path) -> None:
    gate = looptoken.await_(_make_gate())
    children: list[asyncio.Task[None]] = []

    async def maker() -> bytes:
        children.append(asyncio.create_task(wait_on(gate)))
        return b"a result the child must not keep alive"

    assert looptoken.spawn(maker()).result(timeout=DEADLINE_S).startswith(b"a result")
    try:
        gc.collect()
        assert the_one(served, "wait_on")["created_at"] == "by a task that has ended"
    finally:
        looptoken.get_loop().call_soon_threadsafe(gate.set)


def test_protected_work_is_marked(served: Path) -> None:
    gate = looptoken.await_(_make_gate())
    looptoken.spawn(looptoken.shutdown_waits_for(wait_on(gate)))
    try:
        wait_until(lambda: len(tasks(served)) == 2, "the work and its wrapper")
        listed = tasks(served)
        assert [t["protected"] for t in listed] == [True, True]
        assert any(t["coroutine"] == "wait_on" for t in listed)
    finally:
        looptoken.get_loop().call_soon_threadsafe(gate.set)


def test_cancel_by_id_and_bad_ids(served: Path) -> None:
    gate = looptoken.await_(_make_gate())
    future = looptoken.spawn(wait_on(gate))
    wait_until(lambda: tasks(served), "the task")
    (task,) = tasks(served)
    answer = ask(str(served), request={"op": "cancel", "task": task["id"]})
    assert answer == {
        "pid": os.getpid(),
        "task": task["id"],
        "coroutine": "wait_on",
        "blocked_s": 0.0,
    }
    with pytest.raises(concurrent.futures.CancelledError):
        future.result(timeout=DEADLINE_S)
    for request, error in [
        ({"op": "cancel", "task": task["id"]}, f"no pending task {task['id']} in process"),
        ({"op": "cancel", "task": "1"}, "cancel takes the task's id"),
        ({"op": "cancel"}, "cancel takes the task's id"),
    ]:
        with pytest.raises(ValueError, match=error):
            ask(str(served), request=request)


async def _make_gate() -> asyncio.Event:
    return asyncio.Event()

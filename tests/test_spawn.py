"""spawn: fire-and-forget background tasks on the shared loop."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import gc
import logging
import sqlite3
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import pytest
from asgiref.sync import sync_to_async
from django.db import connection, connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper

import django_looptoken as looptoken
from tests.testapp.fds import database_fds
from tests.testapp.models import Item

_T = TypeVar("_T")
_REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id")


def test_the_task_sees_the_spawners_context_and_keeps_its_own_changes(
    token: looptoken.LoopToken,
) -> None:
    """Context variables are the spawner's at spawn() time; what the task sets
    stays in the task, and a second task does not see it."""
    reset = _REQUEST_ID.set("spawner")
    try:

        async def read_then_set() -> str:
            seen = _REQUEST_ID.get()
            _REQUEST_ID.set("task")
            return seen

        assert looptoken.spawn(read_then_set()).result(10) == "spawner"
        assert _REQUEST_ID.get() == "spawner"
        assert looptoken.spawn(read_then_set()).result(10) == "spawner"
    finally:
        _REQUEST_ID.reset(reset)


def test_returns_at_once_with_a_future_of_the_result(token: looptoken.LoopToken) -> None:
    go = threading.Event()

    async def job() -> str:
        await asyncio.get_running_loop().run_in_executor(None, go.wait, 10)
        return "done"

    future = looptoken.spawn(job())
    assert isinstance(future, concurrent.futures.Future)
    assert not future.done()
    go.set()
    assert future.result(timeout=10) == "done"


def test_the_loop_keeps_the_task_alive(token: looptoken.LoopToken) -> None:
    """asyncio itself only holds tasks weakly; a dropped spawn must still finish."""
    finished = threading.Event()
    release = asyncio.Event()

    async def job() -> None:
        await release.wait()
        finished.set()

    looptoken.spawn(job())
    gc.collect()
    looptoken.await_(_set(release))
    assert finished.wait(10)


async def _set(event: asyncio.Event) -> None:
    event.set()


def test_an_exception_nobody_retrieved_is_logged(
    token: looptoken.LoopToken, caplog: pytest.LogCaptureFixture
) -> None:
    async def boom() -> None:
        raise ValueError("lost in the background")

    future = looptoken.spawn(boom())
    concurrent.futures.wait([future], timeout=10)
    with caplog.at_level(logging.ERROR, logger="django_looptoken"):
        del future
        gc.collect()
    (record,) = [r for r in caplog.records if r.name == "django_looptoken"]
    assert "nobody retrieved" in record.getMessage()
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], ValueError)


def test_a_retrieved_exception_is_not_logged(
    token: looptoken.LoopToken, caplog: pytest.LogCaptureFixture
) -> None:
    async def boom() -> None:
        raise ValueError("seen")

    future = looptoken.spawn(boom())
    with caplog.at_level(logging.ERROR, logger="django_looptoken"):
        with pytest.raises(ValueError, match="seen"):
            future.result(timeout=10)
        del future
        gc.collect()
    assert not [r for r in caplog.records if r.name == "django_looptoken"]


def test_needs_a_running_loop_and_closes_the_coroutine() -> None:
    coro = asyncio.sleep(0)
    with pytest.raises(looptoken.LoopStoppedError, match="hold a token"):
        looptoken.spawn(coro)
    assert coro.cr_frame is None


def test_rejects_a_non_awaitable(token: looptoken.LoopToken) -> None:
    with pytest.raises(TypeError, match="spawn"):
        looptoken.spawn(print)  # type: ignore[arg-type]


def test_spawned_task_is_cancelled_at_shutdown() -> None:
    started = threading.Event()
    cancelled = threading.Event()

    async def forever() -> None:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    token = looptoken.start_loop()
    future = looptoken.spawn(forever())
    assert started.wait(10)
    token.release()
    assert cancelled.is_set()
    assert future.cancelled()


@pytest.mark.django_db(transaction=True)
def test_background_orm_calls_run_in_the_apps_thread_with_fresh_connections(
    token: looptoken.LoopToken,
) -> None:
    async def job() -> tuple[str, BaseDatabaseWrapper, bool]:
        def inside() -> tuple[str, BaseDatabaseWrapper, bool]:
            Item.objects.count()
            wrapper = connections["default"]
            return threading.current_thread().name, wrapper, wrapper.connection is not None

        return await sync_to_async(inside)()

    thread_name, wrapper, connected_during_call = looptoken.spawn(job()).result(timeout=10)
    assert thread_name.startswith("looptoken-sync")
    assert wrapper is not connections["default"]
    assert connected_during_call
    # close_old_connections() after the call closed it (CONN_MAX_AGE = 0).
    assert wrapper.connection is None


def in_background(call: Callable[[], _T]) -> _T:
    """Run ``call`` as a spawned task's thread-sensitive sync call; its result."""

    async def job() -> _T:
        return await sync_to_async(call)()

    return looptoken.spawn(job()).result(timeout=10)


@pytest.mark.django_db(transaction=True)
def test_two_hundred_spawned_tasks_orm_calls_leak_no_connection(
    token: looptoken.LoopToken,
) -> None:
    Item.objects.create(name="one")  # this thread's own connection is open now
    before = database_fds()
    seen: list[tuple[int, int, list[str]]] = []

    def count_rows() -> int:
        rows = Item.objects.count()
        opened = [c.alias for c in connections.all(initialized_only=True)]
        seen.append((database_fds(), len(opened), opened))
        return rows

    async def job() -> int:
        await asyncio.sleep(0)  # all 200 are pending at once before any call starts
        return await sync_to_async(count_rows)()

    futures = [looptoken.spawn(job()) for _ in range(200)]
    assert [future.result(timeout=30) for future in futures] == [1] * 200
    # During each call: exactly one more connection, the background thread's.
    assert {fds for fds, _, _ in seen} == {before + 1}
    assert all(opened == ["default"] for _, _, opened in seen)
    # After them all: every one of the 200 was closed again.
    assert database_fds() == before


def _raw_connection() -> Any:
    Item.objects.exists()
    return connection.connection


def _is_closed(raw: sqlite3.Connection) -> bool:
    try:
        raw.execute("SELECT 1")
    except sqlite3.ProgrammingError:
        return True
    return False


@pytest.mark.django_db(transaction=True)
def test_no_background_call_reuses_a_connection_closed_after_the_last_one(
    token: looptoken.LoopToken,
) -> None:
    first = in_background(_raw_connection)
    second = in_background(_raw_connection)
    assert second is not first
    assert _is_closed(first)  # CONN_MAX_AGE = 0: closed after its call


@pytest.mark.django_db(transaction=True)
def test_a_persistent_background_connection_left_broken_is_not_reused(
    token: looptoken.LoopToken,
) -> None:
    def leave_autocommit_off() -> Any:
        raw = _raw_connection()
        transaction.set_autocommit(False)  # and never restored: unsafe to reuse
        return raw

    def close() -> None:
        connection.close()

    settings_dict = connection.settings_dict  # shared by every thread's connection
    settings_dict["CONN_MAX_AGE"] = None
    try:
        first = in_background(_raw_connection)
        assert in_background(_raw_connection) is first  # persistent: kept while healthy
        assert in_background(leave_autocommit_off) is first
        fresh = in_background(_raw_connection)
        assert fresh is not first
        assert _is_closed(first)
    finally:
        settings_dict["CONN_MAX_AGE"] = 0
        in_background(close)


def test_a_burst_of_spawns_starts_in_slices_across_loop_iterations(
    token: looptoken.LoopToken,
) -> None:
    """20,000 spawns handed in while the loop is busy do not all start in one
    callback: a ticker that runs once per loop iteration runs between slices."""
    loop = looptoken.get_loop()
    iteration = [0]
    ticking = [True]

    def tick() -> None:  # once per loop iteration, until told to stop
        iteration[0] += 1
        if ticking[0]:
            loop.call_soon(tick)

    first_step_at: list[int] = []

    async def record() -> None:
        first_step_at.append(iteration[0])

    busy = threading.Event()
    release = threading.Event()

    def hold_the_loop() -> None:
        busy.set()
        release.wait(30)

    loop.call_soon_threadsafe(hold_the_loop)
    assert busy.wait(30)
    futures = [looptoken.spawn(record()) for _ in range(20_000)]
    loop.call_soon_threadsafe(tick)
    release.set()
    concurrent.futures.wait(futures, timeout=60)
    ticking[0] = False
    assert len(first_step_at) == 20_000
    # Started in one callback, every first step would run in one iteration.
    assert len(set(first_step_at)) >= 3, sorted(set(first_step_at))

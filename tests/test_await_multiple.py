"""await_multiple: several coroutines at once, outcomes in input order."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from asgiref.sync import sync_to_async

import django_looptoken as looptoken

pytestmark = pytest.mark.usefixtures("token")


def test_runs_concurrently() -> None:
    """Each coroutine waits for the other: run one after another, they would time out."""
    first_ran = asyncio.Event()
    second_ran = asyncio.Event()

    async def first() -> str:
        first_ran.set()
        await second_ran.wait()
        return "first"

    async def second() -> str:
        second_ran.set()
        await first_ran.wait()
        return "second"

    assert looptoken.await_multiple([first(), second()], timeout=10) == [
        (True, "first"),
        (True, "second"),
    ]


def test_reports_results_and_exceptions_in_input_order() -> None:
    async def after(delay: float, value: object) -> object:
        await asyncio.sleep(delay)
        if isinstance(value, Exception):
            raise value
        return value

    error = ZeroDivisionError("division by zero")
    outcomes = looptoken.await_multiple(
        after(d, v) for d, v in [(0.03, 1), (0, error), (0.01, "x")]
    )
    assert outcomes == [(True, 1), (False, error), (True, "x")]


def test_timeout_cancels_the_unfinished_ones() -> None:
    cancelled = threading.Event()

    async def slow() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    fast, late = looptoken.await_multiple([asyncio.sleep(0, "done"), slow()], timeout=0.05)
    assert fast == (True, "done")
    assert late[0] is False
    assert isinstance(late[1], TimeoutError)
    assert cancelled.is_set()


def test_default_timeout_reports_the_late_ones_instead_of_raising(settings: Any) -> None:
    settings.LOOPTOKEN = {**settings.LOOPTOKEN, "DEFAULT_TIMEOUT": 0.05}
    fast, late = looptoken.await_multiple([asyncio.sleep(0, "done"), asyncio.sleep(60)])
    assert fast == (True, "done")
    assert late[0] is False
    assert isinstance(late[1], TimeoutError)


def test_empty_iterable_returns_an_empty_list() -> None:
    assert looptoken.await_multiple([]) == []
    assert looptoken.await_multiple(iter(())) == []


def test_thread_sensitive_calls_of_every_coroutine_run_in_the_caller() -> None:
    async def ident() -> int:
        return await sync_to_async(threading.get_ident)()

    outcomes = looptoken.await_multiple([ident(), ident(), ident()])
    assert outcomes == [(True, threading.get_ident())] * 3


def test_rejects_a_bad_item_and_closes_the_coroutines() -> None:
    good_before, good_after = asyncio.sleep(0), asyncio.sleep(0)
    with pytest.raises(TypeError, match="await_multiple"):
        looptoken.await_multiple([good_before, "nope", good_after])  # type: ignore[list-item]
    assert good_before.cr_frame is None
    assert good_after.cr_frame is None


def test_rejects_a_non_iterable() -> None:
    with pytest.raises(TypeError, match="iterable of awaitables"):
        looptoken.await_multiple(asyncio.sleep(0))  # type: ignore[arg-type]

"""Timeouts: one check for every API that takes one (same error types, same
message), and a timeout that bounds the caller even when the coroutine resists."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest

import django_looptoken as looptoken
from django_looptoken._runtime import State, runtime
from tests.support.processes import wait_until


def _await(timeout: object) -> None:
    looptoken.await_(asyncio.sleep(0), timeout=timeout)  # type: ignore[arg-type]


def _await_multiple(timeout: object) -> None:
    looptoken.await_multiple([asyncio.sleep(0)], timeout=timeout)  # type: ignore[arg-type]


def _runs_async(timeout: object) -> None:
    looptoken.runs_async(timeout=timeout)  # type: ignore[arg-type]


async def _numbers() -> Any:
    yield 1


class _Scope:
    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc_info: object) -> None:
        return None


def _iterate(timeout: object) -> None:
    looptoken.iterate(_numbers(), timeout=timeout)  # type: ignore[arg-type]


def _enter(timeout: object) -> None:
    looptoken.enter(_Scope(), timeout=timeout)  # type: ignore[arg-type]


def _shutdown(timeout: object) -> None:
    looptoken.shutdown(timeout=timeout)  # type: ignore[arg-type]


CALLS: dict[str, Callable[[object], None]] = {
    "await_": _await,
    "await_multiple": _await_multiple,
    "runs_async": _runs_async,
    "iterate": _iterate,
    "enter": _enter,
    "shutdown": _shutdown,
}


@pytest.mark.parametrize("name", CALLS)
@pytest.mark.parametrize("timeout", [math.nan, math.inf, -math.inf, -1, -0.5])
def test_bad_numbers_are_value_errors(backend: str, name: str, timeout: float) -> None:
    """NaN and infinities were taken as no timeout, or one at a random moment."""
    with pytest.raises(ValueError, match="finite number of seconds") as excinfo:
        CALLS[name](timeout)
    bound = ">= 0" if name == "shutdown" else "> 0"
    assert str(excinfo.value) == (
        f"{name}() timeout must be None or a finite number of seconds {bound}, not {timeout!r}."
    )
    assert runtime().state is State.STOPPED


@pytest.mark.parametrize("name", CALLS)
@pytest.mark.parametrize("timeout", ["1", True, [1], 1j])
def test_non_numbers_are_type_errors(backend: str, name: str, timeout: Any) -> None:
    with pytest.raises(TypeError, match="finite number of seconds") as excinfo:
        CALLS[name](timeout)
    bound = ">= 0" if name == "shutdown" else "> 0"
    assert str(excinfo.value) == (
        f"{name}() timeout must be None or a finite number of seconds {bound}, not {timeout!r}."
    )


@pytest.mark.parametrize("name", ["await_", "await_multiple", "runs_async", "iterate", "enter"])
def test_zero_is_refused_where_it_would_cancel_at_once(backend: str, name: str) -> None:
    with pytest.raises(ValueError, match=r"> 0, not 0\."):
        CALLS[name](0)


def test_shutdown_takes_zero(backend: str) -> None:
    """shutdown(timeout=0) cuts everything at once, as documented."""
    token = looptoken.start_loop()
    looptoken.shutdown(timeout=0)
    assert runtime().state is State.STOPPED
    token.release()  # a no-op now: its loop is gone


def test_valid_timeouts_pass(backend: str) -> None:
    assert looptoken.await_(asyncio.sleep(0, result=1), timeout=1) == 1
    assert looptoken.await_multiple([asyncio.sleep(0, result=2)], timeout=0.5) == [(True, 2)]


# -- a timeout bounds the caller, even for a coroutine that resists it --------------


def _stubborn(release: threading.Event) -> Coroutine[Any, Any, None]:
    async def stubborn() -> None:
        while not release.is_set():
            with contextlib.suppress(asyncio.CancelledError):  # as badly written code does
                await asyncio.sleep(0.02)

    return stubborn()


@pytest.fixture
def release() -> Iterator[threading.Event]:
    """Ends the stubborn coroutines; set at teardown, and after 20 s anyway so
    that, without the grace, the call returns (without TimeoutError) instead
    of hanging the suite."""
    event = threading.Event()
    timer = threading.Timer(20, event.set)
    timer.start()
    yield event
    event.set()
    timer.cancel()


def test_await_raises_timeout_error_even_if_the_coroutine_swallows_its_cancellation(
    token: looptoken.LoopToken, release: threading.Event, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.WARNING, logger="django_looptoken"),
        pytest.raises(TimeoutError, match=r"still running 1\.0 s after it was cancelled"),
    ):
        looptoken.await_(_stubborn(release), timeout=0.2)
    assert looptoken.status()["tasks_past_timeout"] == 1
    assert looptoken.status()["await_timeouts"] == 1
    (record,) = [r for r in caplog.records if "still runs" in r.getMessage()]
    assert "in stubborn" in record.getMessage()  # where it waits
    release.set()
    wait_until(lambda: looptoken.status()["tasks_past_timeout"] == 0, "the task to end")


def test_await_multiple_reports_a_timeout_even_if_a_coroutine_swallows_its_cancellation(
    token: looptoken.LoopToken, release: threading.Event
) -> None:
    stubborn, quick = looptoken.await_multiple(
        [_stubborn(release), asyncio.sleep(0, "quick")], timeout=0.2
    )
    assert stubborn[0] is False
    assert isinstance(stubborn[1], TimeoutError)
    assert quick == (True, "quick")
    assert looptoken.status()["tasks_past_timeout"] == 1
    release.set()
    wait_until(lambda: looptoken.status()["tasks_past_timeout"] == 0, "the task to end")

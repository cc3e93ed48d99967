"""The shutdown sequence, shutdown_waits_for and shutdown()."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

import django_looptoken as looptoken
from django_looptoken import signals
from django_looptoken._runtime import State, runtime


@pytest.fixture
def events() -> Iterator[list[str]]:
    """What the sequence did, in order, as seen by signals (and the test's objects)."""
    seen: list[str] = []

    def on_stopping(sender: type, loop: asyncio.AbstractEventLoop, **kwargs: object) -> None:
        assert isinstance(loop, sender)
        seen.append("loop_stopping")

    def on_stopped(sender: type, loop: asyncio.AbstractEventLoop, **kwargs: object) -> None:
        assert not loop.is_closed()
        seen.append("loop_stopped")

    signals.loop_stopping.connect(on_stopping)
    signals.loop_stopped.connect(on_stopped)
    try:
        yield seen
    finally:
        signals.loop_stopping.disconnect(on_stopping)
        signals.loop_stopped.disconnect(on_stopped)


def test_the_sequence_runs_in_aiorun_order(events: list[str]) -> None:
    started = threading.Event()

    async def unprotected() -> None:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            events.append("unprotected cancelled")
            raise

    async def protected() -> None:
        await asyncio.sleep(0.05)
        events.append("protected finished")

    async def generator() -> AsyncIterator[int]:
        try:
            yield 1
            await asyncio.sleep(60)
        finally:
            events.append("async generator closed")

    suspended: list[AsyncIterator[int]] = []

    async def start_generator() -> None:
        agen = generator()
        await agen.__anext__()
        suspended.append(agen)  # kept alive, suspended: shutdown_asyncgens closes it

    def in_executor() -> None:
        events.append("executor job ran")

    class Pool:
        async def aclose(self) -> None:
            events.append("loop resource closed")

    pool = looptoken.loop_resource(Pool, close="aclose")

    async def use_the_pool() -> None:
        pool.get()

    token = looptoken.start_loop()
    loop = looptoken.get_loop()
    looptoken.spawn(unprotected())
    looptoken.spawn(looptoken.shutdown_waits_for(protected()))
    looptoken.await_(start_generator())
    looptoken.await_(loop.run_in_executor(None, in_executor))
    looptoken.await_(use_the_pool())
    assert started.wait(10)
    token.release()

    assert loop.is_closed()
    assert events == [
        "executor job ran",
        "loop_stopping",
        "unprotected cancelled",
        "protected finished",
        "loop resource closed",
        "async generator closed",
        "loop_stopped",
    ]


def test_shutdown_waits_for_is_awaitable_like_shield() -> None:
    async def inner() -> str:
        await asyncio.sleep(0)
        return "shielded"

    async def outer() -> str:
        return await looptoken.shutdown_waits_for(inner())

    with looptoken.start_loop():
        assert looptoken.await_(outer()) == "shielded"


def test_cancelling_the_awaiter_does_not_cancel_the_protected_work() -> None:
    finished = threading.Event()

    async def inner() -> None:
        await asyncio.sleep(0.05)
        finished.set()

    async def outer() -> None:
        await looptoken.shutdown_waits_for(inner())

    with looptoken.start_loop(), pytest.raises(TimeoutError):
        looptoken.await_(outer(), timeout=0.01)
        # The token's release runs the sequence, which waits for the work.
    assert finished.is_set()


def test_shutdown_waits_for_rejects_a_non_awaitable() -> None:
    with pytest.raises(TypeError, match="shutdown_waits_for"):
        looptoken.shutdown_waits_for(42)  # type: ignore[arg-type]


def test_protected_work_is_cut_after_shutdown_timeout_and_logged_with_its_stack(
    looptoken_settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    looptoken_settings(SHUTDOWN_TIMEOUT=0.2)
    cut = threading.Event()

    async def an_hour_of_work() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cut.set()
            raise

    token = looptoken.start_loop()
    looptoken.spawn(looptoken.shutdown_waits_for(an_hour_of_work()))
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="django_looptoken"):
        token.release()
    assert time.monotonic() - started < 0.2 + 5  # cut, not an hour
    assert cut.is_set()
    (record,) = [r for r in caplog.records if "Shutdown cut" in r.getMessage()]
    assert "an_hour_of_work" in record.getMessage()
    assert "after 0.2 s (the drain's deadline)" in record.getMessage()


def test_a_task_that_swallows_cancellation_does_not_hang_shutdown(
    looptoken_settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    looptoken_settings(SHUTDOWN_TIMEOUT=0.2)
    swallowed = threading.Event()
    release = threading.Event()

    async def stubborn() -> None:
        while not release.is_set():
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                swallowed.set()  # and keep going, as badly written code does

    token = looptoken.start_loop()
    looptoken.spawn(stubborn())
    looptoken.await_(asyncio.sleep(0))
    with caplog.at_level(logging.WARNING, logger="django_looptoken"):
        token.release()
    release.set()
    assert swallowed.is_set()
    assert runtime().state is State.STOPPED
    assert any("stubborn" in r.getMessage() for r in caplog.records)


def test_shutdown_drains_tokens_released_in_time() -> None:
    """A request holding a token finishes before the sequence runs."""
    runtime().hold_app_token()
    request_token = looptoken.start_loop()
    finished: list[str] = []
    stopping = threading.Event()

    def on_stopping(**kwargs: object) -> None:
        stopping.set()

    def finish_request() -> None:
        finished.append(looptoken.await_(asyncio.sleep(0.05, result="response")))
        request_token.release()

    signals.loop_stopping.connect(on_stopping)
    try:
        stopper = threading.Thread(target=looptoken.shutdown, kwargs={"timeout": 10})
        stopper.start()
        assert not stopping.wait(0.1)  # still draining: the request holds its token
        finish_request()
        stopper.join(10)
        assert not stopper.is_alive()
    finally:
        signals.loop_stopping.disconnect(on_stopping)
    assert finished == ["response"]
    assert runtime().state is State.STOPPED


def test_shutdown_with_nothing_running_returns_at_once() -> None:
    looptoken.shutdown(timeout=1)
    assert runtime().state is State.STOPPED
    with looptoken.start_loop():  # and the loop can start again afterwards
        assert looptoken.get_loop().is_running()


def test_shutdown_rejects_a_bad_timeout() -> None:
    with pytest.raises(ValueError, match="timeout"):
        looptoken.shutdown(timeout=-1)


def test_shutdown_cannot_be_called_from_the_loop_thread() -> None:
    async def inside() -> None:
        looptoken.shutdown()

    with looptoken.start_loop(), pytest.raises(RuntimeError, match="loop's own thread"):
        looptoken.await_(inside())


def test_a_failing_signal_receiver_is_logged_and_does_not_stop_the_sequence(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stopped = threading.Event()

    def broken(**kwargs: object) -> None:
        raise ValueError("broken receiver")

    def on_stopped(**kwargs: object) -> None:
        stopped.set()

    signals.loop_stopping.connect(broken)
    signals.loop_stopped.connect(on_stopped)
    try:
        with caplog.at_level(logging.ERROR, logger="django_looptoken"), looptoken.start_loop():
            pass
    finally:
        signals.loop_stopping.disconnect(broken)
        signals.loop_stopped.disconnect(on_stopped)
    assert stopped.is_set()
    assert any("loop_stopping receiver failed" in r.getMessage() for r in caplog.records)


def test_loop_started_is_sent_with_the_loop() -> None:
    seen: list[asyncio.AbstractEventLoop] = []
    sent = threading.Event()

    def on_started(sender: type, loop: asyncio.AbstractEventLoop, **kwargs: object) -> None:
        assert isinstance(loop, sender)
        seen.append(loop)
        sent.set()

    signals.loop_started.connect(on_started)
    try:
        with looptoken.start_loop():
            assert sent.wait(10)
            assert seen == [looptoken.get_loop()]
    finally:
        signals.loop_started.disconnect(on_started)


def test_a_spawned_protected_jobs_future_reports_its_real_outcome() -> None:
    async def job(value: int) -> int:
        await asyncio.sleep(0.2)
        return value

    async def failing_job() -> None:
        await asyncio.sleep(0.2)
        raise KeyError("from the job")

    token = looptoken.start_loop()
    done = looptoken.spawn(looptoken.shutdown_waits_for(job(42)))
    failed = looptoken.spawn(looptoken.shutdown_waits_for(failing_job()))
    token.release()  # the sequence waits for both
    assert done.result(0) == 42
    assert isinstance(failed.exception(0), KeyError)

"""The pool of native threads the loop's executors use under gevent,
exercised directly (its threads are the same without gevent)."""

from __future__ import annotations

import concurrent.futures
import threading

import pytest

from django_looptoken._native_pool import NativeThreadPool

WAIT = 10.0  # bounds a failing test's waits


def test_work_runs_at_once_in_up_to_max_workers_threads() -> None:
    pool = NativeThreadPool(2, "test-pool")
    both_in = threading.Barrier(2, timeout=WAIT)
    try:
        first, second = (pool.submit(both_in.wait) for _ in range(2))
        third = pool.submit(threading.get_native_id)
        assert {first.result(WAIT), second.result(WAIT)} == {0, 1}  # met at the barrier
        assert third.result(WAIT) != threading.get_native_id()
    finally:
        pool.shutdown()


def test_an_exception_reaches_the_future() -> None:
    pool = NativeThreadPool(1, "test-pool")
    try:
        with pytest.raises(ZeroDivisionError):
            pool.submit(lambda: 1 / 0).result(WAIT)
    finally:
        pool.shutdown()


def test_shutdown_waits_for_running_work_and_can_cancel_queued_work() -> None:
    pool = NativeThreadPool(1, "test-pool")
    started, release = threading.Event(), threading.Event()

    def hold() -> str:
        started.set()
        release.wait(WAIT)
        return "done"

    running = pool.submit(hold)
    queued = pool.submit(lambda: "never")
    assert started.wait(WAIT)
    threading.Timer(0.2, release.set).start()
    pool.shutdown(wait=True, cancel_futures=True)
    assert running.done()  # shutdown waited for it
    assert running.result() == "done"
    assert queued.cancelled()
    with pytest.raises(RuntimeError, match="after shutdown"):
        pool.submit(print)


def test_it_is_what_asyncio_takes_as_a_default_executor() -> None:
    import asyncio

    loop = asyncio.new_event_loop()
    pool = NativeThreadPool(1, "test-pool")
    try:
        loop.set_default_executor(pool)  # TypeError for anything but a ThreadPoolExecutor
        assert loop.run_until_complete(loop.run_in_executor(None, lambda: 42)) == 42
    finally:
        pool.shutdown()
        loop.close()
    assert isinstance(pool, concurrent.futures.ThreadPoolExecutor)

"""Concurrency stress: many threads starting, using and stopping the loop.

Each test is bounded: a fixed number of iterations, barriers and joins with
timeouts, never a sleep waiting for something to happen. A worker's exception
is collected and fails the test; a thread still alive after its join timeout
is a deadlock and fails the test too.
"""

from __future__ import annotations

import asyncio
import threading
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

import django_looptoken as looptoken
from django_looptoken import signals
from django_looptoken._runtime import State, runtime

JOIN_SECONDS = 15.0
BARRIER_SECONDS = 10.0


@dataclass
class LoopLives:
    """Which loops the ``loop_started`` / ``loop_stopped`` signals announced."""

    started: list[asyncio.AbstractEventLoop] = field(default_factory=list)
    stopped: list[asyncio.AbstractEventLoop] = field(default_factory=list)

    def distinct_started(self) -> int:
        """How many different loop objects were started."""
        return len({id(loop) for loop in self.started})


@pytest.fixture
def lives() -> Iterator[LoopLives]:
    """Record every loop start and stop during the test."""
    seen = LoopLives()
    lock = threading.Lock()

    def on_started(loop: asyncio.AbstractEventLoop, **kwargs: object) -> None:
        with lock:
            seen.started.append(loop)  # keeps the loop alive: ids stay unique

    def on_stopped(loop: asyncio.AbstractEventLoop, **kwargs: object) -> None:
        with lock:
            seen.stopped.append(loop)

    signals.loop_started.connect(on_started, weak=False)
    signals.loop_stopped.connect(on_stopped, weak=False)
    try:
        yield seen
    finally:
        signals.loop_started.disconnect(on_started)
        signals.loop_stopped.disconnect(on_stopped)


def run_threads(count: int, work: Callable[[int], None]) -> None:
    """Run ``work(i)`` in ``count`` threads; fail on any error or a thread left alive."""
    errors: list[tuple[int, BaseException]] = []
    errors_lock = threading.Lock()

    def guarded(index: int) -> None:
        try:
            work(index)
        except BaseException as exc:
            with errors_lock:
                errors.append((index, exc))

    threads = [
        threading.Thread(target=guarded, args=(i,), name=f"stress-{i}", daemon=True)
        for i in range(count)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(JOIN_SECONDS)
    alive = [thread.name for thread in threads if thread.is_alive()]
    assert not alive, f"threads deadlocked (still alive after {JOIN_SECONDS} s): {alive}"
    # A broken barrier is only the echo of the first real failure: show that one.
    errors.sort(key=lambda item: isinstance(item[1], threading.BrokenBarrierError))
    assert not errors, f"{len(errors)} worker(s) failed; thread {errors[0][0]}:\n" + "".join(
        traceback.format_exception(errors[0][1])
    )


def assert_all_stopped() -> None:
    """The loop is stopped and no loop thread is left."""
    assert runtime().state is State.STOPPED
    assert runtime().current_run is None
    assert not [t for t in threading.enumerate() if t.name == "looptoken-loop"]


async def _on_current_loop(value: int) -> int:
    """Return ``value`` after checking the coroutine runs on the current run's loop."""
    await asyncio.sleep(0)
    run = runtime().current_run
    assert run is not None
    assert asyncio.get_running_loop() is run.loop
    return value


async def _fail(value: int) -> None:
    await asyncio.sleep(0)
    raise KeyError(value)


def _held_run_loop(token: looptoken.LoopToken) -> asyncio.AbstractEventLoop:
    """With ``token`` held, the current run's loop, checked to be running."""
    assert token.held
    run = runtime().current_run
    assert run is not None
    assert run.loop.is_running()
    # get_loop() is the running loop while a token is held.
    assert looptoken.get_loop() is run.loop
    return run.loop


def test_many_threads_start_await_and_release(lives: LoopLives) -> None:
    """32 threads x 30 rounds of start_loop / await_ / release. Every fifth
    round all threads meet after releasing, so the loop has certainly
    stopped and the next round starts a fresh one; in between, starts and
    stops race freely."""
    threads, rounds, meet_every = 32, 30, 5

    barrier = threading.Barrier(threads, action=assert_all_stopped, timeout=BARRIER_SECONDS)

    def work(index: int) -> None:
        for round_ in range(rounds):
            token = looptoken.start_loop()
            try:
                loop = _held_run_loop(token)
                value = index * 1000 + round_
                assert looptoken.await_(_on_current_loop(value)) == value
                # Our token kept that loop alive throughout the call.
                assert _held_run_loop(token) is loop
            finally:
                token.release()
            assert not token.held
            if round_ % meet_every == meet_every - 1:
                barrier.wait()

    run_threads(threads, work)
    assert_all_stopped()
    assert lives.distinct_started() >= rounds // meet_every
    assert lives.distinct_started() == len(lives.started)
    assert sorted(map(id, lives.stopped)) == sorted(map(id, lives.started))
    assert all(loop.is_closed() for loop in lives.started)


def test_mixed_await_multiple_and_spawn(lives: LoopLives) -> None:
    """Threads mix await_multiple and spawn (only while holding a token, and
    waiting for the spawned result before releasing) across restarts."""
    threads, rounds, meet_every = 24, 20, 5

    barrier = threading.Barrier(threads, action=assert_all_stopped, timeout=BARRIER_SECONDS)

    def work(index: int) -> None:
        for round_ in range(rounds):
            base = index * 1000 + round_ * 10
            with looptoken.start_loop() as token:
                _held_run_loop(token)
                outcomes = looptoken.await_multiple(
                    [_on_current_loop(base), _fail(base + 1), _on_current_loop(base + 2)],
                    timeout=10,
                )
                assert [ok for ok, _ in outcomes] == [True, False, True]
                assert outcomes[0][1] == base
                assert isinstance(outcomes[1][1], KeyError)
                assert outcomes[1][1].args == (base + 1,)
                assert outcomes[2][1] == base + 2
                future = looptoken.spawn(_on_current_loop(base + 3))
                assert future.result(timeout=10) == base + 3
                assert looptoken.await_multiple([]) == []
            if round_ % meet_every == meet_every - 1:
                barrier.wait()

    run_threads(threads, work)
    assert_all_stopped()
    assert lives.distinct_started() >= rounds // meet_every
    assert sorted(map(id, lives.stopped)) == sorted(map(id, lives.started))


def test_await_racing_stops_never_fails_or_hangs(lives: LoopLives) -> None:
    """One thread keeps taking and releasing a single token (so the loop
    keeps stopping) while 8 threads, meeting before each call, call await_
    over and over: every call returns its own result; none raises or hangs."""
    callers, calls = 8, 100
    done = threading.Event()
    flips = 0
    finished: list[int] = []
    finished_lock = threading.Lock()
    results: dict[int, list[int]] = {index: [] for index in range(callers)}

    def flapper() -> None:
        nonlocal flips
        while not done.is_set():
            token = looptoken.start_loop()
            assert token.held
            token.release()
            flips += 1

    # Callers meet before each call, so they all arrive idle at once, just
    # as the flapper's release may be stopping the loop.
    meet = threading.Barrier(callers, timeout=BARRIER_SECONDS)

    def caller(index: int) -> None:
        try:
            for call in range(calls):
                meet.wait()
                value = index * 1000 + call
                results[index].append(looptoken.await_(_on_current_loop(value), timeout=10))
        finally:
            with finished_lock:
                finished.append(index)
                if len(finished) == callers:
                    done.set()

    try:
        run_threads(callers + 1, lambda i: flapper() if i == callers else caller(i))
    finally:
        done.set()  # never leave the flapper running
    assert flips > 0
    for index in range(callers):
        assert results[index] == [index * 1000 + call for call in range(calls)]
    assert_all_stopped()
    # Stops really raced the calls: the loop was stopped and started afresh.
    assert len(lives.started) > 1
    assert sorted(map(id, lives.stopped)) == sorted(map(id, lives.started))
    assert lives.distinct_started() == len(lives.started)


def test_concurrent_releases_stop_the_loop_once_after_the_last(lives: LoopLives) -> None:
    """50 threads release their tokens at once while main holds one more:
    the loop keeps running; main's release then stops it, exactly once."""
    threads = 50
    main_token = looptoken.start_loop()
    try:
        loop = looptoken.get_loop()
        barrier = threading.Barrier(threads, timeout=BARRIER_SECONDS)

        def work(index: int) -> None:
            token = looptoken.start_loop()
            barrier.wait()  # everyone holds a token now
            assert token.held
            barrier.wait()  # and everyone releases at once
            token.release()
            assert not token.held

        run_threads(threads, work)
        run = runtime().current_run
        assert runtime().state is State.RUNNING
        assert run is not None
        assert run.loop is loop
        assert run.tokens == 1
        assert loop.is_running()
        assert main_token.held
        assert lives.stopped == []
    finally:
        main_token.release()
    assert_all_stopped()
    assert lives.stopped == [loop]
    assert lives.started == [loop]


def test_one_token_released_from_many_threads_counts_once(lives: LoopLives) -> None:
    """The same token released from 10 threads at once drops the count by
    exactly one: another token held alongside keeps the loop running."""
    threads = 10
    keeper = looptoken.start_loop()
    try:
        token = looptoken.start_loop()
        run = runtime().current_run
        assert run is not None
        assert run.tokens == 2
        barrier = threading.Barrier(threads, timeout=BARRIER_SECONDS)

        def work(index: int) -> None:
            barrier.wait()
            if index % 2:
                token.release()
            else:
                looptoken.release_loop(token)

        run_threads(threads, work)
        assert not token.held
        assert keeper.held
        assert runtime().current_run is run
        assert run.tokens == 1
        assert run.loop.is_running()
        assert looptoken.await_(_on_current_loop(5)) == 5
        assert lives.stopped == []
    finally:
        keeper.release()
    assert_all_stopped()
    assert len(lives.stopped) == 1

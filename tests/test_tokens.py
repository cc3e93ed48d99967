"""Loop tokens: start_loop, release_loop, LoopToken, get_loop (score.asyncio's API)."""

from __future__ import annotations

import asyncio
import threading
from typing import SupportsIndex

import pytest

import django_looptoken as looptoken
from django_looptoken import signals
from django_looptoken._runtime import State, runtime


def test_score_asyncio_ten_tokens() -> None:
    """The behaviour score.asyncio documents, as written."""
    tokens = []
    assert not looptoken.get_loop().is_running()
    for _ in range(10):
        token = looptoken.start_loop()
        assert looptoken.get_loop().is_running()
        tokens.append(token)
    for token in tokens:
        assert looptoken.get_loop().is_running()
        token.release()
    assert not looptoken.get_loop().is_running()


def test_three_ways_to_release() -> None:
    token = looptoken.start_loop()
    token.release()
    assert runtime().state is State.STOPPED
    token = looptoken.start_loop()
    looptoken.release_loop(token)
    assert runtime().state is State.STOPPED
    with looptoken.start_loop() as token:
        assert isinstance(token, looptoken.LoopToken)
        assert token.held
        assert looptoken.get_loop().is_running()
    assert not token.held
    assert runtime().state is State.STOPPED


def test_release_twice_is_a_no_op() -> None:
    first = looptoken.start_loop()
    second = looptoken.start_loop()
    first.release()
    first.release()
    looptoken.release_loop(first)
    assert second.held
    assert looptoken.get_loop().is_running()
    second.release()
    assert not looptoken.get_loop().is_running()


def test_threads_releasing_one_token_at_once_count_it_once() -> None:
    keeper = looptoken.start_loop()
    run = runtime().current_run
    assert run is not None
    for _ in range(20):  # bounded: 20 rounds of 8 racing threads
        token = looptoken.start_loop()
        barrier = threading.Barrier(8)
        threads = [
            threading.Thread(target=_release_when_all_are_ready, args=(token, barrier))
            for _ in range(8)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        assert run.tokens == 1  # the keeper's
    assert keeper.held
    keeper.release()


def _release_when_all_are_ready(token: looptoken.LoopToken, barrier: threading.Barrier) -> None:
    barrier.wait(10)
    token.release()


def test_release_loop_rejects_other_objects() -> None:
    with pytest.raises(TypeError, match="LoopToken"):
        looptoken.release_loop("token")  # type: ignore[arg-type]


def test_get_loop_is_the_loop_the_next_start_runs() -> None:
    upcoming = looptoken.get_loop()
    assert not upcoming.is_running()
    with looptoken.start_loop():
        assert looptoken.get_loop() is upcoming
        assert upcoming.is_running()


def test_fresh_loop_after_a_full_stop() -> None:
    with looptoken.start_loop():
        first = looptoken.get_loop()
    assert first.is_closed()
    with looptoken.start_loop():
        second = looptoken.get_loop()
        assert second is not first
        assert second.is_running()
        assert looptoken.await_(asyncio.sleep(0, result="fresh")) == "fresh"


def test_loop_runs_in_a_named_daemon_thread() -> None:
    with looptoken.start_loop():
        thread_id = looptoken.await_(_thread_ident())
        (thread,) = [t for t in threading.enumerate() if t.ident == thread_id]
        assert thread.name == "looptoken-loop"
        assert thread.daemon
        assert thread is not threading.current_thread()


async def _thread_ident() -> int:
    return threading.get_ident()


def test_token_garbage_collected_while_held_is_released_with_a_warning() -> None:
    token = looptoken.start_loop()
    run = runtime().current_run
    assert run is not None
    with pytest.warns(ResourceWarning, match="garbage-collected while held"):
        del token  # the last reference: CPython finalizes it right here
    # The release is handed to the loop thread; it stops the loop.
    assert run.thread is not None
    run.thread.join(timeout=10)
    assert not run.thread.is_alive()
    assert runtime().state is State.STOPPED


def test_token_of_a_shut_down_loop_is_not_held_and_releases_as_a_no_op() -> None:
    token = looptoken.start_loop()
    looptoken.shutdown(timeout=0.5)
    assert not token.held
    with looptoken.start_loop() as fresh:
        token.release()
        assert fresh.held
        assert looptoken.get_loop().is_running()


def test_a_stop_racing_a_start_never_hands_out_a_token_on_a_closing_loop() -> None:
    """While the last release runs the shutdown sequence, start_loop() waits
    and then starts a fresh loop: the token it returns is on a running loop."""
    stopping = threading.Event()
    proceed = threading.Event()

    def hold_up_the_stop(**kwargs: object) -> None:
        stopping.set()
        proceed.wait(10)

    signals.loop_stopping.connect(hold_up_the_stop)
    try:
        token = looptoken.start_loop()
        old_loop = looptoken.get_loop()
        releaser = threading.Thread(target=token.release)
        releaser.start()
        assert stopping.wait(10)
        assert runtime().state is State.STOPPING
        result: list[looptoken.LoopToken] = []
        starter = threading.Thread(target=lambda: result.append(looptoken.start_loop()))
        starter.start()
        # A negative check: it cannot fail spuriously, and a start_loop() that
        # wrongly returned a token on the stopping loop would have done so by now.
        starter.join(0.2)
        assert starter.is_alive(), "start_loop() returned while the loop was stopping"
        proceed.set()
        releaser.join(10)
        starter.join(10)
        (new_token,) = result
        assert new_token.held
        assert looptoken.get_loop() is not old_loop
        assert looptoken.get_loop().is_running()
        assert old_loop.is_closed()
        new_token.release()
    finally:
        proceed.set()
        signals.loop_stopping.disconnect(hold_up_the_stop)


class _PausingHolders(list[None]):
    """A run's token list that pauses where lock-free counting can race a
    stop: ``before_append`` runs at the first append, ``popped`` is set at
    each pop."""

    def __init__(self, items: list[None], *, before_append: object = None) -> None:
        super().__init__(items)
        self.before_append = before_append
        self.popped = threading.Event()

    def append(self, item: None) -> None:
        hook, self.before_append = self.before_append, None
        if callable(hook):
            hook()
        super().append(item)

    def pop(self, index: SupportsIndex = -1) -> None:
        item = super().pop(index)
        self.popped.set()
        return item


def test_a_token_counted_while_the_last_release_decides_keeps_the_loop_running() -> None:
    """The last release uncounts its token without the lock, then takes the
    lock to stop the loop. A start_loop() that counts a token in between (it
    needs no lock while the loop runs) must keep the loop running."""
    token = looptoken.start_loop()
    run = runtime().current_run
    assert run is not None
    holders = run.holders = _PausingHolders(run.holders)
    newcomer: list[looptoken.LoopToken] = []
    with runtime()._lock:  # the release below uncounts, then waits here
        releaser = threading.Thread(target=token.release)
        releaser.start()
        assert holders.popped.wait(10)
        assert run.tokens == 0
        # In a thread: a start_loop() that wrongly took the lock would hang.
        starter = threading.Thread(target=lambda: newcomer.append(looptoken.start_loop()))
        starter.start()
        starter.join(10)
        assert not starter.is_alive(), "start_loop() waited for the lock while the loop ran"
    releaser.join(10)
    assert not releaser.is_alive()
    (fresh,) = newcomer
    assert fresh.held
    assert fresh.loop is run.loop
    assert runtime().state is State.RUNNING
    assert run.loop.is_running()
    fresh.release()
    assert runtime().state is State.STOPPED


def test_a_start_that_counts_as_the_last_release_stops_waits_for_a_fresh_loop() -> None:
    """start_loop() sees the loop running, then the last release stops it
    before the start counts its token: the start must not keep that token on
    the stopping loop, but wait and start a fresh one."""
    stopping = threading.Event()
    proceed = threading.Event()

    def hold_up_the_stop(**kwargs: object) -> None:
        stopping.set()
        proceed.wait(10)

    token = looptoken.start_loop()
    run = runtime().current_run
    assert run is not None
    releasers: list[threading.Thread] = []
    states_seen_before_counting: list[State] = []
    stopped_first = threading.Event()

    def release_until_stopping() -> None:
        releaser = threading.Thread(target=token.release)
        releasers.append(releaser)
        releaser.start()
        stopping.wait(10)
        states_seen_before_counting.append(runtime().state)
        stopped_first.set()

    run.holders = _PausingHolders(run.holders, before_append=release_until_stopping)
    signals.loop_stopping.connect(hold_up_the_stop)
    try:
        result: list[looptoken.LoopToken] = []
        starter = threading.Thread(target=lambda: result.append(looptoken.start_loop()))
        starter.start()
        assert stopped_first.wait(10)
        assert states_seen_before_counting == [State.STOPPING]
        proceed.set()
        starter.join(10)
        (releaser,) = releasers
        releaser.join(10)
        assert not starter.is_alive()
        assert not releaser.is_alive()
        (fresh,) = result
        assert fresh.loop is not run.loop
        assert run.loop.is_closed()
        assert fresh.held
        assert fresh.loop.is_running()
        fresh.release()
    finally:
        proceed.set()
        signals.loop_stopping.disconnect(hold_up_the_stop)

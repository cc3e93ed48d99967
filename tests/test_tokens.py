"""Loop tokens: start_loop, release_loop, LoopToken, get_loop (score.asyncio's API)."""

from __future__ import annotations

import asyncio
import threading

import pytest

import django_looptoken as looptoken
from django_looptoken import signals
from django_looptoken._runtime import State, runtime

pytestmark = pytest.mark.usefixtures("backend")


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

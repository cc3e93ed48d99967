"""await_: running a coroutine on the shared loop from synchronous code."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import os
import re
import signal
import threading
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.db import transaction
from django.utils import translation

import django_looptoken as looptoken
from django_looptoken import _call, _handback, _waiting, signals
from django_looptoken._call import Call
from django_looptoken._runtime import State, runtime
from tests.testapp.models import Item

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id")


@pytest.fixture(params=["direct", "generic"])
def context_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways of moving a context between threads: touching asgiref's
    variables directly (its known layout) and going through its Local API.

    Private on purpose: the two paths behave the same in public, and the
    installed asgiref decides which one runs; forcing the other is the only
    way to keep the fallback tested."""
    if request.param == "generic":
        monkeypatch.setattr(_handback, "_DIRECT", False)
    else:
        assert _handback._DIRECT, "the installed asgiref should allow the direct path"
    return str(request.param)


def _wake_every_caller_with(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if kind == "lock":
        monkeypatch.setattr(_call, "pick_waker", lambda *, alone, greenlet: _waiting.LockWaker())
        return
    if kind == "pipe":
        monkeypatch.setattr(_waiting, "USE_EVENTFD", False)
    else:
        assert _waiting.USE_EVENTFD, "this platform should have os.eventfd"
    monkeypatch.setattr(_waiting, "_local", threading.local())  # new wakers of that kind
    monkeypatch.setattr(_call, "pick_waker", lambda *, alone, greenlet: _waiting.thread_waker())


@pytest.fixture(params=["lock", "eventfd", "pipe"])
def waker_kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every way a waiting caller is woken, whether or not it is alone: a lock,
    its thread's eventfd (Linux), its thread's pipe (elsewhere).

    Private on purpose: the wake-up is invisible in public (every kind gives
    the same results), and the platform picks one; forcing each kind is the
    only way to test the others here."""
    _wake_every_caller_with(request.param, monkeypatch)
    return str(request.param)


@pytest.fixture(params=["eventfd", "pipe"])
def descriptor_waker_kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The wakers that hold file descriptors."""
    _wake_every_caller_with(request.param, monkeypatch)
    return str(request.param)


async def _answer(value: Any) -> Any:
    await asyncio.sleep(0)
    return value


async def _fail() -> None:
    await asyncio.sleep(0)
    raise KeyError("missing")


def test_returns_the_result() -> None:
    assert looptoken.await_(_answer(42)) == 42


def test_runs_on_the_shared_loop_and_holds_a_token_meanwhile() -> None:
    async def inside() -> tuple[bool, int]:
        run = runtime().current_run
        assert run is not None
        return asyncio.get_running_loop() is looptoken.get_loop(), run.tokens

    on_shared_loop, tokens = looptoken.await_(inside())
    assert on_shared_loop
    assert tokens == 1
    # With no other token held, the loop stops again once the call is done.
    assert runtime().state is State.STOPPED


def test_accepts_any_awaitable(token: looptoken.LoopToken) -> None:
    class Awaitable:
        def __await__(self) -> Any:
            return _answer("custom").__await__()

    assert looptoken.await_(Awaitable()) == "custom"


def test_raises_the_coroutines_exception_with_its_traceback(token: looptoken.LoopToken) -> None:
    with pytest.raises(KeyError, match="missing") as info:
        looptoken.await_(_fail())
    frames = [frame.name for frame in traceback.extract_tb(info.value.__traceback__)]
    assert "_fail" in frames


def test_a_cancelled_coroutine_raises_cancelled_error_instead_of_hanging(
    token: looptoken.LoopToken,
) -> None:
    async def cancels_itself() -> None:
        task = asyncio.current_task()
        assert task is not None
        task.cancel()
        await asyncio.sleep(0)

    with pytest.raises(asyncio.CancelledError):
        looptoken.await_(cancels_itself())


def test_timeout_cancels_the_task_on_the_loop(token: looptoken.LoopToken) -> None:
    cancelled = threading.Event()

    async def slow() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    with pytest.raises(TimeoutError, match=r"0\.05 s") as raised:
        looptoken.await_(slow(), timeout=0.05)
    assert cancelled.is_set()
    # Chained to the cancellation, whose traceback shows where it was stuck.
    cause = raised.value.__cause__
    assert isinstance(cause, asyncio.CancelledError)
    assert "slow" in {frame.name for frame in traceback.extract_tb(cause.__traceback__)}
    assert looptoken.await_(_other_tasks()) == 0
    assert runtime().current_run is not None
    assert runtime().current_run.await_timeouts == 1


async def _other_tasks() -> int:
    return len(asyncio.all_tasks()) - 1


def test_default_timeout_applies(looptoken_settings: Any, token: looptoken.LoopToken) -> None:
    looptoken_settings(DEFAULT_TIMEOUT=0.05)
    with pytest.raises(TimeoutError):
        looptoken.await_(asyncio.sleep(60))
    # An explicit timeout wins over the default.
    assert looptoken.await_(asyncio.sleep(0.1, result="ok"), timeout=5) == "ok"


def test_context_flows_in_and_back_out(token: looptoken.LoopToken, context_path: str) -> None:
    request_id.set("abc")

    async def inside() -> str:
        seen = request_id.get()
        request_id.set("def")
        return seen

    assert looptoken.await_(inside()) == "abc"
    assert request_id.get() == "def"


def test_a_finished_call_leaves_nothing_for_the_cyclic_gc(
    token: looptoken.LoopToken, context_path: str
) -> None:
    """A call's objects are freed by reference counting. Left in a cycle
    (the context routes sync work to the call, which holds the task running
    in that context), every call fed the cyclic GC, which then ran every few
    hundred calls."""
    request_id.set("abc")
    looptoken.await_(_answer(0))
    gc.collect()
    gc.disable()
    try:
        with translation.override("fr"):  # an asgiref Local re-homed each call
            for _ in range(100):
                looptoken.await_(_answer(1))
        assert gc.collect() == 0
    finally:
        gc.enable()


def test_the_coroutine_gets_a_copy_of_the_context(
    token: looptoken.LoopToken, context_path: str
) -> None:
    """Other threads' calls do not see this thread's values."""
    request_id.set("mine")
    seen: list[str] = []

    def other_thread() -> None:
        seen.append(looptoken.await_(_read_request_id()))

    thread = threading.Thread(target=other_thread)
    thread.start()
    thread.join(10)
    assert seen == ["unset"]


async def _read_request_id() -> str:
    return request_id.get("unset")


def test_asgiref_local_values_flow_both_ways(
    token: looptoken.LoopToken, context_path: str
) -> None:
    """Django keeps the active language in an asgiref Local, as async_to_sync sees it."""

    async def inside() -> str:
        seen = translation.get_language()
        translation.activate("de")
        return seen

    with translation.override("fr"):
        assert looptoken.await_(inside()) == "fr"
        assert translation.get_language() == "de"


def test_thread_sensitive_code_runs_in_the_waiting_thread(
    token: looptoken.LoopToken, context_path: str
) -> None:
    async def inside() -> int:
        return await sync_to_async(threading.get_ident)()

    assert looptoken.await_(inside()) == threading.get_ident()
    seen: list[tuple[int, int]] = []

    def other_thread() -> None:
        seen.append((threading.get_ident(), looptoken.await_(inside())))

    thread = threading.Thread(target=other_thread)
    thread.start()
    thread.join(10)
    ((caller, ran_in),) = seen
    assert caller == ran_in


def test_concurrent_callers_do_not_serialize_their_sync_calls(token: looptoken.LoopToken) -> None:
    """Both sync calls must run at the same time, or the barrier breaks."""
    barrier = threading.Barrier(2, timeout=10)

    async def meet() -> int:
        return await sync_to_async(barrier.wait)()

    results: list[int] = []
    threads = [
        threading.Thread(target=lambda: results.append(looptoken.await_(meet()))) for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(15)
    assert sorted(results) == [0, 1]


def test_nested_await_from_thread_sensitive_code(
    token: looptoken.LoopToken, context_path: str
) -> None:
    async def inner() -> int:
        return await sync_to_async(threading.get_ident)()

    def sync_middle() -> int:
        return looptoken.await_(inner())

    async def outer() -> int:
        return await sync_to_async(sync_middle)()

    assert looptoken.await_(outer()) == threading.get_ident()


def test_work_handed_back_while_a_nested_call_waits_is_not_lost(
    token: looptoken.LoopToken, waker_kind: str
) -> None:
    """While the caller's thread waits in a nested call, the outer call hands
    it more work. Forced onto the thread's descriptor waker (a nested call is
    never alone, so it normally gets a lock), both calls share it and the
    nested wait takes that wake-up: the work still runs once the nested call
    returns, and both finish."""
    order: list[str] = []

    async def run_outer() -> list[str]:
        inner_waits = asyncio.Event()
        gate = asyncio.Event()

        async def inner() -> str:
            inner_waits.set()
            await gate.wait()
            return "inner"

        def sync_middle() -> str:
            order.append(looptoken.await_(inner()))
            return "middle"

        def more_work() -> str:
            order.append("more work")
            return "more"

        nested = asyncio.ensure_future(sync_to_async(sync_middle)())
        await inner_waits.wait()
        more = asyncio.ensure_future(sync_to_async(more_work)())
        await asyncio.sleep(0)  # more_work is handed to the caller, busy in sync_middle
        gate.set()
        return [await nested, await more]

    outcome: list[object] = []
    caller = threading.Thread(target=lambda: outcome.append(looptoken.await_(run_outer())))
    caller.start()
    caller.join(30)
    assert not caller.is_alive(), "a wake-up was lost: the caller still waits"
    assert outcome == [["middle", "more"]]
    assert order == ["inner", "more work"]


def test_every_waker_carries_results_and_handed_back_work(
    token: looptoken.LoopToken, waker_kind: str
) -> None:
    async def many_sync_calls() -> set[int]:
        return {await sync_to_async(threading.get_ident)() for _ in range(20)}

    assert looptoken.await_(many_sync_calls()) == {threading.get_ident()}
    assert looptoken.await_(_answer(7)) == 7
    with pytest.raises(KeyError):
        looptoken.await_(_fail())


def test_a_caller_alone_gets_its_threads_descriptor_waker_others_a_lock(
    token: looptoken.LoopToken, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Alone, a caller is woken with the GIL (fewer context switches); while
    other calls wait too, the loop thread keeps the GIL to serve them on.

    Private on purpose: the choice shows in public only as speed
    (bench/bench_await.py), which a test must not time."""
    picked: list[str] = []
    real_pick = _call.pick_waker

    def recording_pick(*, alone: bool, greenlet: bool) -> _call.Waker:
        waker = real_pick(alone=alone, greenlet=greenlet)
        picked.append(type(waker).__name__)
        return waker

    monkeypatch.setattr(_call, "pick_waker", recording_pick)
    gate = threading.Event()
    other_waits = threading.Event()

    async def held_open() -> None:
        other_waits.set()
        await asyncio.get_running_loop().run_in_executor(None, gate.wait, 10)

    looptoken.await_(_answer(1))
    other = threading.Thread(target=lambda: looptoken.await_(held_open()))
    other.start()
    try:
        assert other_waits.wait(10)
        looptoken.await_(_answer(2))
    finally:
        gate.set()
        other.join(10)
    assert picked == ["DescriptorWaker", "DescriptorWaker", "LockWaker"]


def test_a_caller_alone_without_descriptors_to_spare_is_woken_by_a_lock(
    token: looptoken.LoopToken, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Private on purpose: running a process out of descriptors to show it in
    public would take every other test's descriptors with it."""

    def no_descriptors_left() -> _waiting.DescriptorWaker:
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(_waiting, "_local", threading.local())
    monkeypatch.setattr(_waiting, "DescriptorWaker", no_descriptors_left)
    assert isinstance(_call.pick_waker(alone=True, greenlet=False), _waiting.LockWaker)
    assert looptoken.await_(_answer(3)) == 3


def _open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts /proc/self/fd")
def test_a_threads_descriptor_waker_is_closed_when_the_thread_ends(
    token: looptoken.LoopToken, descriptor_waker_kind: str
) -> None:
    looptoken.await_(_answer(0))  # this thread's waker exists before the count
    before = _open_descriptors()
    for _ in range(3):
        callers = [
            threading.Thread(target=looptoken.await_, args=(_answer(1),)) for _ in range(10)
        ]
        for caller in callers:
            caller.start()
        for caller in callers:
            caller.join(30)
    gc.collect()
    assert _open_descriptors() == before


@pytest.mark.django_db
def test_orm_calls_share_the_callers_connection_and_transaction(
    token: looptoken.LoopToken, context_path: str
) -> None:
    """The test database is SQLite in memory: another thread's connection would
    not even see the table, let alone the uncommitted row."""
    before = Item.objects.count()

    async def inside() -> int:
        await Item.objects.acreate(name="from the loop")
        return await Item.objects.acount()

    with transaction.atomic():
        Item.objects.create(name="from the caller")
        assert looptoken.await_(inside()) == before + 2
        transaction.set_rollback(True)
    assert Item.objects.count() == before


def test_rejects_a_non_awaitable() -> None:
    with pytest.raises(TypeError, match=r"takes an awaitable .* not int"):
        looptoken.await_(42)  # type: ignore[arg-type]
    assert runtime().state is State.STOPPED


def test_rejects_an_uncalled_coroutine_function() -> None:
    with pytest.raises(TypeError, match=r"coroutine function _answer itself: call it first"):
        looptoken.await_(_answer)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("timeout", "error"), [(0, ValueError), (-1, ValueError), ("1", TypeError), (True, TypeError)]
)
def test_rejects_a_bad_timeout_and_closes_the_coroutine(
    timeout: Any, error: type[Exception]
) -> None:
    coro = _answer(1)
    with pytest.raises(error, match="timeout"):
        looptoken.await_(coro, timeout=timeout)
    assert coro.cr_frame is None  # closed: no "never awaited" warning


def test_refuses_to_run_on_the_loops_own_thread(token: looptoken.LoopToken) -> None:
    async def inside() -> str:
        coro = _answer(1)
        with pytest.raises(RuntimeError, match=r"shared loop's own thread.*use 'await'"):
            looptoken.await_(coro)
        assert coro.cr_frame is None
        return "no deadlock"

    assert looptoken.await_(inside()) == "no deadlock"


def test_refuses_to_run_from_a_thread_running_another_loop() -> None:
    async def main() -> None:
        coro = _answer(1)
        with pytest.raises(RuntimeError, match=r"running an event loop.*use 'await'"):
            looptoken.await_(coro)
        assert coro.cr_frame is None

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        asyncio.run(main())
        gc.collect()


def test_keyboard_interrupt_while_waiting_cancels_the_task(
    token: looptoken.LoopToken, waker_kind: str
) -> None:
    assert threading.current_thread() is threading.main_thread()
    started = threading.Event()
    cancelled = threading.Event()

    async def forever() -> None:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    def interrupt_once_started() -> None:
        # Aimed at the main thread: a process-wide kill() may land on this
        # helper thread instead, which CPython cannot turn into a wake-up.
        if started.wait(10):
            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)  # type: ignore[arg-type]

    interrupter = threading.Thread(target=interrupt_once_started)
    interrupter.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            looptoken.await_(forever())
    finally:
        interrupter.join(10)
    assert cancelled.wait(10)


def test_waiting_caller_gets_loop_stopped_error_when_the_loop_is_shut_down() -> None:
    started = threading.Event()
    outcome: list[BaseException] = []

    async def forever() -> None:
        started.set()
        await asyncio.sleep(60)

    def caller() -> None:
        try:
            looptoken.await_(forever())
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=caller)
    thread.start()
    assert started.wait(10)
    looptoken.shutdown(timeout=0.2)
    thread.join(10)
    assert not thread.is_alive()
    (error,) = outcome
    assert isinstance(error, looptoken.LoopStoppedError)
    assert isinstance(error, RuntimeError)


def test_calls_arriving_during_shutdown_get_loop_stopped_error_at_once() -> None:
    stopping = threading.Event()
    finish = threading.Event()

    async def must_finish() -> None:
        await asyncio.get_running_loop().run_in_executor(None, finish.wait, 10)

    def on_stopping(**kwargs: object) -> None:
        stopping.set()

    signals.loop_stopping.connect(on_stopping)
    runtime().hold_app_token()  # as AUTOSTART does; shutdown() releases it
    looptoken.spawn(looptoken.shutdown_waits_for(must_finish()))
    stopper = threading.Thread(target=looptoken.shutdown, kwargs={"timeout": 10})
    stopper.start()
    try:
        assert stopping.wait(10)
        coro = _answer(1)
        with pytest.raises(looptoken.LoopStoppedError, match="shutting down"):
            looptoken.await_(coro)
        assert coro.cr_frame is None
        with pytest.raises(looptoken.LoopStoppedError):
            looptoken.start_loop()
    finally:
        finish.set()
        stopper.join(10)
        signals.loop_stopping.disconnect(on_stopping)
    assert runtime().app_token_run is None
    # Once shutdown() has returned, a new loop may start again.
    assert looptoken.await_(_answer("again")) == "again"


def test_the_loop_thread_leaves_control_signals_to_the_main_thread(
    token: looptoken.LoopToken,
) -> None:
    async def blocked_here() -> set[int]:
        return set(signal.pthread_sigmask(signal.SIG_BLOCK, []))

    blocked = looptoken.await_(blocked_here())
    assert {signal.SIGINT, signal.SIGTERM} <= blocked
    assert signal.SIGINT not in signal.pthread_sigmask(signal.SIG_BLOCK, [])


def test_a_cancel_before_the_tasks_first_step_still_reaches_the_caller(
    token: looptoken.LoopToken, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Code that cancels every task can hit a call's task before it ran at all."""
    start = Call._start

    def start_then_cancel(self: Call[Any]) -> None:
        start(self)
        assert self._task is not None
        self._task.cancel()  # as a cancel-all in the same loop iteration would

    monkeypatch.setattr(Call, "_start", start_then_cancel)
    coro = _answer(1)
    with pytest.raises(asyncio.CancelledError):
        looptoken.await_(coro, timeout=10)
    assert coro.cr_frame is None  # closed, so no "never awaited" warning


def test_callers_arriving_together_share_one_loop_wake_up(token: looptoken.LoopToken) -> None:
    """Private on purpose: one wake-up for many callers shows in public only as
    speed (bench/bench_await.py), which a test must not time."""
    run = runtime().current_run
    assert run is not None
    release_loop = threading.Event()
    run.loop.call_soon_threadsafe(release_loop.wait, 30)  # hold the loop busy
    results: list[int] = []
    callers = [
        threading.Thread(target=lambda n=n: results.append(looptoken.await_(_answer(n))))
        for n in range(5)
    ]
    try:
        for caller in callers:
            caller.start()
        deadline = time.monotonic() + 30
        while len(run._inbox) < 5 and time.monotonic() < deadline:
            time.sleep(0.005)
        # All five are queued behind the one drain the first of them scheduled.
        assert len(run._inbox) == 5
        assert run._inbox_scheduled
    finally:
        release_loop.set()
        for caller in callers:
            caller.join(30)
    assert sorted(results) == [0, 1, 2, 3, 4]
    assert not run._inbox
    assert not run._inbox_scheduled


def _voluntary_switches(native_id: int) -> int:
    status = Path(f"/proc/self/task/{native_id}/status").read_text()
    return int(re.search(r"^voluntary_ctxt_switches:\s+(\d+)$", status, re.M).group(1))  # type: ignore[union-attr]


def test_a_thread_other_than_main_waits_without_waking_to_check_for_signals(
    token: looptoken.LoopToken,
) -> None:
    # Python runs signal handlers in the main thread only, so only its waits
    # come back every SIGNAL_CHECK_SECONDS; a request thread sleeps to the end
    # (a thousand of them waking to check would starve the loop thread).
    counted: list[int] = []

    def call() -> None:
        me = threading.get_native_id()
        before = _voluntary_switches(me)
        looptoken.await_(asyncio.sleep(1.0))
        counted.append(_voluntary_switches(me) - before)

    thread = threading.Thread(target=call)
    thread.start()
    thread.join()
    # Waking every 50 ms would be twenty switches; the call itself takes a few.
    assert counted[0] < 8, counted

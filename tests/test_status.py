"""status(): every field, the lag probe, slow callbacks, the watchdog, loop error logging."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import gc
import json
import logging
import os
import platform
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import django
import pytest
from django.test import Client

import django_looptoken as looptoken
from django_looptoken import _lag_probe, _monitor
from django_looptoken._runtime import runtime
from tests import loop_factories
from tests.support.processes import DEADLINE_S, wait_until
from tests.test_fork import in_child

FIELDS = {
    "pid",
    "role",
    "backend",
    "state",
    "uptime_s",
    "tokens",
    "tasks",
    "await_calls",
    "await_errors",
    "await_timeouts",
    "tasks_past_timeout",
    "lag_ms",
    "blocked_s",
    "slow_callbacks",
    "await_seconds",
    "lag_seconds",
    "loop_cpu_s",
    "history",
    "project",
    "python",
    "django",
}


@pytest.fixture(autouse=True)
def own_status_dir(looptoken_settings: Any, tmp_path: Path) -> Path:
    """Every loop of these tests keeps its status socket in the test's own dir."""
    status_dir = tmp_path / "status"
    looptoken_settings(STATUS_DIR=str(status_dir))
    return status_dir


def records(caplog: pytest.LogCaptureFixture, text: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "django_looptoken" and text in r.getMessage()]


def test_without_a_loop_it_says_stopped_with_zero_counts() -> None:
    snapshot = looptoken.status()
    assert set(snapshot) == FIELDS
    assert snapshot["state"] == "stopped"
    assert snapshot["backend"] is None
    assert snapshot["tokens"] == snapshot["tasks"] == snapshot["await_calls"] == 0
    assert snapshot["lag_ms"] == {"p50": None, "p99": None, "max": None}
    assert snapshot["await_seconds"]["count"] == snapshot["lag_seconds"]["count"] == 0
    assert snapshot["history"] == []
    assert json.loads(json.dumps(snapshot)) == snapshot


def test_a_running_loop_reports_every_field(backend: str, token: looptoken.LoopToken) -> None:
    loop = looptoken.get_loop()
    snapshot = looptoken.status()
    assert set(snapshot) == FIELDS
    assert json.loads(json.dumps(snapshot)) == snapshot
    expected_backend = "uvloop.Loop" if backend == "uvloop" else "asyncio.unix_events."
    assert snapshot["backend"].startswith(expected_backend)
    assert snapshot["backend"] == f"{type(loop).__module__}.{type(loop).__qualname__}"
    assert snapshot["state"] == "running"
    assert snapshot["pid"] == os.getpid()
    assert snapshot["tokens"] == 1
    assert snapshot["uptime_s"] >= 0
    assert snapshot["project"] == "tests.settings"
    assert snapshot["python"] == platform.python_version()
    assert snapshot["django"] == django.get_version()
    time.sleep(0.01)
    assert looptoken.status()["uptime_s"] > snapshot["uptime_s"]


def test_tokens_and_tasks_follow_what_is_held(token: looptoken.LoopToken) -> None:
    gate: asyncio.Event = looptoken.await_(_make_event())
    futures = [looptoken.spawn(gate.wait()) for _ in range(3)]
    extra = looptoken.start_loop()
    try:
        wait_until(lambda: looptoken.status()["tasks"] == 3, "three pending tasks")
        assert looptoken.status()["tokens"] == 2
    finally:
        extra.release()
        looptoken.get_loop().call_soon_threadsafe(gate.set)
    for future in futures:
        future.result(timeout=DEADLINE_S)
    wait_until(lambda: looptoken.status()["tasks"] == 0, "no pending task")
    assert looptoken.status()["tokens"] == 1


def test_await_counters(token: looptoken.LoopToken) -> None:
    async def fail() -> None:
        raise ValueError("counted")

    looptoken.await_(asyncio.sleep(0))
    with pytest.raises(ValueError, match="counted"):
        looptoken.await_(fail())
    with pytest.raises(TimeoutError):
        looptoken.await_(asyncio.sleep(10), timeout=0.01)
    snapshot = looptoken.status()
    assert (snapshot["await_calls"], snapshot["await_errors"], snapshot["await_timeouts"]) == (
        3,
        2,
        1,
    )


@pytest.mark.django_db
def test_awaits_count_async_views_served_on_the_shared_loop(
    token: looptoken.LoopToken, client: Client, settings: Any
) -> None:
    # Django runs an async view under WSGI through asgiref's async_to_sync,
    # which ASYNC_VIEWS points at the shared loop: one caller blocked, one await.
    settings.ROOT_URLCONF = "tests.urls"
    client.get("/plain-async/")  # the first may also check once that the routing works
    before = looptoken.status()["await_calls"]
    for _ in range(3):
        assert client.get("/plain-async/").json()["on_shared_loop"] is True
    looptoken.await_(asyncio.sleep(0))
    assert looptoken.status()["await_calls"] == before + 4


def test_a_process_that_forks_is_a_master_and_its_children_workers() -> None:
    def role() -> str:
        return str(looptoken.status()["role"])

    def child() -> dict[str, str]:
        before = role()
        first = in_child(role)
        second = in_child(role)  # forked by a process that has forked before
        return {"before": before, "first": first, "second": second, "after": role()}

    assert in_child(child) == {
        "before": "worker",
        "first": "worker",
        "second": "worker",
        "after": "master",
    }


def test_lag_percentiles_come_from_the_probe(token: looptoken.LoopToken) -> None:
    probe = _monitor.monitor_of(runtime().current_run).probe  # type: ignore[arg-type,union-attr]
    wait_until(lambda: probe.beats >= 2, "two probe ticks")
    lag = looptoken.status()["lag_ms"]
    assert 0 <= lag["p50"] <= lag["p99"] <= lag["max"]

    async def block() -> None:
        time.sleep(0.3)  # noqa: ASYNC251 - holds the loop: the next tick is that late

    looptoken.await_(block())
    wait_until(lambda: looptoken.status()["lag_ms"]["max"] >= 150, "the late tick")
    assert looptoken.status()["lag_ms"]["p50"] < 150  # one late tick among many


def _on_loop_thread(read: Callable[[], Any]) -> Any:
    """``read()`` run by the loop thread between two callbacks (no task made)."""
    result: concurrent.futures.Future[Any] = concurrent.futures.Future()
    looptoken.get_loop().call_soon_threadsafe(lambda: result.set_result(read()))
    return result.result(DEADLINE_S)


def test_the_probe_of_a_loop_without_tasks_ticks_slowly(token: looptoken.LoopToken) -> None:
    probe = _monitor.monitor_of(runtime().current_run).probe  # type: ignore[arg-type,union-attr]
    wait_until(lambda: probe.idle, "a tick that finds no task")
    last_tick, step = _on_loop_thread(lambda: (probe._samples[-1][0], probe.due))
    assert step - last_tick == pytest.approx(_lag_probe.IDLE_INTERVAL)


def test_a_new_task_brings_the_fast_interval_back(token: looptoken.LoopToken) -> None:
    probe = _monitor.monitor_of(runtime().current_run).probe  # type: ignore[arg-type,union-attr]
    wait_until(lambda: probe.idle, "a tick that finds no task")

    async def seen_from_the_task() -> tuple[bool, float]:
        return probe.idle, probe.due - time.monotonic()

    idle, until_due = looptoken.await_(seen_from_the_task())
    assert not idle
    assert until_due <= probe.interval


def test_a_task_factory_the_loop_had_still_makes_its_tasks(looptoken_settings: Any) -> None:
    """The monitor looks at each new task, then hands it to the factory the
    loop already had (here set by a BACKEND factory), and gives that back."""
    looptoken_settings(BACKEND="tests.loop_factories.loop_with_a_task_factory")

    async def through_the_loops_own_factory() -> bool:
        return probe.idle

    with looptoken.start_loop():
        loop = looptoken.get_loop()
        probe = _monitor.monitor_of(runtime().current_run).probe  # type: ignore[arg-type,union-attr]
        wait_until(lambda: probe.idle, "a tick that finds no task")
        before = len(loop_factories.traced)
        assert looptoken.await_(through_the_loops_own_factory()) is False  # woke the probe
        assert len(loop_factories.traced) > before  # await_'s task went through it
    assert loop.get_task_factory() is loop_factories._traced_task


_REQUEST_SCOPED: contextvars.ContextVar[object] = contextvars.ContextVar("request_scoped")


class _Marker:
    pass


def _await_with_a_marker_in_context() -> weakref.ref[_Marker]:
    marker = _Marker()
    _REQUEST_SCOPED.set(marker)
    looptoken.await_(asyncio.sleep(0))  # its task wakes the idle probe
    return weakref.ref(marker)


def test_waking_the_probe_keeps_nothing_of_the_callers_context(
    token: looptoken.LoopToken,
) -> None:
    probe = _monitor.monitor_of(runtime().current_run).probe  # type: ignore[arg-type,union-attr]
    wait_until(lambda: probe.idle, "a tick that finds no task")
    marker = contextvars.Context().run(_await_with_a_marker_in_context)
    # await_ wakes its caller from inside its task's last step, so the loop
    # thread may still be in that step (in the marked context); a second
    # call from a fresh context runs only once that step has ended.
    contextvars.Context().run(looptoken.await_, asyncio.sleep(0))
    gc.collect()
    assert marker() is None


def test_the_probe_window_keeps_one_minute() -> None:
    loop = asyncio.new_event_loop()
    try:
        probe = _lag_probe.LagProbe(loop, 0.05, 0.1)
        now = time.monotonic()
        probe._samples.extend([(now - 120, 5.0), (now - 1, 0.002), (now, 0.004)])
        assert probe.lag_ms() == {"p50": 2.0, "p99": 4.0, "max": 4.0}
    finally:
        loop.close()


def test_probe_interval_is_half_the_slow_threshold_within_bounds() -> None:
    assert _lag_probe.probe_interval(0.1) == 0.05
    assert _lag_probe.probe_interval(0.001) == _lag_probe.MIN_INTERVAL
    assert _lag_probe.probe_interval(30) == _lag_probe.MAX_INTERVAL


async def _make_event() -> asyncio.Event:
    return asyncio.Event()


async def sleepy_coroutine(seconds: float) -> None:
    """Blocks the loop thread: what the slow-callback log must name."""
    time.sleep(seconds)  # noqa: ASYNC251 - the blocking call under test


def test_a_slow_callback_is_counted_and_logged_with_its_name(
    looptoken_settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    looptoken_settings(SLOW_CALLBACK_DURATION=0.1, DEBUG=False)
    with caplog.at_level(logging.WARNING, logger="django_looptoken"), looptoken.start_loop():
        before = looptoken.status()["slow_callbacks"]
        looptoken.await_(sleepy_coroutine(0.5))
        wait_until(lambda: records(caplog, "was blocked for"), "the slow callback's log")
        assert looptoken.status()["slow_callbacks"] >= before + 1
    (record, *_) = records(caplog, "was blocked for")
    assert record.levelno == logging.WARNING
    assert "tests.test_status.sleepy_coroutine" in record.getMessage()
    blocked = float(record.getMessage().split("blocked for ")[1].split(" s")[0])
    assert 0.3 < blocked < 5


def test_a_loop_blocked_right_after_idling_counts_a_slow_callback(
    looptoken_settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The block ends long before the idle tick is due, and before the watcher
    looks again: only waking both when the task starts lets them see it."""
    looptoken_settings(SLOW_CALLBACK_DURATION=0.1, DEBUG=False)
    with caplog.at_level(logging.WARNING, logger="django_looptoken"), looptoken.start_loop():
        monitor = _monitor.monitor_of(runtime().current_run)  # type: ignore[arg-type,union-attr]
        probe, watcher = monitor.probe, monitor.watcher
        wait_until(
            lambda: probe.idle and watcher.next_look == probe.due + 0.1,
            "the probe idling, and the watcher sleeping until its idle tick",
        )
        looptoken.await_(sleepy_coroutine(0.4))
        wait_until(lambda: records(caplog, "was blocked for"), "the slow callback's log")
        assert looptoken.status()["slow_callbacks"] >= 1


def test_a_block_inside_the_probes_own_tick_is_timed_by_the_watcher(
    looptoken_settings: Any, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tick measures its own lag first: when the loop is held later in
    the tick (a thousand threads starving it of the GIL, say), the block is
    what the watcher saw, not the tick's small lag."""
    looptoken_settings(SLOW_CALLBACK_DURATION=0.1, DEBUG=False)
    real_all_tasks = asyncio.all_tasks
    held = threading.Event()

    def all_tasks_held_once(loop: asyncio.AbstractEventLoop | None = None) -> set[Any]:
        if not held.is_set():
            held.set()
            time.sleep(0.5)  # the tick asks after measuring its lag
        return real_all_tasks(loop)

    monkeypatch.setattr(asyncio, "all_tasks", all_tasks_held_once)
    with caplog.at_level(logging.WARNING, logger="django_looptoken"), looptoken.start_loop():
        wait_until(lambda: records(caplog, "was blocked for"), "the slow callback's log")
    (record, *_) = records(caplog, "was blocked for")
    blocked = float(record.getMessage().split("blocked for ")[1].split(" s")[0])
    assert 0.3 < blocked < 5


def test_a_quick_loop_counts_no_slow_callback(looptoken_settings: Any) -> None:
    # A generous threshold, so that this shared machine's hiccups do not count.
    looptoken_settings(SLOW_CALLBACK_DURATION=2.0, WATCHDOG_SECONDS=10.0)
    with looptoken.start_loop():
        for _ in range(50):
            looptoken.await_(asyncio.sleep(0.001))
        assert looptoken.status()["slow_callbacks"] == 0


def test_the_watchdog_logs_the_stack_of_a_stalled_loop_once(
    looptoken_settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    looptoken_settings(SLOW_CALLBACK_DURATION=0.1, WATCHDOG_SECONDS=0.4)
    with caplog.at_level(logging.WARNING, logger="django_looptoken"), looptoken.start_loop():
        looptoken.await_(sleepy_coroutine(1.5))  # a stall of well over 0.4 s
        wait_until(lambda: records(caplog, "was blocked for"), "the end of the stall")
    (stall,) = records(caplog, "has not run for")
    assert stall.levelno == logging.ERROR
    message = stall.getMessage()
    assert "WATCHDOG_SECONDS is 0.4" in message
    assert "in sleepy_coroutine" in message  # the stack names the culprit
    assert "time.sleep(seconds)" in message


def test_an_idle_loop_thread_runs_no_code_of_yours(token: looptoken.LoopToken) -> None:
    watcher = _monitor.monitor_of(runtime().current_run).watcher  # type: ignore[arg-type,union-attr]
    assert watcher._culprit().startswith("no code of yours: the loop thread was in ")


def test_right_after_a_burst_of_spawns_the_culprit_names_the_burst(
    token: looptoken.LoopToken,
) -> None:
    """A lag in the app's own code just after thousands of spawns arrived at
    once blames the burst, not "no code of yours" alone. Private on purpose:
    when the watcher samples the loop thread cannot be forced in public."""
    loop = looptoken.get_loop()
    busy, release = threading.Event(), threading.Event()

    def hold_the_loop() -> None:  # so that the spawns arrive together
        busy.set()
        release.wait(30)

    async def nothing() -> None:
        pass

    loop.call_soon_threadsafe(hold_the_loop)
    assert busy.wait(30)
    futures = [looptoken.spawn(nothing()) for _ in range(2_000)]
    release.set()
    concurrent.futures.wait(futures, timeout=30)
    watcher = _monitor.monitor_of(runtime().current_run).watcher  # type: ignore[arg-type,union-attr]
    culprit = watcher._culprit()
    assert culprit.startswith("no code of yours: the loop thread was in "), culprit
    assert "a burst: 2,000 calls of await_ or spawn handed in at once" in culprit


def test_the_watchdog_can_be_turned_off(
    looptoken_settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    looptoken_settings(SLOW_CALLBACK_DURATION=0.1, WATCHDOG_SECONDS=None)
    with caplog.at_level(logging.WARNING, logger="django_looptoken"), looptoken.start_loop():
        looptoken.await_(sleepy_coroutine(0.6))
        wait_until(lambda: records(caplog, "was blocked for"), "the slow callback's log")
    assert not records(caplog, "has not run for")


def test_the_watcher_thread_ends_with_the_loop() -> None:
    def watchers() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name == "looptoken-watchdog"]

    with looptoken.start_loop():
        (watcher,) = watchers()
        assert watcher.daemon
    assert not watcher.is_alive()
    assert not watchers()


def test_status_from_another_thread_while_tasks_change(token: looptoken.LoopToken) -> None:
    stop = threading.Event()
    seen: list[int] = []

    def reader() -> None:
        while not stop.is_set():
            seen.append(looptoken.status()["tasks"])

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for _ in range(200):
            looptoken.await_multiple([asyncio.sleep(0) for _ in range(5)])
    finally:
        stop.set()
        thread.join(DEADLINE_S)
    assert seen
    assert all(count >= 0 for count in seen)


def test_state_is_stopping_during_the_shutdown_sequence() -> None:
    token = looptoken.start_loop()
    release: asyncio.Event = looptoken.await_(_make_event())
    looptoken.spawn(looptoken.shutdown_waits_for(release.wait()))
    stopper = threading.Thread(target=token.release)  # returns once the loop is closed
    stopper.start()
    try:
        wait_until(lambda: looptoken.status()["state"] == "stopping", "the stopping state")
    finally:
        looptoken.get_loop().call_soon_threadsafe(release.set)
        stopper.join(DEADLINE_S)
    assert looptoken.status()["state"] == "stopped"


def test_an_unretrieved_task_exception_is_logged_on_our_logger(
    token: looptoken.LoopToken, caplog: pytest.LogCaptureFixture
) -> None:
    async def fail() -> None:
        raise KeyError("nobody looked")

    async def orphan() -> None:
        task = asyncio.get_running_loop().create_task(fail())
        await asyncio.sleep(0.01)
        assert task.done()
        del task
        gc.collect()

    with caplog.at_level(logging.ERROR, logger="django_looptoken"):
        looptoken.await_(orphan())
    (record,) = records(caplog, "Task exception was never retrieved")
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], KeyError)


def test_a_user_exception_handler_is_kept(looptoken_settings: Any) -> None:
    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        pass

    def factory() -> asyncio.AbstractEventLoop:
        loop = asyncio.SelectorEventLoop()
        loop.set_exception_handler(handler)
        return loop

    _factories["with_handler"] = factory
    looptoken_settings(BACKEND="tests.test_status.make_loop_with_handler")
    with looptoken.start_loop():
        assert looptoken.get_loop().get_exception_handler() is handler
    assert runtime().current_run is None


_factories: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {}


def make_loop_with_handler() -> asyncio.AbstractEventLoop:
    """A loop factory for BACKEND that sets its own exception handler."""
    return _factories["with_handler"]()

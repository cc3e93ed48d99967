"""Fork safety: a forked child gets its own loop and never touches the parent's.

Every test forks for real (``os.fork()``, Linux). The child does a little
work, reports a JSON dict through a pipe and always leaves with
``os._exit()``, so a failure in the child is reported to the parent, never
turned into a second pytest run. The parent waits for it with a deadline
and kills it if it is still alive.

Thread idents are not compared across the fork: glibc hands the stack of a
thread that did not survive the fork to the child's next thread, so the
child's loop thread usually gets the very ident (``pthread_t``) the parent's
loop thread has. The kernel thread id (``native_id``) and the thread object
are what tell them apart.
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any, NoReturn

import pytest

import django_looptoken as looptoken
from django_looptoken import _waiting
from django_looptoken._runtime import State, runtime
from tests.support.processes import wait_until

pytestmark = [
    pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork()"),
]

CHILD_DEADLINE_SECONDS = 20.0

Report = dict[str, Any]


# -- running a function in a forked child ---------------------------------------


def _child_main(read_fd: int, write_fd: int, body: Callable[[], Report]) -> NoReturn:
    """In the child: run ``body``, write its report to the pipe, always ``_exit``."""
    code = 3
    try:
        os.close(read_fd)
        try:
            report: Report = {"ok": True, "result": body()}
            code = 0
        except BaseException:
            report = {"ok": False, "error": traceback.format_exc()}
            code = 1
        payload = memoryview(json.dumps(report, default=repr).encode())
        while payload:
            payload = payload[os.write(write_fd, payload) :]
    except BaseException:
        code = 2
    finally:
        os._exit(code)


def _read_until_eof(fd: int, deadline: float) -> bytes:
    """Read the child's report: everything until it closes its end."""
    chunks: list[bytes] = []
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError("the child did not report within the deadline")
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _wait_for_exit(pid: int, deadline: float) -> int:
    """Reap the child (polling, bounded); return its exit code."""
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            raise AssertionError(f"the child {pid} did not exit within the deadline")
        time.sleep(0.01)


def _kill_if_alive(pid: int) -> None:
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return  # already reaped
    if not done:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


def in_child(body: Callable[[], Report]) -> Report:
    """Fork, run ``body`` in the child, return what it reported.

    Fails the test if the child raised, crashed or did not finish in time.
    """
    read_fd, write_fd = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child; coverage does not follow it
        _child_main(read_fd, write_fd, body)
    os.close(write_fd)
    reaped = False
    try:
        deadline = time.monotonic() + CHILD_DEADLINE_SECONDS
        raw = _read_until_eof(read_fd, deadline)
        code = _wait_for_exit(pid, deadline)
        reaped = True
    finally:
        os.close(read_fd)
        if not reaped:
            _kill_if_alive(pid)
    assert raw, f"the child died without a report (exit code {code})"
    report = json.loads(raw)
    assert report["ok"], f"the child failed:\n{report['error']}"
    assert code == 0
    result: Report = report["result"]
    return result


# -- helpers --------------------------------------------------------------------


async def _where(value: object) -> dict[str, Any]:
    """Where a coroutine runs, seen from inside, and ``value`` back."""
    await asyncio.sleep(0)
    loop = asyncio.get_running_loop()
    run = runtime().current_run
    return {
        "value": value,
        "loop": loop,
        "on_current_run": run is not None and run.loop is loop,
        "native_id": threading.get_native_id(),
    }


def _loop_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "looptoken-loop"]


def _in_epoll_wait(native_id: int) -> bool:
    """Whether the thread is asleep in ``epoll_wait`` (Linux's ``wchan``)."""
    with open(f"/proc/self/task/{native_id}/wchan") as wchan:
        return "epoll" in wchan.read()


def _assert_wakes_up(loop: asyncio.AbstractEventLoop, times: int = 5) -> None:
    """``call_soon_threadsafe`` reaches an idle loop: its self-pipe still works.

    Each time, the loop thread is first seen asleep in its selector, so the
    callback can only reach it through the self-pipe.
    """
    (thread,) = _loop_threads()
    assert thread.native_id is not None
    native_id = thread.native_id
    woke = threading.Event()
    for _ in range(times):
        woke.clear()
        wait_until(lambda: _in_epoll_wait(native_id), "the loop to sleep in its selector")
        loop.call_soon_threadsafe(woke.set)
        assert woke.wait(5), "an idle parent loop did not wake up for call_soon_threadsafe"


# -- tests ------------------------------------------------------------------------


def test_child_gets_a_fresh_loop_and_the_parents_loop_survives(
    token: looptoken.LoopToken,
) -> None:
    """Three forks in a row: each child runs (and closes) a loop of its own;
    afterwards the parent's loop is the same object and still fully works."""
    parent_runtime = runtime()
    parent_run = parent_runtime.current_run
    assert parent_run is not None
    parent_loop = looptoken.get_loop()
    parent_thread = parent_run.thread
    before = looptoken.await_(_where("parent"))
    assert before["loop"] is parent_loop
    parent_native_id = before["native_id"]

    def child() -> Report:
        rt = runtime()
        facts: Report = {
            "runtime_is_new": rt is not parent_runtime,
            "stopped_at_first": rt.state is State.STOPPED and rt.current_run is None,
            "no_loop_thread_inherited": not _loop_threads(),
            "parent_token_held": token.held,
        }
        with looptoken.start_loop() as mine:
            run = rt.current_run
            assert run is not None
            loop = looptoken.get_loop()
            inside = looptoken.await_(_where(41))
            facts.update(
                token_held=mine.held,
                loop_is_the_current_run=loop is run.loop,
                loop_is_new=loop is not parent_loop,
                loop_running=loop.is_running(),
                thread_is_new=run.thread is not parent_thread,
                loop_native_id_differs=inside["native_id"] != parent_native_id,
                loop_not_in_this_thread=inside["native_id"] != threading.get_native_id(),
                value=inside["value"],
                coroutine_on_own_loop=inside["loop"] is loop and inside["on_current_run"],
                coroutine_not_on_parent_loop=inside["loop"] is not parent_loop,
            )
        # The child ran the whole shutdown sequence and closed its own loop.
        facts["own_loop_closed"] = loop.is_closed() and rt.state is State.STOPPED
        return facts

    for _ in range(3):
        facts = in_child(child)
        assert facts == {
            "runtime_is_new": True,
            "stopped_at_first": True,
            "no_loop_thread_inherited": True,
            "parent_token_held": False,
            "token_held": True,
            "loop_is_the_current_run": True,
            "loop_is_new": True,
            "loop_running": True,
            "thread_is_new": True,
            "loop_native_id_differs": True,
            "loop_not_in_this_thread": True,
            "value": 41,
            "coroutine_on_own_loop": True,
            "coroutine_not_on_parent_loop": True,
            "own_loop_closed": True,
        }
        # The parent is untouched: same runtime, same loop, still answering.
        assert runtime() is parent_runtime
        assert runtime().current_run is parent_run
        assert looptoken.get_loop() is parent_loop
        assert parent_loop.is_running()
        assert token.held
        after = looptoken.await_(_where("still here"))
        assert after["value"] == "still here"
        assert after["loop"] is parent_loop
        assert after["native_id"] == parent_native_id
        _assert_wakes_up(parent_loop)


def test_child_of_an_autostarted_parent_runs_its_own_loop_at_once() -> None:
    """With the app token held (AUTOSTART), the child's loop is already
    running when fork() returns, in a thread of the child's own."""
    runtime().hold_app_token()
    try:
        parent_runtime = runtime()
        parent_run = parent_runtime.current_run
        assert parent_run is not None
        parent_loop = parent_run.loop
        parent_thread = parent_run.thread
        parent_native_id = looptoken.await_(_where(None))["native_id"]

        def child() -> Report:
            # Read before anything else can have started a loop.
            rt = runtime()
            state = rt.state
            run = rt.current_run
            app_run = rt.app_token_run
            assert run is not None
            inside = looptoken.await_(_where("child"))
            return {
                "runtime_is_new": rt is not parent_runtime,
                "state": state.value,
                "app_token_held": app_run is not None and app_run is run,
                "loop_is_new": run.loop is not parent_loop,
                "loop_running": run.loop.is_running(),
                "thread_is_new": run.thread is not parent_thread,
                "thread_alive": run.thread is not None and run.thread.is_alive(),
                "loop_native_id_differs": inside["native_id"] != parent_native_id,
                "coroutine_on_own_loop": inside["loop"] is run.loop,
                "value": inside["value"],
            }

        assert in_child(child) == {
            "runtime_is_new": True,
            "state": "running",
            "app_token_held": True,
            "loop_is_new": True,
            "loop_running": True,
            "thread_is_new": True,
            "thread_alive": True,
            "loop_native_id_differs": True,
            "coroutine_on_own_loop": True,
            "value": "child",
        }
        assert runtime().current_run is parent_run
        assert runtime().app_token_run is parent_run
        assert looptoken.await_(_where(1))["loop"] is parent_loop
        _assert_wakes_up(parent_loop)
    finally:
        looptoken.shutdown(timeout=5)
    assert runtime().state is State.STOPPED
    assert parent_loop.is_closed()


def test_work_in_flight_in_the_parent_stays_in_the_parent(token: looptoken.LoopToken) -> None:
    """Fork while a spawned task and an await_ from another thread are pending:
    the child's loop has none of them, and both finish in the parent."""
    loop = looptoken.get_loop()
    gate = asyncio.Event()
    spawn_started = threading.Event()
    await_started = threading.Event()

    async def background() -> str:
        spawn_started.set()
        await gate.wait()
        return "spawned done"

    async def waiting() -> str:
        await_started.set()
        await gate.wait()
        return "await_ done"

    awaited: list[object] = []

    def caller() -> None:
        try:
            awaited.append(looptoken.await_(waiting(), timeout=30))
        except BaseException as exc:
            awaited.append(exc)

    spawned = looptoken.spawn(background())
    thread = threading.Thread(target=caller, name="fork-test-caller")
    thread.start()
    try:
        assert spawn_started.wait(10)
        assert await_started.wait(10)
        parent_tasks = looptoken.await_(_count_tasks())
        assert parent_tasks >= 3  # the spawn, the await_, this count

        def child() -> Report:
            with looptoken.start_loop():
                tasks = looptoken.await_(_count_tasks())
                child_loop = looptoken.get_loop()
                sees_parent_thread = any(t is thread for t in threading.enumerate())
            return {
                "tasks": tasks,
                "loop_is_new": child_loop is not loop,
                "sees_parent_thread": sees_parent_thread,
            }

        assert in_child(child) == {"tasks": 1, "loop_is_new": True, "sees_parent_thread": False}
        assert not spawned.done()
        assert thread.is_alive()
        loop.call_soon_threadsafe(gate.set)
        assert spawned.result(timeout=10) == "spawned done"
    finally:
        loop.call_soon_threadsafe(gate.set)
        thread.join(10)
    assert not thread.is_alive()
    assert awaited == ["await_ done"]
    assert looptoken.await_(_count_tasks()) == 1


async def _count_tasks() -> int:
    return len(asyncio.all_tasks())


def test_a_parent_token_is_a_no_op_in_the_child(token: looptoken.LoopToken) -> None:
    """The parent's token is not held in the child, releasing it there neither
    raises nor starts or stops anything, and the parent's token stays held."""
    parent_run = runtime().current_run

    def child() -> Report:
        held = token.held
        token.release()
        looptoken.release_loop(token)
        rt = runtime()
        return {
            "held": held,
            "held_after_release": token.held,
            "state": rt.state.value,
            "no_current_run": rt.current_run is None,
            "no_loop_thread": not _loop_threads(),
        }

    assert in_child(child) == {
        "held": False,
        "held_after_release": False,
        "state": "stopped",
        "no_current_run": True,
        "no_loop_thread": True,
    }
    assert token.held
    assert runtime().current_run is parent_run
    assert parent_run is not None
    assert parent_run.tokens == 1
    assert looptoken.await_(_where("ok"))["value"] == "ok"


def test_the_parents_unstarted_loop_is_not_the_childs() -> None:
    """A loop get_loop() built in the parent but never started is not reused
    by the child, which builds and runs one of its own."""
    upcoming = looptoken.get_loop()
    assert not upcoming.is_running()

    def child() -> Report:
        loop = looptoken.get_loop()
        with looptoken.start_loop():
            inside = looptoken.await_(_where(7))
        return {
            "loop_is_new": loop is not upcoming,
            "ran_on_it": inside["loop"] is loop,
            "value": inside["value"],
        }

    assert in_child(child) == {"loop_is_new": True, "ran_on_it": True, "value": 7}
    assert looptoken.get_loop() is upcoming
    assert not upcoming.is_closed()
    with looptoken.start_loop():
        assert looptoken.await_(_where(8))["loop"] is upcoming


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def test_the_child_wakes_on_its_own_descriptors(token: looptoken.LoopToken) -> None:
    """A caller alone is woken through its thread's descriptor, which fork
    copies. Shared, the parent's and the child's thread could each take the
    other's wake-ups and wait for ever; the child's thread gets its own."""
    looptoken.await_(_where(0))
    parent_waker = _waiting.thread_waker()
    parent_descriptors = parent_waker.descriptors()

    def child() -> Report:
        # Checked first, before a new waker may reuse the numbers.
        inherited_open = [fd for fd in parent_descriptors if _is_open(fd)]
        with looptoken.start_loop():
            values = [looptoken.await_(_where(n))["value"] for n in range(50)]
        return {
            "inherited_open": inherited_open,
            "own_waker": _waiting.thread_waker() is not parent_waker,
            "values_ok": values == list(range(50)),
        }

    assert in_child(child) == {"inherited_open": [], "own_waker": True, "values_ok": True}
    assert _waiting.thread_waker() is parent_waker
    assert looptoken.await_(_where(1))["value"] == 1


async def _loop_thread_native_id() -> int:
    await asyncio.sleep(0)
    return threading.get_native_id()


def _report_from_multiprocessing_child(queue: Any) -> None:
    # Module level: multiprocessing with fork runs it in the child.
    run = runtime().current_run
    queue.put((os.getpid(), looptoken.await_(_loop_thread_native_id()), run is not None))


def test_multiprocessing_fork_children_run_their_own_loops() -> None:
    import multiprocessing

    runtime().hold_app_token()
    try:
        parent_native_id = looptoken.await_(_loop_thread_native_id())
        context = multiprocessing.get_context("fork")
        queue = context.Queue()
        children = [
            context.Process(target=_report_from_multiprocessing_child, args=(queue,))
            for _ in range(2)
        ]
        for child in children:
            child.start()
        try:
            reports = [queue.get(timeout=CHILD_DEADLINE_SECONDS) for _ in children]
        finally:
            for child in children:
                child.join(CHILD_DEADLINE_SECONDS)
                if child.is_alive():
                    child.kill()
                    child.join(5)
        assert [child.exitcode for child in children] == [0, 0]
        assert {pid for pid, _, _ in reports} == {child.pid for child in children}
        loop_threads = {native_id for _, native_id, _ in reports}
        assert len(loop_threads) == 2  # one loop thread per child
        assert parent_native_id not in loop_threads
        assert all(started_at_fork for _, _, started_at_fork in reports)
        # The parent's loop is untouched and still serves.
        assert looptoken.await_(_loop_thread_native_id()) == parent_native_id
        queue.close()
        queue.join_thread()
    finally:
        looptoken.shutdown(timeout=5)

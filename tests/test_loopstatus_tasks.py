"""``loopstatus --tasks``: another process's pending tasks, oldest first, with
where each was made and the line it waits on; answered while its loop is
blocked; ``--cancel`` for one of them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.status_worker import ROOT, Worker, manage, running_worker, worker_env
from tests.support.processes import stop_process, wait_until

WORKER_FILE = str(ROOT / "tests" / "status_worker.py")

pytestmark = pytest.mark.one_backend


def tasks_of(status_dir: Path, worker: Worker) -> dict[str, Any]:
    result = manage(status_dir, "loopstatus", "--tasks", "--json", "--pid", str(worker.pid))
    assert result.returncode == 0, result.stderr
    (answer,) = json.loads(result.stdout)["processes"]
    assert answer["pid"] == worker.pid
    return answer  # type: ignore[no-any-return]


def line_of(text: str) -> int:
    """The line of ``tests/status_worker.py`` that holds ``text``."""
    lines = Path(WORKER_FILE).read_text().splitlines()
    (number,) = [n for n, line in enumerate(lines, 1) if text in line]
    return number


def test_a_workers_tasks_oldest_first_with_their_await_chains(status_dir: Path) -> None:
    with running_worker(status_dir) as worker:
        worker.tell("hold 1", "held")
        worker.tell("nest", "nested")
        answer = tasks_of(status_dir, worker)
        text = manage(status_dir, "loopstatus", "--tasks").stdout
        worker.tell("release", "released")
    assert answer["blocked_s"] == 0
    assert answer["loop_stack"] is None
    waiting, nested = answer["tasks"]  # oldest first: the held one was spawned first
    assert answer["total"] == 2
    assert waiting["age_s"] >= nested["age_s"]
    assert waiting["coroutine"] == "serve.<locals>.wait"
    assert nested["coroutine"] == "serve.<locals>.outer"
    spawned_at = line_of("looptoken.spawn(outer(gate))")
    assert nested["created_at"] == f"{WORKER_FILE}:{spawned_at} in serve"
    # Suspended two coroutines deep, then in asyncio's Event.wait on a future.
    assert nested["await_chain"][:2] == [
        f"serve.<locals>.outer ({WORKER_FILE}:{line_of('await middle(gate)')})",
        f"serve.<locals>.middle ({WORKER_FILE}:{line_of('# two coroutines deep')})",
    ]
    assert nested["await_chain"][2].startswith("Event.wait (")
    assert nested["awaiting"] == "Future"
    assert (nested["protected"], nested["running"], nested["long"]) == (False, False, False)
    assert waiting["id"] < nested["id"]
    # The table says the same for a person at a shell.
    assert f"Process {worker.pid} (" in text
    assert f"#{nested['id']} serve.<locals>.outer, age " in text
    assert f"made at {WORKER_FILE}:{spawned_at} in serve" in text
    assert "waiting in serve.<locals>.outer (" in text
    assert "-> serve.<locals>.middle (" in text
    assert "-> awaits a Future" in text


def test_a_worker_whose_loop_is_blocked_by_time_sleep_still_lists_its_tasks(
    status_dir: Path,
) -> None:
    with running_worker(status_dir) as worker:
        worker.tell("hold 1", "held")
        worker.tell("block", "blocked")
        try:
            answer: dict[str, Any] = {}

            def says_blocked() -> bool:
                answer.update(tasks_of(status_dir, worker))
                return bool(answer["blocked_s"])

            wait_until(says_blocked, "the listing to say the loop is blocked")
            text = manage(status_dir, "loopstatus", "--tasks", "--pid", str(worker.pid)).stdout
        finally:
            worker.tell("unblock", "unblocked")
        worker.tell("release", "released")
    stack = "\n".join(answer["loop_stack"])
    assert "in hold_the_loop" in stack
    assert "time.sleep(0.01)" in stack
    (holding,) = [task for task in answer["tasks"] if task["running"]]
    assert holding["coroutine"] == "serve.<locals>.hold_the_loop"
    assert any(task["coroutine"] == "serve.<locals>.wait" for task in answer["tasks"])
    assert "The loop has been blocked for " in text
    assert "in hold_the_loop" in text
    assert "serve.<locals>.hold_the_loop, age " in text
    assert "running now" in text


def test_cancel_a_task_by_its_id(status_dir: Path) -> None:
    with running_worker(status_dir) as worker:
        worker.tell("hold 2", "held")
        first, second = tasks_of(status_dir, worker)["tasks"]
        pid = str(worker.pid)
        result = manage(status_dir, "loopstatus", "--pid", pid, "--cancel", str(first["id"]))
        assert result.returncode == 0, result.stderr
        assert f"Asked process {pid} to cancel task #{first['id']}" in result.stdout
        wait_until(
            lambda: [t["id"] for t in tasks_of(status_dir, worker)["tasks"]] == [second["id"]],
            "the cancelled task to end",
        )
        again = manage(status_dir, "loopstatus", "--pid", pid, "--cancel", str(first["id"]))
        worker.tell("release", "released")
    assert again.returncode == 1
    assert f"no pending task {first['id']} in process {pid}" in again.stderr


def test_a_pid_that_is_not_one_of_the_projects_processes(status_dir: Path) -> None:
    with running_worker(status_dir):
        result = manage(status_dir, "loopstatus", "--tasks", "--pid", str(os.getpid()))
    assert result.returncode == 1
    assert f"Process {os.getpid()} is not a live process of project tests.settings" in (
        result.stderr
    )


def test_cancel_needs_a_pid(status_dir: Path) -> None:
    result = manage(status_dir, "loopstatus", "--cancel", "3")
    assert result.returncode == 1
    assert "--cancel needs --pid" in result.stderr


def test_under_eventlet_a_loop_held_by_a_patched_call_is_listed_blocked_and_named(
    status_dir: Path, tmp_path: Path
) -> None:
    # eventlet's time.sleep yields to the hub, so the status thread (a green
    # thread there) answers while the loop is held; the loop's frame is its
    # green thread's, which sys._current_frames() does not show.
    stop_file, stderr = tmp_path / "stop", tmp_path / "stderr"
    with stderr.open("wb") as errors:  # the child keeps its own copy
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.eventlet_worker", str(stop_file)],
            cwd=ROOT,
            env={
                **worker_env(status_dir, LOOPTOKEN_TEST_AUTOSTART="1"),
                "PYTHONWARNINGS": "ignore",
            },
            stdout=subprocess.PIPE,
            stderr=errors,
        )
    try:
        worker = Worker(process)
        answer: dict[str, Any] = {}

        def says_blocked() -> bool:
            answer.update(tasks_of(status_dir, worker))
            return bool(answer["blocked_s"])

        wait_until(says_blocked, "the listing to say the loop is blocked")
        stack = "\n".join(answer["loop_stack"])
        assert "in sleeps_in_a_coroutine" in stack, stack
        assert "time.sleep(0.01)" in stack
        (holding,) = [task for task in answer["tasks"] if task["running"]]
        assert holding["coroutine"] == "sleeps_in_a_coroutine"
        stop_file.touch()  # the loop runs again: the watchdog says what held it
        culprit = "by __main__.sleeps_in_a_coroutine ("
        wait_until(lambda: culprit in stderr.read_text(), "the watchdog to name the coroutine")
    finally:
        stop_file.touch()
        code = stop_process(process)
        assert process.stdout is not None
        process.stdout.close()
    assert code == 128 + signal.SIGTERM  # SIGTERM's default, made SystemExit by the app

"""Task workers: Celery's prefork pool, a real worker on a real Redis.

billiard ends each pool process with ``os._exit()``: the app drains the
child's loop just before (Celery's ``worker_process_shutdown``), so the work
tasks leave in ``shutdown_waits_for`` finishes whether the worker stops or
recycles the child.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.test_lifecycle_gunicorn import assert_quiet
from tests.support.processes import ROOT, Server, stop_process, wait_until
from tests.support.services import redis_server

pytestmark = pytest.mark.one_backend  # the worker's loop is the settings' backend


@pytest.fixture(scope="module")
def broker() -> Iterator[str]:
    with redis_server() as url:
        yield url


@pytest.fixture
def markers(tmp_path: Path) -> Path:
    path = tmp_path / "markers"
    path.mkdir()
    return path


@pytest.fixture
def celery_app(broker: str) -> Iterator[object]:
    from tests.integration.celery_app import app

    app.conf.broker_url = broker
    yield app
    app.close()


@pytest.fixture
def celery_worker(broker: str, markers: Path, tmp_path: Path) -> Iterator[Callable[..., Server]]:
    started: list[subprocess.Popen[bytes]] = []

    def start(*options: str) -> Server:
        stderr_path = tmp_path / f"celery-{len(started)}.err"
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.integration.lifecycle_settings",
            "LOOPTOKEN_TEST_BROKER": broker,
            "LOOPTOKEN_TEST_MARKERS": str(markers),
            "PYTHONDEVMODE": "1",
        }
        command = [
            *(sys.executable, "-m", "celery", "-A", "tests.integration.celery_app", "worker"),
            *("--loglevel", "INFO", "--without-mingle", "--without-gossip"),
            *("--without-heartbeat", "-n", f"w{len(started)}@127.0.0.1", *options),
        ]
        with stderr_path.open("wb") as stderr:
            process = subprocess.Popen(
                command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=stderr
            )
        started.append(process)
        worker = Server(process, broker, stderr_path)
        wait_until(lambda: " ready." in worker.stderr() or process.poll() is not None, "ready")
        assert process.poll() is None, worker.stderr()
        return worker

    try:
        yield start
    finally:
        for process in started:
            if process.poll() is None:
                stop_process(process, signal.SIGKILL)


def _children_that_drained(worker: Server) -> set[int]:
    return {int(pid) for pid in re.findall(r"Shared loop stopped \(pid (\d+)\)", worker.stderr())}


def _send(celery_app: object, names: list[str], seconds: float = 1.0) -> None:
    for name in names:
        celery_app.send_task(  # type: ignore[attr-defined]
            "tests.integration.celery_app.leave_protected_work", (name, seconds)
        )


def test_celery_prefork_children_drain_protected_work_on_sigterm(
    celery_app: object, celery_worker: Callable[..., Server], markers: Path
) -> None:
    worker = celery_worker("-P", "prefork", "-c", "2")
    names = ["a", "b", "c", "d"]
    _send(celery_app, names)
    wait_until(lambda: all((markers / f"started-{n}").exists() for n in names), "4 tasks")
    assert stop_process(worker.process, signal.SIGTERM) == 0
    assert all((markers / f"done-{n}").exists() for n in names)  # 4 of 4 finished
    children = {int((markers / f"started-{n}").read_text()) for n in names}
    assert worker.process.pid not in children
    assert children <= _children_that_drained(worker)
    assert_quiet(worker)


def test_celery_control_shutdown_drains_the_children(
    celery_app: object, celery_worker: Callable[..., Server], markers: Path
) -> None:
    worker = celery_worker("-P", "prefork", "-c", "2")
    _send(celery_app, ["a", "b"], seconds=3.0)  # outlasts the worker's own stopping
    wait_until(lambda: (markers / "started-b").exists(), "the tasks to start")
    celery_app.control.shutdown()  # type: ignore[attr-defined]
    assert worker.process.wait(60) == 0
    assert all((markers / f"done-{n}").exists() for n in "ab")
    children = {int((markers / f"started-{n}").read_text()) for n in "ab"}
    assert children <= _children_that_drained(worker)
    assert_quiet(worker)


def test_a_recycled_celery_child_drains_before_it_is_replaced(
    celery_app: object, celery_worker: Callable[..., Server], markers: Path
) -> None:
    worker = celery_worker("-P", "prefork", "-c", "1", "--max-tasks-per-child", "1")
    _send(celery_app, ["a", "b"])
    # Each child runs one task and is replaced: its protected work finishes
    # first, while the worker goes on.
    wait_until(lambda: (markers / "done-b").exists(), "the second child's work")
    assert (markers / "done-a").exists()
    assert worker.process.poll() is None
    first, second = (int((markers / f"started-{n}").read_text()) for n in "ab")
    assert first != second
    assert first in _children_that_drained(worker)
    assert stop_process(worker.process, signal.SIGTERM) == 0
    assert_quiet(worker)

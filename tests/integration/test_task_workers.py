"""Task workers, real ones on a real Redis: Celery's prefork pool, RQ's
forking and simple workers, and django-tasks.

billiard and RQ end each pool process or work horse with ``os._exit()``: the
app drains its loop just before (Celery's ``worker_process_shutdown``, the
``django_looptoken.rq.Worker`` class), so the work jobs leave in
``shutdown_waits_for`` finishes. Async jobs under ``@runs_async`` run on the
worker's shared loop, so their client is pooled across jobs (counted at a
real aiohttp upstream: one connection).
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
from django.test import override_settings
from redis import Redis
from rq import Queue

import django_looptoken as looptoken
from tests.integration import task_jobs
from tests.support.processes import (
    DEADLINE_S,
    ROOT,
    Server,
    assert_quiet,
    stop_process,
    wait_for_exit,
    wait_until,
)
from tests.support.services import redis_server, upstream


@pytest.fixture(scope="module")
def broker() -> Iterator[str]:
    with redis_server() as url:
        yield url


@pytest.fixture
def celery_app(broker: str) -> Iterator[object]:
    from tests.integration.celery_app import app

    app.conf.broker_url = app.conf.result_backend = broker
    app.control.purge()  # nothing a test before left for this test's worker
    yield app
    app.close()


def _start_worker(
    command: list[str], stderr_path: Path, broker: str, markers: Path
) -> subprocess.Popen[bytes]:
    """Start a task worker on ``broker`` with the lifecycle settings, its
    stderr in ``stderr_path``; the caller stops it by its pid."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.integration.lifecycle_settings",
        "LOOPTOKEN_TEST_BROKER": broker,
        "LOOPTOKEN_TEST_MARKERS": str(markers),
        "PYTHONDEVMODE": "1",
    }
    with stderr_path.open("wb") as stderr:
        return subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=stderr
        )


@pytest.fixture
def celery_worker(broker: str, markers: Path, tmp_path: Path) -> Iterator[Callable[..., Server]]:
    started: list[subprocess.Popen[bytes]] = []

    def start(*options: str) -> Server:
        stderr_path = tmp_path / f"celery-{len(started)}.err"
        command = [
            *(sys.executable, "-m", "celery", "-A", "tests.integration.celery_app", "worker"),
            *("--loglevel", "INFO", "--without-mingle", "--without-gossip"),
            *("--without-heartbeat", "-n", f"w{len(started)}@127.0.0.1", *options),
        ]
        process = _start_worker(command, stderr_path, broker, markers)
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


def _pids_that_drained(worker: Server) -> set[int]:
    return {int(pid) for pid in re.findall(r"Shared loop stopped \(pid (\d+)\)", worker.stderr())}


def _send(celery_app: object, names: list[str], seconds: float = 1.0) -> None:
    for name in names:
        celery_app.send_task(  # type: ignore[attr-defined]
            "leave_protected_work", (name, seconds)
        )


@pytest.mark.parametrize(
    ("pool", "in_children"),
    [
        (("-P", "prefork", "-c", "2"), True),
        (("-P", "gevent", "-c", "10"), False),
        (("-P", "eventlet", "-c", "10"), False),
    ],
    ids=["prefork", "gevent", "eventlet"],
)
def test_celery_pools_drain_protected_work_on_sigterm(
    celery_app: object,
    celery_worker: Callable[..., Server],
    markers: Path,
    pool: tuple[str, ...],
    in_children: bool,
) -> None:
    # prefork runs the tasks in children that billiard ends with os._exit();
    # gevent and eventlet in the worker's own greenlets, drained at its exit.
    worker = celery_worker(*pool)
    names = ["a", "b", "c", "d"]
    _send(celery_app, names)
    wait_until(lambda: all((markers / f"started-{n}").exists() for n in names), "4 tasks")
    assert stop_process(worker.process, stderr_path=worker.stderr_path) == 0
    assert all((markers / f"done-{n}").exists() for n in names)  # 4 of 4 finished
    runners = {int((markers / f"started-{n}").read_text()) for n in names}
    assert (worker.process.pid not in runners) is in_children
    assert runners <= _pids_that_drained(worker)
    assert_quiet(worker.stderr())


def test_celery_control_shutdown_drains_the_children(
    celery_app: object, celery_worker: Callable[..., Server], markers: Path
) -> None:
    worker = celery_worker("-P", "prefork", "-c", "2")
    _send(celery_app, ["a", "b"], seconds=3.0)  # outlasts the worker's own stopping
    wait_until(lambda: (markers / "started-b").exists(), "the tasks to start")
    celery_app.control.shutdown()  # type: ignore[attr-defined]
    assert wait_for_exit(worker.process, DEADLINE_S, worker.stderr_path) == 0
    assert all((markers / f"done-{n}").exists() for n in "ab")
    children = {int((markers / f"started-{n}").read_text()) for n in "ab"}
    assert children <= _pids_that_drained(worker)
    assert_quiet(worker.stderr())


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
    assert first in _pids_that_drained(worker)
    assert stop_process(worker.process, stderr_path=worker.stderr_path) == 0
    assert_quiet(worker.stderr())


@pytest.fixture(scope="module")
def upstream_url() -> Iterator[str]:
    with upstream() as url:
        yield url


def test_async_celery_tasks_share_one_pooled_client(
    celery_app: object, celery_worker: Callable[..., Server], upstream_url: str
) -> None:
    worker = celery_worker("-P", "prefork", "-c", "1")
    peers = [
        celery_app.send_task("fetch_peer", (upstream_url,)).get(timeout=30)  # type: ignore[attr-defined]
        for _ in range(3)
    ]
    assert len(set(peers)) == 1, peers  # one connection for the three tasks
    assert stop_process(worker.process, stderr_path=worker.stderr_path) == 0
    assert_quiet(worker.stderr())


@pytest.mark.parametrize("pool", ["gevent", "eventlet"])
def test_a_celery_greenlet_pool_runs_async_tasks_on_one_shared_loop(
    celery_app: object, celery_worker: Callable[..., Server], upstream_url: str, pool: str
) -> None:
    # Celery monkey-patches a gevent or eventlet pool's worker before it
    # loads Django; under gevent the loop runs in a native thread and the
    # tasks' greenlets wait on the hub, under eventlet it is a green thread.
    worker = celery_worker("-P", pool, "-c", "10")
    send = celery_app.send_task  # type: ignore[attr-defined]
    # One after another: tasks at once would each need a connection.
    peers = [send("fetch_peer", (upstream_url,)).get(timeout=30) for _ in range(3)]
    assert len(set(peers)) == 1, peers  # one pooled connection for the three tasks
    assert [send("own_pid").get(timeout=30) for _ in range(2)] == [worker.process.pid] * 2
    assert stop_process(worker.process, stderr_path=worker.stderr_path) == 0
    assert_quiet(worker.stderr())


# -- RQ ---------------------------------------------------------------------------


def _run_rq_burst(
    broker: str, markers: Path, tmp_path: Path, worker_class: str
) -> tuple[int, str]:
    """Run an RQ worker in burst mode (it exits once the queue is empty)
    with ``worker_class``; its exit status and stderr."""
    stderr_path = tmp_path / "rq.err"
    command = [
        *(sys.executable, "-m", "tests.integration.rq_worker", "worker", "--burst"),
        *("--url", broker, "--worker-class", worker_class),
    ]
    process = _start_worker(command, stderr_path, broker, markers)
    code = wait_for_exit(process, DEADLINE_S, stderr_path)
    return code, stderr_path.read_text()


@pytest.fixture
def rq_queue(broker: str) -> Iterator[Queue]:
    connection = Redis.from_url(broker)
    queue = Queue(connection=connection)
    queue.empty()
    try:
        yield queue
    finally:
        connection.close()


def test_the_rq_worker_class_drains_each_work_horse(
    rq_queue: Queue, broker: str, markers: Path, tmp_path: Path
) -> None:
    for name in "ab":
        rq_queue.enqueue(task_jobs.leave_protected_work, name)
    code, stderr = _run_rq_burst(broker, markers, tmp_path, "django_looptoken.rq.Worker")
    assert code == 0, stderr
    assert all((markers / f"done-{n}").exists() for n in "ab")
    horses = {int((markers / f"started-{n}").read_text()) for n in "ab"}
    assert len(horses) == 2  # a work horse per job, each drained before its os._exit
    drained = {int(pid) for pid in re.findall(r"Shared loop stopped \(pid (\d+)\)", stderr)}
    assert horses <= drained
    assert "Traceback" not in stderr, stderr


def test_rqs_simple_worker_pools_async_jobs_and_drains_at_exit(
    rq_queue: Queue, broker: str, markers: Path, tmp_path: Path, upstream_url: str
) -> None:
    jobs = [rq_queue.enqueue(task_jobs.fetch_peer, upstream_url) for _ in range(3)]
    rq_queue.enqueue(task_jobs.leave_protected_work, "s")
    code, stderr = _run_rq_burst(broker, markers, tmp_path, "rq.SimpleWorker")
    assert code == 0, stderr
    peers = [job.latest_result().return_value for job in jobs]
    assert len(set(peers)) == 1, peers  # jobs in the worker's process: one connection
    assert (markers / "done-s").exists()
    assert "Traceback" not in stderr, stderr


# -- django-tasks -----------------------------------------------------------------


def test_async_django_tasks_run_on_the_shared_loop_with_one_pooled_client(
    upstream_url: str,
) -> None:
    from tests.integration.django_tasks_jobs import fetch_peer

    immediate = {"default": {"BACKEND": "django_tasks.backends.immediate.ImmediateBackend"}}
    with override_settings(TASKS=immediate), looptoken.start_loop():
        peers = [fetch_peer.enqueue(upstream_url).return_value for _ in range(3)]
    assert len(set(peers)) == 1, peers

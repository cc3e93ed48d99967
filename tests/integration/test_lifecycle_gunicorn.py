"""Process lifecycle under a real gunicorn: drain, cut, preload, a second signal."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.support.processes import Server, assert_quiet, stop, wait_until

LIFECYCLE = "tests.integration.lifecycle_settings"


def _settings(markers: Path, shutdown_timeout: float) -> dict[str, object]:
    return {
        "settings": LIFECYCLE,
        "extra_env": {
            "LOOPTOKEN_TEST_MARKERS": str(markers),
            "LOOPTOKEN_TEST_SHUTDOWN_TIMEOUT": str(shutdown_timeout),
        },
    }


def stop_timed(server: Server, sig: int = signal.SIGTERM) -> tuple[int, float]:
    """Signal the server by its pid; its exit status and seconds it took to exit."""
    began = time.monotonic()
    code = stop(server, sig, timeout=60)
    return code, time.monotonic() - began


@pytest.mark.parametrize(
    "workers",
    [
        ("--worker-class", "gthread", "--workers", "2", "--threads", "25"),
        ("--worker-class", "gevent", "--workers", "1", "--worker-connections", "100"),
    ],
    ids=["gthread", "gevent"],
)
def test_sigterm_drains_requests_and_protected_work(
    gunicorn: Callable[..., Server], markers: Path, workers: tuple[str, ...]
) -> None:
    shutdown_timeout = 5.0
    server = gunicorn(*workers, **_settings(markers, shutdown_timeout))
    limits = httpx.Limits(max_connections=40)
    with (
        httpx.Client(base_url=server.url, timeout=30, limits=limits) as client,
        ThreadPoolExecutor(40) as pool,
    ):
        answers = [pool.submit(client.get, f"lifecycle/drain/{n}/") for n in range(40)]
        wait_until(lambda: len(list(markers.glob("started-*"))) == 40, "40 requests to start")
        began = time.monotonic()
        os.kill(server.process.pid, signal.SIGTERM)
        responses = [answer.result() for answer in answers]
    assert [response.status_code for response in responses] == [200] * 40
    assert stop(server, timeout=60) == 0
    # Every worker (the master waits for them) exited within SHUTDOWN_TIMEOUT + 2 s.
    assert time.monotonic() - began < shutdown_timeout + 2
    assert sorted(p.name for p in markers.glob("done-*")) == sorted(f"done-{n}" for n in range(40))
    worker_pids = {response.json()["pid"] for response in responses}
    for pid in worker_pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert_quiet(server.stderr())


def test_unprotected_work_is_cancelled_and_exit_is_prompt(
    gunicorn: Callable[..., Server], markers: Path
) -> None:
    server = gunicorn("--workers", "1", **_settings(markers, shutdown_timeout=20))
    pid = httpx.get(server.url + "lifecycle/unprotected/", timeout=10).json()["pid"]
    code, took = stop_timed(server)
    assert code == 0
    assert (markers / f"cancelled-{pid}").exists()  # the task saw its cancellation
    assert took < 10  # nothing protected, so no waiting for SHUTDOWN_TIMEOUT (20 s)
    assert_quiet(server.stderr())


def test_protected_work_past_shutdown_timeout_is_cut_and_logged(
    gunicorn: Callable[..., Server], markers: Path
) -> None:
    shutdown_timeout = 2.0
    server = gunicorn("--workers", "1", **_settings(markers, shutdown_timeout))
    httpx.get(server.url + "lifecycle/stuck/", timeout=10).raise_for_status()
    code, took = stop_timed(server)
    assert code == 0
    assert shutdown_timeout - 0.2 < took < shutdown_timeout + 2  # it waited, then cut
    assert "Shutdown cut" in server.stderr()
    assert "sleep_for_an_hour" in server.stderr()  # the stack it was stuck in
    assert_quiet(server.stderr())


@pytest.mark.parametrize("preload", [(), ("--preload",)], ids=["", "preload"])
def test_the_drain_ends_before_gunicorns_graceful_timeout_kills_the_worker(
    gunicorn: Callable[..., Server], markers: Path, preload: tuple[str, ...]
) -> None:
    # SHUTDOWN_TIMEOUT (30 s) would outlast gunicorn's graceful timeout (6 s):
    # the drain gets what is left of it, cuts the stuck work and logs it,
    # and the worker exits before gunicorn's SIGKILL.
    server = gunicorn(
        "--workers", "1", "--graceful-timeout", "6", *preload, **_settings(markers, 30.0)
    )
    httpx.get(server.url + "lifecycle/stuck/", timeout=10).raise_for_status()
    code, took = stop_timed(server)
    stderr = server.stderr()
    assert code == 0
    assert took < 6, stderr
    assert "gunicorn's graceful_timeout (6 s) ends" in stderr
    assert "Shutdown cut" in stderr
    assert "sleep_for_an_hour" in stderr
    assert "SIGKILL" not in stderr
    assert_quiet(server.stderr())


def test_a_task_that_swallows_cancellation_does_not_hang_exit(
    gunicorn: Callable[..., Server], markers: Path
) -> None:
    shutdown_timeout = 2.0
    server = gunicorn("--workers", "1", **_settings(markers, shutdown_timeout))
    pid = httpx.get(server.url + "lifecycle/stubborn/", timeout=10).json()["pid"]
    code, took = stop_timed(server)
    assert code == 0
    assert took < shutdown_timeout + 2
    assert (markers / f"refused-{pid}").exists()
    assert "_refuse_to_stop" in server.stderr()
    assert_quiet(server.stderr())


def test_signals_repeated_by_a_supervisor_do_not_cut_the_drain(
    gunicorn: Callable[..., Server], markers: Path
) -> None:
    """Supervisors send SIGTERM again (and some SIGINT): with no one at a
    terminal, the worker's drain goes on and every protected row is written."""
    server = gunicorn(
        *("--worker-class", "gthread", "--workers", "1", "--threads", "8"),
        **_settings(markers, shutdown_timeout=30),
    )
    with (
        httpx.Client(base_url=server.url, timeout=30) as client,
        ThreadPoolExecutor(8) as pool,
    ):
        rows = [pool.submit(client.get, f"lifecycle/drain/{n}/?seconds=3") for n in range(8)]
        pids = {row.result().json()["pid"] for row in rows}
    (pid,) = pids
    os.kill(server.process.pid, signal.SIGTERM)
    wait_until(lambda: "Process exiting: draining" in server.stderr(), "the worker to drain")
    os.kill(server.process.pid, signal.SIGTERM)  # the master, again
    os.kill(pid, signal.SIGTERM)  # and the worker, twice, as some supervisors do
    os.kill(pid, signal.SIGINT)
    assert stop(server, timeout=60) == 0
    assert sorted(p.name for p in markers.glob("done-*")) == [f"done-{n}" for n in range(8)]
    assert "again while draining: the drain goes on" in server.stderr()
    assert "Interrupted while draining" not in server.stderr()
    assert_quiet(server.stderr())


@pytest.mark.parametrize("worker_class", ["sync", "gthread"])
@pytest.mark.parametrize("preload", [False, True], ids=["no-preload", "preload"])
def test_each_worker_serves_from_its_own_running_loop(
    gunicorn: Callable[..., Server], markers: Path, worker_class: str, preload: bool
) -> None:
    # One connection at a time per worker, and none kept alive, so that the
    # requests spread over both workers instead of queueing in the first.
    options = ["--worker-class", worker_class, "--workers", "2", "--worker-connections", "1"]
    server = gunicorn(*options, *(["--preload"] if preload else []), **_settings(markers, 5))
    seen: dict[int, set[tuple[int, int]]] = {}
    close = {"Connection": "close"}
    with (
        httpx.Client(base_url=server.url, timeout=10, headers=close) as client,
        ThreadPoolExecutor(8) as pool,
    ):
        for _ in range(50):  # bounded: both workers answer well before this
            for answer in pool.map(lambda _: client.get("lifecycle/loop/").json(), range(16)):
                assert answer["on_shared_loop"]
                assert answer["on_loop_thread"]
                seen.setdefault(answer["pid"], set()).add((answer["loop"], answer["loop_thread"]))
            if len(seen) == 2:
                break
    assert len(seen) == 2, seen
    assert server.process.pid not in seen
    assert all(len(loops) == 1 for loops in seen.values())  # one loop per worker, kept
    (first,), (second,) = seen.values()
    assert first[1] != second[1]  # distinct loop threads, not the master's
    assert stop(server) == 0
    assert_quiet(server.stderr())

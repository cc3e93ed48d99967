"""loopstatus next to a real gunicorn (2 gthread workers, AUTOSTART on)."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from django_looptoken._status_server import REQUEST_LIMIT
from django_looptoken._status_socket import ask
from tests.integration.status_servers import (
    METRICS_TOKEN,
    SETTINGS,
    StatusServer,
    held_requests,
    settings_env,
)
from tests.integration.status_servers import status_gunicorn as status_gunicorn  # the fixture
from tests.status_worker import socket_of
from tests.support.processes import DEADLINE_S, NOISE, Launcher, free_port, parent_of, stop

WORKERS = ("--worker-class", "gthread", "--workers", "2", "--threads", "4")
HELD = 4


def by_pid(processes: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    return {p["pid"]: p for p in processes}


def test_loopstatus_lists_both_workers_and_follows_their_requests(
    status_gunicorn: Callable[..., StatusServer], tmp_path: Path
) -> None:
    server = status_gunicorn(*WORKERS)
    master = server.server.process.pid
    idle = by_pid(server.wait_for_workers(2))
    for pid, status in idle.items():
        assert parent_of(pid) == master  # the workers, not the master (no --preload)
        assert status["state"] == "running"
        assert status["backend"] == "uvloop.Loop"
        assert (status["tokens"], status["tasks"]) == (1, 0)  # the app's token, nothing running
        assert status["project"] == "tests.integration.status_settings"
        assert socket_of(server.status_dir, pid, SETTINGS).exists()

    table = server.loopstatus()
    assert table.returncode == 0, table.stderr
    for pid in idle:
        (row,) = [line for line in table.stdout.splitlines() if line.startswith(f"{pid} ")]
        assert row.split()[1:4] == ["worker", "running", "uvloop.Loop"]

    with held_requests(server, tmp_path, HELD) as per_worker:
        busy = by_pid(server.processes())
        for pid, status in busy.items():
            # The app's token plus two per request (the middleware's and
            # its await_'s), and at least the await_ task of each request.
            assert status["tokens"] == 1 + 2 * per_worker[pid]
            assert status["tasks"] >= per_worker[pid]
    assert sum(per_worker.values()) == HELD

    deadline = time.monotonic() + DEADLINE_S
    done = server.processes()
    while any(p["tokens"] != 1 or p["tasks"] for p in done):
        assert time.monotonic() < deadline, f"requests never finished: {done}"
        done = server.processes()
    assert sum(p["await_calls"] for p in done) >= HELD

    assert stop(server.server) == 0
    assert sorted(os.listdir(server.status_dir)) == []  # each worker removed its socket
    for noise in NOISE:
        assert noise not in server.server.stderr()


def test_under_preload_the_master_is_labelled_and_awaits_count_every_view(
    status_gunicorn: Callable[..., StatusServer],
) -> None:
    server = status_gunicorn("--preload", *WORKERS)
    master = server.server.process.pid
    # The master loaded the app (and started its loop) before forking the two.
    before = by_pid(server.wait_for_workers(3))
    assert {pid: status["role"] for pid, status in before.items()} == {
        pid: "master" if pid == master else "worker" for pid in before
    }
    assert all(parent_of(pid) == master for pid in before if pid != master)
    table = server.loopstatus()
    assert table.returncode == 0, table.stderr
    roles = {int(line.split()[0]): line.split()[1] for line in table.stdout.splitlines()[1:]}
    assert roles == {pid: status["role"] for pid, status in before.items()}

    # Three plain async views (ASYNC_VIEWS: asgiref's async_to_sync on the
    # shared loop) and three @runs_async views (await_): six awaits.
    served = []
    for path in ["where/plain/"] * 3 + ["where/decorated/"] * 3:
        answer = httpx.get(server.server.url + path, timeout=DEADLINE_S).json()
        assert answer["on_shared_loop"] is True
        served.append(answer["pid"])
    after = by_pid(server.processes())
    # A worker's first request also checks once that the routing works, with
    # one async_to_sync call of its own: that worker's await count started at 1.
    first_requests = sum(1 for pid in set(served) if before[pid]["await_calls"] == 0)
    added = sum(after[pid]["await_calls"] - before[pid]["await_calls"] for pid in before)
    assert added == 6 + first_requests
    assert after[master]["await_calls"] == 0  # the master serves no request
    assert stop(server.server) == 0


def test_hostile_input_then_status_and_requests_still_answer(
    status_gunicorn: Callable[..., StatusServer],
) -> None:
    server = status_gunicorn(*WORKERS)
    pid = server.wait_for_workers(2)[0]["pid"]
    path = str(socket_of(server.status_dir, pid, SETTINGS))
    rng = random.Random(7)

    def connect() -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(DEADLINE_S)
        sock.connect(path)
        return sock

    def drain(sock: socket.socket) -> bytes:
        data = b""
        with contextlib.suppress(ConnectionResetError):  # after what was sent before it
            while chunk := sock.recv(65536):
                data += chunk
        return data

    limit = REQUEST_LIMIT
    with httpx.Client(base_url=server.server.url, timeout=DEADLINE_S) as client:
        crowd = [connect() for _ in range(64)]  # many at once, all silent
        try:
            assert client.get("where/decorated/").json()["on_shared_loop"] is True
        finally:
            for sock in crowd:
                sock.close()
    deadline = time.monotonic() + DEADLINE_S
    while True:  # the server drops the crowd's connections, then answers again
        with contextlib.suppress(OSError, ValueError):
            assert ask(path)["pid"] == pid
            break
        assert time.monotonic() < deadline, "the status socket did not recover"
        time.sleep(0.01)
    for round_ in range(30):
        junk = rng.randbytes(rng.randrange(1, 2 * limit)) + b"\n" * (round_ % 2)
        with connect() as sock:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                sock.sendall(junk)  # the server may answer and close before the end
                sock.shutdown(socket.SHUT_WR)
            answer = drain(sock)
        if len(junk) <= limit:  # whole requests always get their error line
            assert "error" in json.loads(answer), answer
    half_closed = [connect() for _ in range(10)]
    for sock in half_closed:
        sock.shutdown(socket.SHUT_WR)
    for sock in half_closed:
        assert "empty request" in json.loads(drain(sock))["error"]
        sock.close()
    with connect() as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(b"\xff" * (1 << 20))  # a megabyte, no newline
        answer = drain(sock)
        assert answer == b"" or "longer than" in json.loads(answer)["error"]

    assert ask(path)["pid"] == pid
    with httpx.Client(base_url=server.server.url, timeout=DEADLINE_S) as client:
        for _ in range(10):
            assert client.get("where/decorated/").json()["on_shared_loop"] is True
    assert stop(server.server) == 0
    for noise in NOISE:
        assert noise not in server.server.stderr()


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_sigkill_leaves_stale_sockets_that_the_next_listing_removes(
    status_gunicorn: Callable[..., StatusServer],
) -> None:
    server = status_gunicorn(*WORKERS)
    pids = sorted(by_pid(server.wait_for_workers(2)))
    server.server.process.kill()  # the master first, so that nobody respawns workers
    server.server.process.wait(DEADLINE_S)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + DEADLINE_S
    while not all(_gone(pid) for pid in pids):
        assert time.monotonic() < deadline, "the workers did not die"
        time.sleep(0.01)
    assert sorted(os.listdir(server.status_dir)) == sorted(
        socket_of(server.status_dir, pid, SETTINGS).name for pid in pids
    )

    result = server.loopstatus()
    assert result.returncode == 0, result.stderr
    assert "No live process of project tests.integration.status_settings" in result.stdout
    for pid in pids:
        assert (
            f"Removed the stale status socket {socket_of(server.status_dir, pid, SETTINGS)}"
            in result.stderr
        )
    assert os.listdir(server.status_dir) == []


def _scrape(server: StatusServer) -> dict[str, dict[int, float]]:
    """One scrape of the metrics URL, parsed by prometheus_client: each
    value per pid, by family name and by sample name (a histogram's
    ``_sum`` and ``_count``; its buckets are left out)."""
    response = httpx.get(
        server.server.url + "looptoken/metrics",
        headers={"Authorization": f"Bearer {METRICS_TOKEN}"},
        timeout=DEADLINE_S,
    )
    assert response.status_code == 200, response.text
    values: dict[str, dict[int, float]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if "le" in sample.labels:
                continue
            pid = int(sample.labels["pid"])
            values.setdefault(sample.name, {})[pid] = sample.value
            if sample.name in (family.name, f"{family.name}_total"):
                values.setdefault(family.name, {})[pid] = sample.value
    return values


def test_a_scrape_of_either_worker_reports_both_and_counters_grow(
    status_gunicorn: Callable[..., StatusServer],
) -> None:
    server = status_gunicorn(*WORKERS)
    workers = set(by_pid(server.wait_for_workers(2)))
    before = _scrape(server)
    assert set(before["looptoken_process_up"]) == workers  # whichever worker answered
    assert set(before["looptoken_process_up"].values()) == {1.0}
    assert set(before["looptoken_loop_running"].values()) == {1.0}
    for _ in range(6):  # await_ calls, on either worker
        httpx.get(server.server.url + "where/decorated/", timeout=DEADLINE_S).raise_for_status()
    after = _scrape(server)
    calls = "looptoken_await_calls"
    assert all(after[calls][pid] >= before[calls][pid] for pid in workers)
    assert sum(after[calls].values()) - sum(before[calls].values()) >= 6
    # The six calls (each sleeps on the loop) are in the await_ histogram too.
    timed = "looptoken_await_duration_seconds_count"
    assert sum(after[timed].values()) - sum(before[timed].values()) >= 6
    assert stop(server.server) == 0


def test_an_eventlet_servers_loop_is_listed_and_its_tasks_too(
    launcher: Launcher, tmp_path: Path
) -> None:
    # Under eventlet the status socket's thread is a green thread, answering
    # whenever the loop waits in the hub.
    status_dir = tmp_path / "status"
    env = settings_env(status_dir)
    port = free_port()
    command = [sys.executable, "-m", "tests.integration.eventlet_server", str(port)]
    running = launcher.launch("eventlet", command, port=port, settings=SETTINGS, extra_env=env)
    server = StatusServer(running, status_dir, env)
    with held_requests(server, tmp_path, 3):
        (status,) = server.wait_for_workers(1)
        assert status["pid"] == running.process.pid
        assert status["state"] == "running"
        assert status["tokens"] >= 4  # the app's, and one per held request
        tasks = server.loopstatus("--tasks", "--pid", str(running.process.pid), "--json")
        assert tasks.returncode == 0, tasks.stderr
        (listing,) = json.loads(tasks.stdout)["processes"]
        assert listing["total"] >= 3
        # A request greenlet asks its own process's status thread, which
        # answers only if the asking yields to the hub.
        scraped = _scrape(server)
        assert scraped["looptoken_loop_running"] == {running.process.pid: 1}
        assert scraped["looptoken_loop_tokens"][running.process.pid] >= status["tokens"]
    assert stop(running) == 0

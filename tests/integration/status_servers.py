"""Gunicorn for the status tests: its sockets in the test's own directory.

Like the ``gunicorn`` fixture of ``conftest.py``, with
``tests.integration.status_settings``: each test gets its own status
directory (and database), so parallel test runs never see each other's
workers. Every server is stopped by its pid afterwards.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import struct
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.status_worker import manage
from tests.support.processes import DEADLINE_S, Launcher, Server

SETTINGS = "tests.integration.status_settings"


@dataclass
class StatusServer:
    """A gunicorn server and where its workers keep their status sockets."""

    server: Server
    status_dir: Path
    env: dict[str, str]

    def loopstatus(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``manage.py loopstatus ARGS`` next to the server, in a fresh process."""
        return manage(self.status_dir, "loopstatus", *args, DJANGO_SETTINGS_MODULE=SETTINGS)

    def processes(self) -> list[dict[str, Any]]:
        """The workers' statuses, from ``loopstatus --json``."""
        result = self.loopstatus("--json")
        assert result.returncode == 0, result.stderr
        processes: list[dict[str, Any]] = json.loads(result.stdout)["processes"]
        return processes

    def wait_for_workers(self, count: int) -> list[dict[str, Any]]:
        """``processes()`` once it lists ``count`` workers (each loads the app as it boots)."""
        deadline = time.monotonic() + DEADLINE_S
        while len(processes := self.processes()) != count:
            assert time.monotonic() < deadline, f"{count} workers never listed: {processes}"
        return processes


# The bearer token the status servers' metrics URL takes.
METRICS_TOKEN = "status-servers-metrics-token"


def settings_env(status_dir: Path, database: Path | None = None) -> dict[str, str]:
    """The environment of a process using the status settings."""
    env = {
        **os.environ,
        "PYTHONDEVMODE": "1",
        "DJANGO_SETTINGS_MODULE": SETTINGS,
        "LOOPTOKEN_TEST_STATUS_DIR": str(status_dir),
        "LOOPTOKEN_TEST_METRICS_TOKEN": METRICS_TOKEN,
        "LOOPTOKEN_TEST_HISTORY_STEP": "0.5",
    }
    if database is not None:
        env["LOOPTOKEN_TEST_DB"] = str(database)
    return env


@pytest.fixture
def status_gunicorn(launcher: Launcher) -> Callable[..., StatusServer]:
    """Start gunicorn with the given options and the status settings."""

    def start(*options: str, database: Path | None = None) -> StatusServer:
        status_dir = launcher.tmp_path / f"status-{len(launcher.started)}"
        env = settings_env(status_dir, database)
        server = launcher.gunicorn(*options, settings=SETTINGS, extra_env=env)
        return StatusServer(server, status_dir, env)

    return start


@contextlib.contextmanager
def held_requests(server: StatusServer, tmp_path: Path, count: int) -> Iterator[Counter[int]]:
    """``count`` requests waiting on the workers' loops; yields how many per worker pid.

    Each request connects to a socket of the test's; accepting all of them is
    the event that says they are in flight, and closing them lets them finish.
    """
    path = tmp_path / "hold.sock"
    url = f"{server.server.url}status-test/hold/?socket={path}"
    with (
        socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener,
        httpx.Client(timeout=DEADLINE_S) as client,
        ThreadPoolExecutor(count) as pool,
    ):
        listener.bind(str(path))
        listener.listen(count)
        listener.settimeout(DEADLINE_S)
        responses = [pool.submit(client.get, url) for _ in range(count)]
        connections: list[socket.socket] = []
        try:
            per_worker: Counter[int] = Counter()
            for _ in range(count):
                connection, _ = listener.accept()
                connections.append(connection)
                creds = connection.getsockopt(
                    socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")
                )
                per_worker[struct.unpack("3i", creds)[0]] += 1
            yield per_worker
        finally:
            for connection in connections:
                connection.close()
        answered = Counter(future.result().json()["pid"] for future in responses)
    assert answered == per_worker

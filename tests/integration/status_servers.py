"""Gunicorn for the status tests: its sockets in the test's own directory.

Like the ``gunicorn`` fixture of ``conftest.py``, with
``tests.integration.status_settings``: each test gets its own status
directory (and database), so parallel test runs never see each other's
workers. Every server is stopped by its pid afterwards.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import ROOT, Server, free_port, stop, wait_until_serving
from tests.status_worker import manage

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


def settings_env(status_dir: Path, database: Path | None = None) -> dict[str, str]:
    """The environment of a process using the status settings."""
    env = {
        **os.environ,
        "PYTHONDEVMODE": "1",
        "DJANGO_SETTINGS_MODULE": SETTINGS,
        "LOOPTOKEN_TEST_STATUS_DIR": str(status_dir),
    }
    if database is not None:
        env["LOOPTOKEN_TEST_DB"] = str(database)
    return env


@pytest.fixture
def status_gunicorn(tmp_path: Path) -> Iterator[Callable[..., StatusServer]]:
    """Start gunicorn with the given options and the status settings."""
    started: list[Server] = []

    def start(*options: str, database: Path | None = None) -> StatusServer:
        port = free_port()
        status_dir = tmp_path / f"status-{port}"
        env = settings_env(status_dir, database)
        stderr_path = tmp_path / f"gunicorn-{port}.err"
        command = [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", *options]
        with stderr_path.open("wb") as stderr:  # the child keeps its own copy
            process = subprocess.Popen(
                [*command, "tests.wsgi:application"],
                cwd=ROOT,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        server = Server(process, f"http://127.0.0.1:{port}/", stderr_path)
        started.append(server)
        wait_until_serving(server)
        return StatusServer(server, status_dir, env)

    try:
        yield start
    finally:
        for server in started:
            if server.process.poll() is None:
                stop(server)

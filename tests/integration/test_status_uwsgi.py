"""The status of a real uWSGI master and its workers: each row says its role."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.integration.status_servers import SETTINGS, StatusServer, settings_env
from tests.support.processes import Launcher, free_port, stop

# As docs/deployment.md recommends: SIGTERM to the master stops gracefully.
GRACEFUL_SIGTERM = ("--hook-master-start", "unix_signal:15 gracefully_kill_them_all")


def start_uwsgi(launcher: Launcher, *options: str) -> StatusServer:
    binary = Path(sys.executable).with_name("uwsgi")
    if not binary.exists():
        pytest.fail(f"{binary} is missing: `make test` installs it with the test extras (pip)")
    port = free_port()
    command = [
        str(binary),
        *("--http-socket", f"127.0.0.1:{port}", "--module", "tests.wsgi:application"),
        *("--master", "--die-on-term", *GRACEFUL_SIGTERM),
        *("--need-app", "--home", sys.prefix),
        *options,
    ]
    status_dir = launcher.tmp_path / "status"
    env = settings_env(status_dir)
    server = launcher.launch("uwsgi", command, port=port, settings=SETTINGS, extra_env=env)
    return StatusServer(server, status_dir, env)


def test_the_uwsgi_master_starts_no_loop_and_its_workers_are_listed_as_workers(
    launcher: Launcher,
) -> None:
    # Preforked (the default): the master loads the app, then forks the two
    # workers from C. It serves nothing, and its exit runs no Python, so a
    # loop there could never drain: it starts none, each worker starts its own.
    server = start_uwsgi(launcher, "--processes", "2")
    master = server.server.process.pid
    roles = {p["pid"]: p["role"] for p in server.wait_for_workers(2)}
    assert master not in roles
    assert set(roles.values()) == {"worker"}
    assert stop(server.server) == 0
    assert list(server.status_dir.iterdir()) == []  # every process removed its socket

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


def test_the_uwsgi_master_is_labelled_master_and_its_workers_workers(
    launcher: Launcher,
) -> None:
    # Preforked (the default): the master loads the app, and starts its loop,
    # before forking the two workers from C, where os.fork's hooks do not run.
    server = start_uwsgi(launcher, "--processes", "2")
    master = server.server.process.pid
    roles = {p["pid"]: p["role"] for p in server.wait_for_workers(3)}
    assert roles == {pid: "master" if pid == master else "worker" for pid in roles}
    assert stop(server.server) == 0

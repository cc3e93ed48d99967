"""runserver with its autoreloader: Ctrl-C and SIGTERM let the serving child drain."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import httpx
import pytest

from django_looptoken._reloader import CHILD_GRACE_SECONDS
from tests.support.processes import (
    Launcher,
    Server,
    assert_quiet,
    free_port,
    wait_for_server_exit,
)

LIFECYCLE = "tests.integration.lifecycle_settings"


def runserver(launcher: Launcher, markers: Path, shutdown_timeout: float = 10) -> Server:
    port = free_port()
    return launcher.launch(
        "runserver",
        [sys.executable, "-m", "django", "runserver", f"127.0.0.1:{port}"],
        port=port,
        settings=LIFECYCLE,
        extra_env={
            "LOOPTOKEN_TEST_MARKERS": str(markers),
            "LOOPTOKEN_TEST_SHUTDOWN_TIMEOUT": str(shutdown_timeout),
        },
        new_session=True,  # the group is the terminal's foreground group
    )


def gone(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.parametrize("how", ["ctrl-c to the group", "sigterm to the parent"])
def test_the_serving_child_drains_protected_work_before_runserver_exits(
    launcher: Launcher, markers: Path, how: str
) -> None:
    server = runserver(launcher, markers)
    # The view answers after 0.5 s and leaves protected work that ends 0.5 s later.
    answer = httpx.get(server.url + "lifecycle/drain/r/", timeout=10).json()
    assert answer["pid"] != server.process.pid  # served by the child
    if how == "ctrl-c to the group":
        os.killpg(server.process.pid, signal.SIGINT)
    else:
        server.process.send_signal(signal.SIGTERM)
    wait_for_server_exit(server, 30)
    assert (markers / "done-r").read_text() == str(answer["pid"])
    assert gone(server.process.pid), "a process of runserver's group outlived it"
    assert f"Shared loop stopped (pid {answer['pid']})" in server.stderr()
    assert_quiet(server.stderr())


def test_a_child_that_cannot_exit_is_killed_once_its_drain_is_long_over(
    launcher: Launcher, markers: Path
) -> None:
    server = runserver(launcher, markers, shutdown_timeout=1)
    child = httpx.get(server.url + "lifecycle/hang-the-exit/", timeout=10).json()["pid"]
    began = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    wait_for_server_exit(server, 30)
    # SHUTDOWN_TIMEOUT (1 s) plus the parent's grace (5 s): not for ever.
    assert time.monotonic() - began < 1 + CHILD_GRACE_SECONDS + 5
    assert gone(server.process.pid)
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)

"""Fixtures shared by the tests: the backend matrix, a loop held for the test,
a status directory of the test's own, and a leak check."""

from __future__ import annotations

import os
import resource
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import django_looptoken as looptoken
from django_looptoken._runtime import State, runtime
from tests.status_worker import socket_of
from tests.support.processes import wait_until

BACKENDS = ["asyncio", "uvloop"]


def pytest_configure(config: pytest.Config) -> None:
    """No core files: a hung child is ended with SIGABRT for its stacks
    (``tests.support.processes.dump_stacks_and_kill``); its children inherit this."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_CORE)
    resource.setrlimit(resource.RLIMIT_CORE, (0, hard))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every test runs once per loop backend, unless marked ``one_backend``."""
    if "backend" in metafunc.fixturenames and not metafunc.definition.get_closest_marker(
        "one_backend"
    ):
        metafunc.parametrize("backend", BACKENDS, indirect=True)


@pytest.fixture(autouse=True)
def backend(request: pytest.FixtureRequest, settings: Any) -> str:
    """The loop backend of this run, with AUTOSTART off; a ``one_backend`` test
    keeps the project's settings as they are."""
    if not hasattr(request, "param"):
        return str(getattr(settings, "LOOPTOKEN", {}).get("BACKEND", "default"))
    settings.LOOPTOKEN = {"AUTOSTART": False, "BACKEND": request.param}
    return str(request.param)


@pytest.fixture
def looptoken_settings(settings: Any, backend: str) -> Any:
    """Change LOOPTOKEN keys for one test: ``looptoken_settings(SHUTDOWN_TIMEOUT=1)``."""

    def update(**values: object) -> None:
        settings.LOOPTOKEN = {**settings.LOOPTOKEN, **values}

    return update


@pytest.fixture
def token() -> Iterator[looptoken.LoopToken]:
    """The shared loop, running for the whole test."""
    with looptoken.start_loop() as held:
        yield held


@pytest.fixture
def status_dir(looptoken_settings: Any, tmp_path: Path) -> Path:
    """The test's own status directory (``STATUS_DIR``; not created yet)."""
    path = tmp_path / "status"
    looptoken_settings(STATUS_DIR=str(path))
    return path


@pytest.fixture
def served(status_dir: Path) -> Iterator[Path]:
    """A running loop; yields its status socket once it listens."""
    with looptoken.start_loop():
        path = socket_of(status_dir, os.getpid())
        wait_until(path.exists, "the status socket")
        yield path


@pytest.fixture(autouse=True)
def no_loop_left_behind() -> Iterator[None]:
    """Every test must leave the loop stopped and no loop thread running."""
    yield
    leaked = runtime().state is not State.STOPPED
    if leaked:
        runtime().shutdown(timeout=5)
    threads = [t.name for t in threading.enumerate() if t.name == "looptoken-loop"]
    assert not leaked, "the test left the shared loop running (a token was not released)"
    assert not threads, f"loop threads still alive after the test: {threads}"

"""Fixtures shared by the tests: the backend matrix and a leak check."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from django_looptoken._runtime import State, runtime

BACKENDS = ["asyncio", "uvloop"]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, settings: Any) -> str:
    """Run the test once per loop backend, with AUTOSTART off."""
    settings.LOOPTOKEN = {"AUTOSTART": False, "BACKEND": request.param}
    return str(request.param)


@pytest.fixture
def looptoken_settings(settings: Any, backend: str) -> Any:
    """Change LOOPTOKEN keys for one test: ``looptoken_settings(SHUTDOWN_TIMEOUT=1)``."""

    def update(**values: object) -> None:
        settings.LOOPTOKEN = {**settings.LOOPTOKEN, **values}

    return update


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

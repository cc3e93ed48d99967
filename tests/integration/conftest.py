"""Fixtures for the real-server tests: a launcher whose servers are always stopped."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.processes import Launcher, Server


def pytest_collectstart(collector: pytest.Collector) -> None:
    """Each server chooses its loop backend in its settings module, so these
    tests run once rather than once per backend."""
    if isinstance(collector, pytest.Module):
        collector.add_marker(pytest.mark.one_backend)


@pytest.fixture
def launcher(tmp_path: Path) -> Iterator[Launcher]:
    """A launcher whose servers are all stopped when the test ends."""
    servers = Launcher(tmp_path)
    try:
        yield servers
    finally:
        servers.stop_all()


@pytest.fixture
def markers(tmp_path: Path) -> Path:
    """A folder for the marker files the lifecycle views and jobs write."""
    path = tmp_path / "markers"
    path.mkdir()
    return path


@pytest.fixture
def client(server: Server) -> Iterator[httpx.Client]:
    """An HTTP client of the module's ``server``."""
    with httpx.Client(base_url=server.url, timeout=60) as client:
        yield client


@pytest.fixture
def gunicorn(launcher: Launcher) -> Callable[..., Server]:
    """Start gunicorn with the given options (and optional ``settings=``, ``extra_env=``)."""
    return launcher.gunicorn

"""Servers start the loop when the app loads (management commands wait for a use)."""

from __future__ import annotations

import re
import sys

import httpx

from tests.support.processes import Launcher, free_port

LIFECYCLE = "tests.integration.lifecycle_settings"


def test_uvicorn_starts_the_loop_at_load_with_the_app_token(launcher: Launcher) -> None:
    """An ASGI server is not a management command: the loop starts at load,
    logged at INFO, and the app's token keeps it running between requests."""
    port = free_port()
    server = launcher.launch(
        "uvicorn",
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "tests.integration.asgi:application",
        ],
        port=port,
        settings=LIFECYCLE,
    )
    started = re.findall(r"Shared loop started: \S+ \(pid (\d+)\)", server.stderr())
    assert started == [str(server.process.pid)], server.stderr()
    # The request's token and the app's.
    assert httpx.get(server.url + "tokens/", timeout=10).json()["tokens"] == 2

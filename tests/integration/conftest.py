"""Real servers started on free 127.0.0.1 ports and always stopped by their pid."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
NOISE = (
    "Task was destroyed but it is pending",
    "Event loop is closed",
    "was never awaited",
    "Traceback",
)


@dataclass
class Server:
    """A server process and where it listens."""

    process: subprocess.Popen[bytes]
    url: str
    stderr_path: Path

    def stderr(self) -> str:
        """What the server wrote to stderr so far."""
        return self.stderr_path.read_text()


def free_port() -> int:
    """A port on 127.0.0.1 nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until_serving(server: Server, deadline_s: float = 30) -> None:
    """Connect until the server answers, or fail at the deadline."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise AssertionError(f"server exited early:\n{server.stderr()}")
        try:
            httpx.get(server.url + "tokens/", timeout=2)
            return
        except httpx.TransportError:
            time.sleep(0.05)  # bounded by the deadline: connecting is the event we wait for
    raise AssertionError(f"server did not answer within {deadline_s} s:\n{server.stderr()}")


def stop(server: Server, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
    """Signal the server by its pid and wait for it; SIGKILL if it hangs."""
    if server.process.poll() is None:
        server.process.send_signal(sig)
    try:
        return server.process.wait(timeout)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait(10)
        raise AssertionError(f"server did not exit within {timeout} s") from None


@pytest.fixture
def gunicorn(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Start gunicorn with the given options; every server is stopped afterwards."""
    started: list[Server] = []

    def start(*options: str) -> Server:
        port = free_port()
        stderr_path = tmp_path / f"gunicorn-{port}.err"
        env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.integration.server_settings"}
        env["PYTHONDEVMODE"] = "1"
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
        return server

    try:
        yield start
    finally:
        for server in started:
            if server.process.poll() is None:
                stop(server)

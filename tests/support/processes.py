"""Processes the tests start: a free port, polling with a deadline, stopping by
pid, and real servers (gunicorn, uWSGI, waitress, runserver ...) that a
``Launcher`` always stops."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]

# Bounds a failure on a busy 2-core machine; a passing test is done long before.
DEADLINE_S = 60.0

# Lines a server must never log: each one means a task, loop or coroutine was lost.
NOISE = (
    "Task was destroyed but it is pending",
    "Event loop is closed",
    "was never awaited",
    "Traceback",
)


def assert_quiet(stderr: str) -> None:
    """No line of ``NOISE`` in what a process wrote to stderr."""
    for noise in NOISE:
        assert noise not in stderr, stderr


def parent_of(pid: int) -> int:
    """The parent pid of ``pid`` (Linux's ``/proc``)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


def free_port() -> int:
    """A port on 127.0.0.1 nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until(
    condition: Callable[[], object],
    what: str,
    deadline_s: float = DEADLINE_S,
    interval_s: float = 0.01,
) -> None:
    """Poll an observable ``condition`` until it holds; fail at the deadline.

    For conditions that have no event to wait on (a file appears, another
    process answers); the poll interval is short and the deadline bounds it.
    """
    deadline = time.monotonic() + deadline_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {deadline_s} s waiting for {what}")
        time.sleep(interval_s)


def descendants(pid: int) -> list[int]:
    """The pids of ``pid``'s children, their children and so on (Linux's ``/proc``)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            child = int(stat.parent.name)
            children.setdefault(parent_of(child), []).append(child)
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _ended(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state in ("Z", "X")  # a zombie has ended: its parent has not reaped it yet


def dump_stacks_and_kill(process: subprocess.Popen[bytes]) -> None:
    """End a hung process and everything it forked with SIGABRT, one at a time
    (they may share a stderr), so that each writes every thread's Python stack
    there (``faulthandler``, which ``PYTHONDEVMODE`` turns on) for the failure
    to show; SIGKILL if that does not end it."""
    for pid in [*reversed(descendants(process.pid)), process.pid]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGABRT)
            deadline = time.monotonic() + 5
            while not _ended(pid) and time.monotonic() < deadline:
                time.sleep(0.01)  # bounded: another process's end has no event here
            if not _ended(pid):
                os.kill(pid, signal.SIGKILL)
    process.wait(10)


def wait_for_exit(
    process: subprocess.Popen[bytes], timeout: float = DEADLINE_S, stderr_path: Path | None = None
) -> int:
    """Wait for the process to exit and return its code; one that hangs fails
    the test with its threads' stacks (and ``stderr_path``'s text, if given)."""
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        dump_stacks_and_kill(process)
        said = "" if stderr_path is None else f", its stderr:\n{stderr_path.read_text()[-30_000:]}"
        raise AssertionError(f"pid {process.pid} did not exit within {timeout} s{said}") from None


def stop_process(
    process: subprocess.Popen[bytes],
    sig: int = signal.SIGTERM,
    timeout: float = DEADLINE_S,
    stderr_path: Path | None = None,
) -> int:
    """Send ``sig`` to the process by its pid and wait; a process that hangs
    fails the test as in ``wait_for_exit``. Returns the exit code."""
    if process.poll() is None:
        process.send_signal(sig)
    return wait_for_exit(process, timeout, stderr_path)


@dataclass
class Server:
    """A server process and where it listens."""

    process: subprocess.Popen[bytes]
    url: str
    stderr_path: Path
    own_group: bool = False

    def stderr(self) -> str:
        """What the server wrote to stderr so far."""
        return self.stderr_path.read_text()


def wait_until_serving(server: Server, deadline_s: float = DEADLINE_S) -> None:
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
    """Signal the server by its pid and wait for it; a hang fails with its stacks."""
    return stop_process(server.process, sig, timeout, server.stderr_path)


def wait_for_server_exit(server: Server, timeout: float = DEADLINE_S) -> int:
    """``wait_for_exit`` for a server: its exit code; a hang fails with its stacks."""
    return wait_for_exit(server.process, timeout, server.stderr_path)


class Launcher:
    """Starts servers for one test and stops every one of them afterwards."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.started: list[Server] = []

    def launch(
        self,
        name: str,
        command: list[str],
        *,
        port: int,
        settings: str = "tests.integration.server_settings",
        extra_env: dict[str, str] | None = None,
        new_session: bool = False,
    ) -> Server:
        """Start ``command`` (serving on ``port``) and wait until it answers."""
        stderr_path = self.tmp_path / f"{name}-{port}.err"
        env = {**os.environ, "DJANGO_SETTINGS_MODULE": settings, "PYTHONDEVMODE": "1"}
        env.update(extra_env or {})
        with stderr_path.open("wb") as stderr:  # the child keeps its own copy
            process = subprocess.Popen(
                command,
                cwd=ROOT,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=new_session,
            )
        server = Server(process, f"http://127.0.0.1:{port}/", stderr_path, new_session)
        self.started.append(server)
        wait_until_serving(server)
        return server

    def gunicorn(self, *options: str, **kwargs: Any) -> Server:
        """Start gunicorn serving ``tests.wsgi`` with ``options`` on a free port;
        ``kwargs`` go to ``launch`` (``settings=``, ``extra_env=``)."""
        port = free_port()
        command = [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", *options]
        return self.launch("gunicorn", [*command, "tests.wsgi:application"], port=port, **kwargs)

    def stop_all(self) -> None:
        """Stop what is still running, each by its own pid; a server started in a
        session of its own also loses whatever is left of its process group."""
        for server in self.started:
            try:
                if server.process.poll() is None:
                    stop(server)
            finally:
                if server.own_group:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(server.process.pid, signal.SIGKILL)

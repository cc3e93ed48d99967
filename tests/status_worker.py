"""Another process for the status tests: it serves a status, or runs a command.

    python -m tests.status_worker serve      # a loop, driven by lines on stdin
    python -m tests.status_worker manage loopstatus --json

The settings module is ``DJANGO_SETTINGS_MODULE`` (default ``tests.settings``);
``LOOPTOKEN_TEST_STATUS_DIR``, ``LOOPTOKEN_TEST_BACKEND`` and
``LOOPTOKEN_TEST_AUTOSTART`` override its ``LOOPTOKEN`` keys, so a test can
keep every socket in its own ``tmp_path``.

``silent_processes()`` makes live processes whose status sockets never
answer; ``socket_of()`` says where a process's socket is.

``serve`` starts the loop, prints ``ready <pid>`` and then obeys stdin:
``hold N`` starts N tasks that wait (answers ``held``), ``nest`` one whose
wait is two coroutines deep (``nested``), ``release`` lets them finish
(``released``); ``block`` holds the loop in ``time.sleep`` calls (``blocked``)
until ``unblock`` (``unblocked``); end of input shuts the loop down and exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from tests.support.processes import DEADLINE_S

ROOT = Path(__file__).resolve().parents[1]


def configure() -> None:
    """Apply the ``LOOPTOKEN_TEST_*`` overrides of the environment to the settings."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    from django.conf import settings

    overrides: dict[str, object] = {}
    if "LOOPTOKEN_TEST_STATUS_DIR" in os.environ:
        overrides["STATUS_DIR"] = os.environ["LOOPTOKEN_TEST_STATUS_DIR"]
    if "LOOPTOKEN_TEST_BACKEND" in os.environ:
        overrides["BACKEND"] = os.environ["LOOPTOKEN_TEST_BACKEND"]
    if "LOOPTOKEN_TEST_AUTOSTART" in os.environ:
        overrides["AUTOSTART"] = os.environ["LOOPTOKEN_TEST_AUTOSTART"] == "1"
    settings.LOOPTOKEN = {**settings.LOOPTOKEN, **overrides}


def serve() -> None:
    """Hold a loop and obey stdin until it ends."""
    import django

    django.setup()
    import django_looptoken as looptoken

    gate: asyncio.Event | None = None

    async def make_gate() -> asyncio.Event:
        return asyncio.Event()

    async def wait(gate: asyncio.Event) -> None:
        await gate.wait()

    async def middle(gate: asyncio.Event) -> None:
        await gate.wait()  # two coroutines deep

    async def outer(gate: asyncio.Event) -> None:
        await middle(gate)

    blocking, unblock = threading.Event(), threading.Event()

    async def hold_the_loop() -> None:
        blocking.set()
        while not unblock.is_set():
            time.sleep(0.01)  # noqa: ASYNC251 - blocks the loop, as the listing must still see

    def started() -> None:
        # The loop starts hand-ins in order: once this call has run, the
        # tasks spawned before it exist (a listing asked now shows them).
        looptoken.await_(asyncio.sleep(0))

    with looptoken.start_loop():
        print(f"ready {os.getpid()}", flush=True)
        for line in sys.stdin:
            match line.split():
                case ["hold", count]:
                    gate = looptoken.await_(make_gate())
                    for _ in range(int(count)):
                        looptoken.spawn(wait(gate))
                    started()
                    print("held", flush=True)
                case ["nest"]:
                    gate = gate or looptoken.await_(make_gate())
                    looptoken.spawn(outer(gate))
                    started()
                    print("nested", flush=True)
                case ["block"]:
                    looptoken.spawn(hold_the_loop())
                    blocking.wait(DEADLINE_S)
                    print("blocked", flush=True)
                case ["unblock"]:
                    unblock.set()
                    print("unblocked", flush=True)
                case ["release"]:
                    assert gate is not None
                    looptoken.get_loop().call_soon_threadsafe(gate.set)
                    print("released", flush=True)
    looptoken.shutdown()


class LineReader:
    """Reads lines from a child's pipe, each within the deadline."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None
        self.process = process
        self._fd = process.stdout.fileno()
        self._pending = b""

    def read_line(self) -> str:
        """The next line of output (fails the test at the deadline or at exit)."""
        deadline = time.monotonic() + DEADLINE_S
        while b"\n" not in self._pending:
            remaining = deadline - time.monotonic()
            assert remaining > 0, "the child process did not write a line in time"
            readable, _, _ = select.select([self._fd], [], [], remaining)
            if readable:
                chunk = os.read(self._fd, 4096)
                assert chunk, f"the child process exited (code {self.process.poll()})"
                self._pending += chunk
        line, self._pending = self._pending.split(b"\n", 1)
        return line.decode()


class Worker:
    """A ``serve`` process, seen from the test."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.process = process
        self._lines = LineReader(process)
        ready = self.read_line()
        assert ready.startswith("ready "), ready
        self.pid = int(ready.split()[1])

    def read_line(self) -> str:
        """The worker's next line of output."""
        return self._lines.read_line()

    def tell(self, command: str, answer: str) -> None:
        """Send one command line and wait for its answer."""
        assert self.process.stdin is not None
        self.process.stdin.write(command.encode() + b"\n")
        self.process.stdin.flush()
        assert self.read_line() == answer

    def stop(self) -> int:
        """End its input so it shuts down; SIGKILL it if it hangs. Returns the exit code."""
        if self.process.stdin is not None and not self.process.stdin.closed:
            self.process.stdin.close()
        try:
            return self.process.wait(DEADLINE_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
            raise AssertionError("the status worker did not exit in time") from None
        finally:
            if self.process.stdout is not None:
                self.process.stdout.close()


def socket_of(status_dir: Path | str, pid: int, project: str | None = None) -> Path:
    """Where process ``pid`` of ``project`` (default: this process's settings
    module) serves its status in ``status_dir``."""
    from django_looptoken._status_socket import socket_path

    if project is None:
        project = os.environ.get("DJANGO_SETTINGS_MODULE", "tests.settings")
    return Path(socket_path(str(status_dir), pid, project))


@contextlib.contextmanager
def silent_processes(status_dir: Path | str, count: int, project: str) -> Iterator[list[int]]:
    """``count`` live processes of ``project`` whose status sockets never answer.

    Each is a real process (``sleep``) with a socket under its pid that
    accepts connections (the kernel's backlog) and never answers: what a
    stopped or hung process looks like to the client. Yields the pids;
    the processes are killed by pid and the sockets removed afterwards.
    """
    Path(status_dir).mkdir(mode=0o700, exist_ok=True)
    sleepers: list[subprocess.Popen[bytes]] = []
    listeners: list[socket.socket] = []
    paths: list[Path] = []
    try:
        for _ in range(count):
            sleepers.append(subprocess.Popen(["sleep", str(int(DEADLINE_S * 2))]))
            path = socket_of(status_dir, sleepers[-1].pid, project)
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            listeners.append(listener)
            listener.bind(str(path))
            paths.append(path)
            listener.listen(16)
        yield [sleeper.pid for sleeper in sleepers]
    finally:
        for listener in listeners:
            listener.close()
        for path in paths:
            path.unlink(missing_ok=True)
        for sleeper in sleepers:
            sleeper.kill()
            sleeper.wait(10)


def worker_env(status_dir: Path | str, **overrides: str) -> dict[str, str]:
    """The environment for a worker or a command keeping sockets in ``status_dir``."""
    env = {**os.environ, "PYTHONDEVMODE": "1", "LOOPTOKEN_TEST_STATUS_DIR": str(status_dir)}
    env.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    env.update(overrides)
    return env


@contextlib.contextmanager
def running_worker(status_dir: Path | str, **overrides: str) -> Iterator[Worker]:
    """A ``serve`` worker for the block; always stopped (by its pid) afterwards."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.status_worker", "serve"],
        cwd=ROOT,
        env=worker_env(status_dir, **overrides),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        worker = Worker(process)
        yield worker
        assert worker.stop() == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        for stream in (process.stdin, process.stdout):
            if stream is not None and not stream.closed:
                stream.close()


def manage(
    status_dir: Path | str, *args: str, **overrides: str
) -> subprocess.CompletedProcess[str]:
    """Run ``manage.py ARGS`` in a fresh process with its sockets in ``status_dir``."""
    return subprocess.run(
        [sys.executable, "-m", "tests.status_worker", "manage", *args],
        cwd=ROOT,
        env=worker_env(status_dir, **overrides),
        capture_output=True,
        text=True,
        timeout=DEADLINE_S * 2,
        check=False,
    )


def main() -> None:
    """Dispatch on the first argument."""
    configure()
    if sys.argv[1] == "serve":
        serve()
    elif sys.argv[1] == "manage":
        from django.core.management import execute_from_command_line

        execute_from_command_line(["manage.py", *sys.argv[2:]])
    else:
        raise SystemExit(f"unknown role {sys.argv[1]!r}")


if __name__ == "__main__":
    main()

"""Process exit outside any server: signals chained, the drain, a dying loop thread.

Scripts run in real subprocesses with the app's AUTOSTART on; each reports
"ready" on stdout once its background work is in place, and the test then
signals it by its pid.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import pty
import signal
import subprocess
import sys
import termios
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import django_looptoken as looptoken
from django_looptoken._runtime import runtime
from tests.support.processes import assert_quiet

ROOT = Path(__file__).resolve().parents[1]

PRELUDE = """
import asyncio, os, signal, sys, threading
from pathlib import Path
MARKERS = Path(os.environ["LOOPTOKEN_TEST_MARKERS"])

async def finish_later(name, delay=0.5):
    await asyncio.sleep(delay)
    (MARKERS / name).write_text("done")

async def sleep_for_an_hour():
    await asyncio.sleep(3600)
"""


class Script:
    """A Python script in a subprocess; stopped by its pid when the test ends."""

    def __init__(
        self, body: str, markers: Path, shutdown_timeout: float, terminal: bool = False
    ) -> None:
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.integration.lifecycle_settings",
            "LOOPTOKEN_TEST_MARKERS": str(markers),
            "LOOPTOKEN_TEST_SHUTDOWN_TIMEOUT": str(shutdown_timeout),
            "PYTHONDEVMODE": "1",
            "PYTHONPATH": str(ROOT),
        }
        source = PRELUDE + textwrap.dedent(body)
        # With ``terminal``, the script runs in a session of its own whose
        # controlling terminal is a pseudo-terminal: ``type_ctrl_c()`` types
        # into it, and the kernel sends SIGINT as for a person at a keyboard.
        self.terminal: int | None = None
        extra: dict[str, object] = {}
        if terminal:
            self.terminal, tty = pty.openpty()
            extra = {"stdin": tty, "start_new_session": True, "preexec_fn": _take_the_terminal}
        self.process = subprocess.Popen(  # type: ignore[call-overload]
            [sys.executable, "-c", source],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            **extra,
        )
        if terminal:
            os.close(tty)

    def type_ctrl_c(self) -> None:
        assert self.terminal is not None, "started without a terminal"
        os.write(self.terminal, b"\x03")

    def wait_ready(self) -> None:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()  # ends at the first line or at exit
        assert line == "ready\n", self.finish()[1]

    def finish(self, timeout: float = 30) -> tuple[int, str]:
        """Wait for exit: the status and everything written to stderr."""
        _, err = self.process.communicate(timeout=timeout)
        if self.terminal is not None:
            os.close(self.terminal)
            self.terminal = None
        return self.process.returncode, err

    def wait_for_the_drain(self, shutdown_timeout: float) -> None:
        """Read stderr up to the exit hook's first line."""
        assert self.process.stderr is not None
        for _ in range(100):  # bounded: the line comes right after "ready"
            line = self.process.stderr.readline()
            if "Process exiting: draining" in line or not line:
                break
        assert f"Process exiting: draining the shared loop (up to {shutdown_timeout} s)" in line


def _take_the_terminal() -> None:
    """In the child, a session leader already: make stdin its controlling terminal."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


@pytest.fixture
def script(tmp_path: Path) -> Iterator[type[Script]]:
    started: list[Script] = []

    class Tracked(Script):
        def __init__(
            self, body: str, shutdown_timeout: float = 5.0, terminal: bool = False
        ) -> None:
            super().__init__(body, tmp_path, shutdown_timeout, terminal)
            started.append(self)

    try:
        yield Tracked  # type: ignore[misc]
    finally:
        for each in started:
            if each.process.poll() is None:
                each.process.kill()
                each.process.communicate(timeout=10)
            if each.terminal is not None:
                os.close(each.terminal)


@pytest.mark.one_backend  # a script of its own, with its own settings
def test_sigterm_with_no_handler_exits_after_draining(
    script: type[Script], tmp_path: Path
) -> None:
    running = script(
        """
        import django; django.setup()
        import django_looptoken as looptoken
        looptoken.spawn(looptoken.shutdown_waits_for(finish_later("protected")))
        print("ready", flush=True)
        signal.pause()
        """
    )
    running.wait_ready()
    running.process.send_signal(signal.SIGTERM)
    code, stderr = running.finish()
    assert code == 128 + signal.SIGTERM  # what the default action's shell status says
    assert (tmp_path / "protected").read_text() == "done"
    assert "SIGTERM: exiting after the shared loop drains" in stderr
    assert_quiet(stderr)


@pytest.mark.one_backend  # a script of its own, with its own settings
def test_an_existing_handler_is_chained_not_replaced(script: type[Script], tmp_path: Path) -> None:
    running = script(
        """
        def mine(signum, frame):
            (MARKERS / "mine").write_text("called")
            sys.exit(7)
        signal.signal(signal.SIGTERM, mine)
        import django; django.setup()
        import django_looptoken as looptoken
        looptoken.spawn(looptoken.shutdown_waits_for(finish_later("protected")))
        print("ready", flush=True)
        signal.pause()
        """
    )
    running.wait_ready()
    running.process.send_signal(signal.SIGTERM)
    code, stderr = running.finish()
    assert code == 7
    assert (tmp_path / "mine").read_text() == "called"
    assert (tmp_path / "protected").read_text() == "done"
    assert_quiet(stderr)


@pytest.mark.one_backend  # a script of its own, with its own settings
def test_setup_outside_the_main_thread_installs_no_handler(script: type[Script]) -> None:
    running = script(
        """
        import django
        before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
        setup = threading.Thread(target=django.setup)
        setup.start(); setup.join()
        from django_looptoken._runtime import runtime
        after = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
        print("ready", flush=True)
        print(runtime().state.value, before == after, flush=True)
        """
    )
    running.wait_ready()
    assert running.process.stdout is not None
    assert running.process.stdout.readline() == "running True\n"
    code, stderr = running.finish()
    assert code == 0
    assert_quiet(stderr)


@pytest.mark.one_backend  # a script of its own, with its own settings
def test_ctrl_c_typed_at_the_terminal_stops_the_drain_at_once(script: type[Script]) -> None:
    running = script(
        """
        import django; django.setup()
        import django_looptoken as looptoken
        looptoken.spawn(looptoken.shutdown_waits_for(sleep_for_an_hour()))
        print("ready", flush=True)
        """,
        shutdown_timeout=60,
        terminal=True,
    )
    running.wait_ready()
    # The script has returned; its exit waits for the protected hour-long task.
    running.wait_for_the_drain(60.0)
    began = time.monotonic()
    running.type_ctrl_c()
    code, stderr = running.finish()
    assert time.monotonic() - began < 10  # not the 60 s SHUTDOWN_TIMEOUT
    assert code == 0
    assert "Interrupted while draining" in stderr
    assert "sleep_for_an_hour" in stderr
    assert "when told not to wait" in stderr
    assert_quiet(stderr)


@pytest.mark.one_backend  # a script of its own, with its own settings
@pytest.mark.parametrize("again", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_repeated_by_a_supervisor_does_not_cut_the_drain(
    script: type[Script], tmp_path: Path, again: int
) -> None:
    """No terminal: a repeated SIGTERM (or a SIGINT) comes from a supervisor,
    and the protected work still finishes."""
    running = script(
        """
        import django; django.setup()
        import django_looptoken as looptoken
        for n in range(8):
            looptoken.spawn(looptoken.shutdown_waits_for(finish_later(f"row-{n}", 1.0)))
        print("ready", flush=True)
        """,
        shutdown_timeout=30,
    )
    running.wait_ready()
    running.wait_for_the_drain(30.0)
    for _ in range(3):
        running.process.send_signal(again)
    code, stderr = running.finish()
    assert code == 0
    assert sorted(p.name for p in tmp_path.glob("row-*")) == [f"row-{n}" for n in range(8)]
    name = signal.Signals(again).name
    assert stderr.count(f"{name} again while draining: the drain goes on") == 1
    assert "Interrupted while draining" not in stderr
    assert_quiet(stderr)


# -- a loop thread that dies ------------------------------------------------------


def _kill_the_loop_thread() -> None:
    raise SystemExit("simulated crash")  # asyncio lets SystemExit out of run_forever


def test_a_dead_loop_thread_is_logged_callers_hear_and_the_next_start_replaces_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="django_looptoken")
    runtime().hold_app_token()
    try:
        first = looptoken.get_loop()
        dying = runtime().current_run
        assert dying is not None
        started = threading.Event()
        outcome: list[BaseException] = []

        async def wait_forever() -> None:
            started.set()
            await asyncio.Event().wait()

        def caller() -> None:
            try:
                looptoken.await_(wait_forever())
            except BaseException as exc:
                outcome.append(exc)

        waiting = threading.Thread(target=caller)
        waiting.start()
        assert started.wait(10)
        first.call_soon_threadsafe(_kill_the_loop_thread)
        waiting.join(10)
        assert not waiting.is_alive()
        assert [type(exc) for exc in outcome] == [looptoken.LoopStoppedError]
        assert dying.closed.wait(10)
        assert first.is_closed()
        assert "thread died" in caplog.text
        assert "simulated crash" in caplog.text
        # The crashed loop's shutdown sequence ran: cancelled and closed what it held.
        assert "Cleaning up after the shared loop's thread died failed" not in caplog.text

        with looptoken.start_loop():
            assert looptoken.get_loop() is not first
            assert looptoken.await_(asyncio.sleep(0, "alive")) == "alive"
            run = runtime().current_run
            assert run is not None
            assert run.tokens == 2
        assert runtime().current_run is run  # and it keeps the new loop running
    finally:
        looptoken.shutdown()


STUCK_IN_A_THREAD = {
    # A coroutine's executor job, cancelled by the drain but still running.
    "the loop's executor": "await asyncio.get_running_loop().run_in_executor(None, stuck)",
    # A spawned task's thread-sensitive call, run in the app's background thread.
    "the background thread": "await sync_to_async(stuck)()",
}


@pytest.mark.one_backend  # a script of its own, with its own settings
@pytest.mark.parametrize("where", STUCK_IN_A_THREAD)
def test_a_call_stuck_in_a_thread_does_not_hold_the_exit(script: type[Script], where: str) -> None:
    running = script(
        f"""
        import time
        import django; django.setup()
        from asgiref.sync import sync_to_async
        import django_looptoken as looptoken
        started = threading.Event()

        def stuck():
            started.set()
            time.sleep(600)

        async def waits_on_it():
            {STUCK_IN_A_THREAD[where]}

        looptoken.spawn(waits_on_it())
        started.wait(60)
        print("ready", flush=True)
        """,
        shutdown_timeout=1.0,
    )
    running.wait_ready()
    began = time.monotonic()
    code, stderr = running.finish(timeout=60)
    # The drain's 1 s and its closing steps' 1 s grace, not the call's 600 s.
    assert time.monotonic() - began < 10, stderr
    assert code == 0
    assert "left behind" not in stderr  # the loop's thread ended as it should
    if where == "the loop's executor":  # cut at the deadline, and said so
        assert "s: shutting down the default executor; going on." in stderr

"""Process exit outside any server: signals chained, the drain, a dying loop thread.

Scripts run in real subprocesses with the app's AUTOSTART on; each reports
"ready" on stdout once its background work is in place, and the test then
signals it by its pid.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import django_looptoken as looptoken
from django_looptoken._runtime import runtime
from tests.support.processes import NOISE

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

    def __init__(self, body: str, markers: Path, shutdown_timeout: float) -> None:
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.integration.lifecycle_settings",
            "LOOPTOKEN_TEST_MARKERS": str(markers),
            "LOOPTOKEN_TEST_SHUTDOWN_TIMEOUT": str(shutdown_timeout),
            "PYTHONDEVMODE": "1",
            "PYTHONPATH": str(ROOT),
        }
        source = PRELUDE + textwrap.dedent(body)
        self.process = subprocess.Popen(
            [sys.executable, "-c", source],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def wait_ready(self) -> None:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()  # ends at the first line or at exit
        assert line == "ready\n", self.finish()[1]

    def finish(self, timeout: float = 30) -> tuple[int, str]:
        """Wait for exit: the status and everything written to stderr."""
        _, err = self.process.communicate(timeout=timeout)
        return self.process.returncode, err


@pytest.fixture
def script(tmp_path: Path) -> Iterator[type[Script]]:
    started: list[Script] = []

    class Tracked(Script):
        def __init__(self, body: str, shutdown_timeout: float = 5.0) -> None:
            super().__init__(body, tmp_path, shutdown_timeout)
            started.append(self)

    try:
        yield Tracked  # type: ignore[misc]
    finally:
        for each in started:
            if each.process.poll() is None:
                each.process.kill()
                each.process.communicate(timeout=10)


def assert_quiet(stderr: str) -> None:
    for noise in NOISE:
        assert noise not in stderr, stderr


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


def test_ctrl_c_twice_stops_the_drain_at_once(script: type[Script]) -> None:
    running = script(
        """
        import django; django.setup()
        import django_looptoken as looptoken
        looptoken.spawn(looptoken.shutdown_waits_for(sleep_for_an_hour()))
        print("ready", flush=True)
        """,
        shutdown_timeout=60,
    )
    running.wait_ready()
    assert running.process.stderr is not None
    # The script has returned; its exit waits for the protected hour-long task.
    for _ in range(100):  # bounded: the line comes right after "ready"
        line = running.process.stderr.readline()
        if "Process exiting: draining" in line or not line:
            break
    assert "Process exiting: draining the shared loop (up to 60.0 s)" in line
    began = time.monotonic()
    running.process.send_signal(signal.SIGINT)
    code, stderr = running.finish()
    assert time.monotonic() - began < 10  # not the 60 s SHUTDOWN_TIMEOUT
    assert code == 0
    assert "Interrupted while draining" in stderr
    assert "sleep_for_an_hour" in stderr
    assert "when told not to wait" in stderr
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

        with looptoken.start_loop():
            assert looptoken.get_loop() is not first
            assert looptoken.await_(asyncio.sleep(0, "alive")) == "alive"
            run = runtime().current_run
            assert run is not None
            assert run.tokens == 2
        assert runtime().current_run is run  # and it keeps the new loop running
    finally:
        looptoken.shutdown()

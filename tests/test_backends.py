"""Loop backends and loop settings, and the shared loop being a full event loop."""

from __future__ import annotations

import asyncio
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import uvloop

import django_looptoken as looptoken
from tests import loop_factories

LOOP_CLASSES: dict[str, type[asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.SelectorEventLoop,
    "uvloop": uvloop.Loop,
}

# Generous bound for anything awaited in these tests; none should come close.
WAIT = 10.0


# -- choosing the backend -------------------------------------------------------


def test_backend_setting_picks_the_loop_class(backend: str) -> None:
    with looptoken.start_loop():
        assert type(looptoken.get_loop()) is LOOP_CLASSES[backend]


def test_auto_prefers_uvloop(settings: Any) -> None:
    settings.LOOPTOKEN = {"AUTOSTART": False, "BACKEND": "auto"}
    with looptoken.start_loop():
        assert type(looptoken.get_loop()) is uvloop.Loop


def test_auto_falls_back_to_asyncio_without_uvloop(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)
    settings.LOOPTOKEN = {"AUTOSTART": False, "BACKEND": "auto"}
    with looptoken.start_loop():
        assert type(looptoken.get_loop()) is asyncio.SelectorEventLoop


def test_dotted_path_backend_builds_the_loop(settings: Any) -> None:
    """A dotted-path BACKEND is called once per loop start (and once when the
    setting is validated), and its loop is the shared one."""
    settings.LOOPTOKEN = {
        "AUTOSTART": False,
        "BACKEND": "tests.loop_factories.counting_loop_factory",
    }
    with looptoken.start_loop():
        assert looptoken.get_loop() is loop_factories.created[-1]
        assert looptoken.get_loop().is_running()
    # A restart builds a fresh loop from the factory; the validation is not redone.
    before = len(loop_factories.created)
    with looptoken.start_loop():
        assert len(loop_factories.created) == before + 1
        assert looptoken.get_loop() is loop_factories.created[-1]


def test_backend_change_discards_the_unstarted_loop(settings: Any) -> None:
    """The loop get_loop() built while stopped does not outlive a BACKEND change.

    Otherwise a settings change (override_settings, the backend test matrix)
    would silently run the next start on the old backend's loop.
    """
    settings.LOOPTOKEN = {"AUTOSTART": False, "BACKEND": "asyncio"}
    assert type(looptoken.get_loop()) is asyncio.SelectorEventLoop
    settings.LOOPTOKEN = {"AUTOSTART": False, "BACKEND": "uvloop"}
    with looptoken.start_loop():
        assert type(looptoken.get_loop()) is uvloop.Loop


# -- loop settings ----------------------------------------------------------------


def test_debug_off_by_default(backend: str) -> None:
    with looptoken.start_loop():
        assert looptoken.get_loop().get_debug() is False


def test_debug_setting_turns_on_debug_mode(backend: str, looptoken_settings: Any) -> None:
    looptoken_settings(DEBUG=True)
    with looptoken.start_loop():
        assert looptoken.get_loop().get_debug() is True


def test_slow_callback_duration_applied(backend: str, looptoken_settings: Any) -> None:
    looptoken_settings(SLOW_CALLBACK_DURATION=0.25)
    with looptoken.start_loop():
        assert looptoken.get_loop().slow_callback_duration == 0.25


def test_executor_max_workers_bounds_default_executor(
    backend: str, looptoken_settings: Any
) -> None:
    """Three blocking jobs on a 2-worker default executor never run 3 at once.

    The first two block until the test releases them; while they block, the
    third must not start. Without the bound the default executor starts a
    third thread for it at once.
    """
    looptoken_settings(EXECUTOR_MAX_WORKERS=2)
    lock = threading.Lock()
    release = threading.Event()
    active = 0
    max_active = 0
    thread_names: list[str] = []

    async def main() -> list[str]:
        nonlocal active, max_active
        loop = asyncio.get_running_loop()
        two_running = asyncio.Event()
        third_started = asyncio.Event()

        def job() -> str:
            nonlocal active, max_active
            with lock:
                active += 1
                max_active = max(max_active, active)
                thread_names.append(threading.current_thread().name)
                started = len(thread_names)
            if started == 2:
                loop.call_soon_threadsafe(two_running.set)
            if started == 3:
                loop.call_soon_threadsafe(third_started.set)
            try:
                assert release.wait(WAIT), "the test never released the jobs"
            finally:
                with lock:
                    active -= 1
            return threading.current_thread().name

        futures = [loop.run_in_executor(None, job) for _ in range(3)]
        try:
            await asyncio.wait_for(two_running.wait(), WAIT)
            # The third job must stay queued while both workers are busy.
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(third_started.wait(), 0.2)
        finally:
            release.set()
        return list(await asyncio.gather(*futures))

    with looptoken.start_loop():
        names = looptoken.await_(main(), timeout=30)

    assert max_active == 2
    assert len(names) == 3
    assert len(set(names)) == 2
    assert all(name.startswith("looptoken-executor") for name in names), names


# -- a full event loop on every backend ----------------------------------------


def test_timers(backend: str) -> None:
    async def main() -> tuple[float, float]:
        loop = asyncio.get_running_loop()
        fired = asyncio.Event()
        start = loop.time()
        loop.call_later(0.02, fired.set)
        await asyncio.wait_for(fired.wait(), WAIT)
        return start, loop.time()

    with looptoken.start_loop():
        start, end = looptoken.await_(main())
    assert end - start >= 0.015


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        line = await reader.readline()
        writer.write(b"echo:" + line)
        await writer.drain()
    finally:
        writer.close()
        await writer.wait_closed()


async def _round_trip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    try:
        writer.write(b"ping\n")
        await writer.drain()
        return await asyncio.wait_for(reader.readline(), WAIT)
    finally:
        writer.close()
        await writer.wait_closed()


def test_tcp_server_and_connection(backend: str) -> None:
    async def main() -> bytes:
        server = await asyncio.start_server(_echo, "127.0.0.1", 0)
        async with server:
            port = server.sockets[0].getsockname()[1]
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            return await _round_trip(reader, writer)

    with looptoken.start_loop():
        assert looptoken.await_(main(), timeout=30) == b"echo:ping\n"


def test_unix_socket_server_and_connection(backend: str, tmp_path: Path) -> None:
    path = str(tmp_path / "echo.sock")

    async def main() -> bytes:
        server = await asyncio.start_unix_server(_echo, path)
        async with server:
            reader, writer = await asyncio.open_unix_connection(path)
            return await _round_trip(reader, writer)

    with looptoken.start_loop():
        assert looptoken.await_(main(), timeout=30) == b"echo:ping\n"


def test_subprocess_from_the_loop_thread(backend: str) -> None:
    """Subprocesses work although the loop runs in a non-main thread."""

    async def main() -> tuple[bool, bytes, int]:
        on_main_thread = threading.current_thread() is threading.main_thread()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "print(42)", stdout=asyncio.subprocess.PIPE
        )
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), WAIT)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        assert proc.returncode is not None
        return on_main_thread, out, proc.returncode

    with looptoken.start_loop():
        on_main_thread, out, returncode = looptoken.await_(main(), timeout=30)
    assert on_main_thread is False
    assert out == b"42\n"
    assert returncode == 0


def test_run_in_executor_uses_another_thread(backend: str) -> None:
    async def main() -> tuple[int, int]:
        loop = asyncio.get_running_loop()
        worker = await loop.run_in_executor(None, threading.get_ident)
        return threading.get_ident(), worker

    with looptoken.start_loop():
        loop_thread, worker_thread = looptoken.await_(main(), timeout=30)
    assert worker_thread != loop_thread
    assert worker_thread != threading.get_ident()

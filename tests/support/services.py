"""Real servers for the recipes, each on a free 127.0.0.1 port and stopped
by its own pid: an aiohttp upstream, Debian's redis-server and a throwaway
PostgreSQL cluster (``make services`` installs the last two)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from aiohttp import web

from tests.support.processes import DEADLINE_S, free_port, stop_process, wait_until

INSTALL_HINT = "run 'make services' (as root it installs Debian's redis-server and postgresql)"


async def _weather(request: web.Request) -> web.Response:
    return web.json_response({"city": "Lyon", "temperature_c": 21})


async def _news(request: web.Request) -> web.Response:
    return web.json_response({"headlines": ["Loop tokens released", "Pools kept warm"]})


async def _slow(request: web.Request) -> web.Response:
    await asyncio.sleep(float(request.query.get("seconds", "1")))
    return web.json_response({"slow": True})


async def _peer(request: web.Request) -> web.Response:
    # The client's end of this TCP connection: a pooled client sends every
    # request from the same port.
    host, port = request.transport.get_extra_info("peername")[:2]  # type: ignore[union-attr]
    return web.json_response({"peer": f"{host}:{port}"})


async def _lines(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/plain"})
    await response.prepare(request)
    for number in range(1, int(request.query.get("count", "3")) + 1):
        await asyncio.sleep(float(request.query.get("delay", "0.01")))
        await response.write(f"line {number}\n".encode())
    await response.write_eof()
    return response


@contextmanager
def upstream() -> Iterator[str]:
    """An aiohttp server in its own thread and loop; yields its base URL.

    ``/weather`` and ``/news`` answer JSON at once, ``/slow?seconds=S`` after S seconds,
    ``/lines?count=N&delay=S`` streams ``line 1`` to ``line N``, one every S seconds,
    ``/peer`` the client's address and port (the same for requests on one connection).
    """
    ready: concurrent.futures.Future[tuple[str, asyncio.AbstractEventLoop, asyncio.Event]]
    ready = concurrent.futures.Future()

    async def serve() -> None:
        app = web.Application()
        app.router.add_get("/weather", _weather)
        app.router.add_get("/news", _news)
        app.router.add_get("/slow", _slow)
        app.router.add_get("/lines", _lines)
        app.router.add_get("/peer", _peer)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        stop = asyncio.Event()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        ready.set_result((url, asyncio.get_running_loop(), stop))
        try:
            await stop.wait()
        finally:
            await runner.cleanup()

    thread = threading.Thread(target=asyncio.run, args=(serve(),), name="docs-upstream")
    thread.start()
    url, loop, stop = ready.result(timeout=DEADLINE_S)
    try:
        yield url
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(DEADLINE_S)
        assert not thread.is_alive(), "the upstream thread did not stop"


def _wait_until_ready(
    ready: Callable[[], bool], process: subprocess.Popen[bytes], what: str, log: Path
) -> None:
    """Wait for ``ready()``; a server that exits first fails with its log."""

    def ready_or_exited() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}:\n{log.read_text()}")
        return ready()

    wait_until(ready_or_exited, f"{what} to be ready (log: {log})", interval_s=0.05)


def _redis_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


@contextmanager
def redis_server() -> Iterator[str]:
    """Debian's redis-server on a free port, nothing saved; yields ``redis://...``."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError(f"redis-server is not installed: {INSTALL_HINT}")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="docs-redis-") as tmp:
        log = Path(tmp) / "redis.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", tmp],
                stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        try:
            _wait_until_ready(lambda: _redis_answers(port), process, "redis-server", log)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            stop_process(process)


def _postgres_bin(name: str) -> str:
    # Debian keeps the server's programs out of PATH, one folder per major version.
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=_major)
    binary = found[-1] if found else shutil.which(name)
    if binary is None:
        raise RuntimeError(f"PostgreSQL's {name} is not installed: {INSTALL_HINT}")
    return binary


def _major(path: str) -> int:
    part = path.split("/")[4]
    return int(part) if part.isdigit() else 0


@contextmanager
def postgres_server() -> Iterator[str]:
    """A throwaway cluster (``initdb`` in a temp dir, trust auth, fsync off) on a
    free port; yields ``postgresql://app@127.0.0.1:PORT/postgres``.

    PostgreSQL refuses to run as root: as root it runs as the ``postgres``
    user Debian's package creates, in a temp dir given to that user.
    """
    as_user: dict[str, object] = {}
    if os.geteuid() == 0:
        as_user = {"user": "postgres", "group": "postgres", "extra_groups": []}
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="docs-postgres-") as tmp:
        if as_user:
            shutil.chown(tmp, "postgres", "postgres")
        data = Path(tmp) / "data"
        log = Path(tmp) / "postgres.log"
        subprocess.run(
            [_postgres_bin("initdb"), "-D", str(data), "-U", "app", "--auth=trust",
             "--no-sync", "-E", "UTF8"],
            check=True, capture_output=True, cwd=tmp, **as_user,  # type: ignore[arg-type]
        )  # fmt: skip
        with log.open("wb") as out:
            process = subprocess.Popen(
                [_postgres_bin("postgres"), "-D", str(data), "-k", tmp, "-p", str(port),
                 "-h", "127.0.0.1", "-F"],
                stdout=out, stderr=subprocess.STDOUT, cwd=tmp, **as_user,  # type: ignore[arg-type]
            )  # fmt: skip
        try:
            isready = [_postgres_bin("pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port)]
            _wait_until_ready(
                lambda: subprocess.run(isready, check=False).returncode == 0,
                process, "postgres", log,
            )  # fmt: skip
            yield f"postgresql://app@127.0.0.1:{port}/postgres"
        finally:
            stop_process(process, signal.SIGINT)  # PostgreSQL's "fast" shutdown

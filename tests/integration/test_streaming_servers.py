"""Async streaming responses under real WSGI servers: gunicorn gthread, waitress, runserver.

Each chunk leaves when it is made, a client that goes away closes the
generator on the loop and frees the request's tokens, a failing stream is
logged and its connection cut, and a 1 GB stream keeps a gthread worker's
RSS flat.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
import uuid

import httpx
import pytest

from tests.integration.test_gunicorn_requests import tokens_settle_at
from tests.support.processes import Launcher, Server, free_port, wait_for_server_exit

SETTINGS = "tests.integration.streaming_settings"
SERVERS = ["gunicorn-gthread", "waitress", "runserver"]


def _start(launcher: Launcher, name: str) -> Server:
    port = free_port()
    bind = f"127.0.0.1:{port}"
    command = {
        "gunicorn-gthread": [
            *(sys.executable, "-m", "gunicorn", "--bind", bind, "--worker-class", "gthread"),
            *("--workers", "1", "--threads", "4", "tests.wsgi:application"),
        ],
        "waitress": [
            *(sys.executable, "-m", "waitress", f"--listen={bind}", "--threads=4"),
            "tests.wsgi:application",
        ],
        "runserver": [sys.executable, "-m", "django", "runserver", "--noreload", bind],
    }[name]
    return launcher.launch(name, command, port=port, settings=SETTINGS)


@pytest.fixture(params=SERVERS)
def server(request: pytest.FixtureRequest, launcher: Launcher) -> Server:
    return _start(launcher, request.param)


def _name(server: Server) -> str:
    return server.stderr_path.name.rpartition("-")[0]  # the launcher's "<name>-<port>.err"


def _key() -> str:
    return uuid.uuid4().hex


def test_each_chunk_is_sent_before_the_next_is_made(client: httpx.Client) -> None:
    # Line n + 1 is only made once the client has line n and opens its gate:
    # a server that got the stream collected whole would never send line 0.
    key = _key()
    with client.stream("GET", f"stream/gated/{key}/") as response:
        lines = response.iter_lines()
        assert next(lines) == "line 0"
        client.get(f"stream/open/{key}/1/").raise_for_status()
        assert next(lines) == "line 1"
        client.get(f"stream/open/{key}/2/").raise_for_status()
        assert next(lines) == "line 2"
        assert list(lines) == []
    assert client.get(f"stream/closed/{key}/").json() == {"ended": True, "ended_by": "exhausted"}


def test_the_first_of_ten_chunks_arrives_long_before_the_last(
    client: httpx.Client, server: Server
) -> None:
    # Ten chunks, 0.1 s apart: streamed, the first arrives about 0.9 s before
    # the last; collected whole, they would all arrive together after 1 s.
    began = time.monotonic()
    arrivals = []
    with client.stream("GET", f"stream/ticks/{_key()}/?count=10&delay=0.1") as response:
        for chunk in response.iter_raw():
            arrivals.extend(time.monotonic() for _ in chunk.splitlines())
    assert len(arrivals) == 10
    first_chunk_s, spread_s = arrivals[0] - began, arrivals[-1] - arrivals[0]
    print(f"{_name(server)}: first chunk after {first_chunk_s:.3f} s")
    assert spread_s > 0.5, f"first chunk after {first_chunk_s:.3f} s, last {spread_s:.3f} s later"


def test_a_client_that_disconnects_closes_the_generator_and_frees_the_tokens(
    client: httpx.Client,
) -> None:
    baseline = tokens_settle_at(client, 2)  # the app's token and the asking request's
    assert baseline == 2
    key = _key()
    with (
        httpx.Client(base_url=client.base_url, timeout=30) as streamer,
        streamer.stream("GET", f"stream/ticks/{key}/?delay=0.05") as response,
    ):
        lines = response.iter_lines()
        assert [next(lines) for _ in range(3)] == ["tick 1", "tick 2", "tick 3"]
        left = time.monotonic()
    # Leaving the block closed the connection: the endless stream's next
    # writes fail, and the server closes the response.
    closed = client.get(f"stream/closed/{key}/?within=1").json()
    waited = time.monotonic() - left
    assert closed == {"ended": True, "ended_by": "closed"}, f"not closed after {waited:.2f} s"
    assert tokens_settle_at(client, 2) == 2


def test_a_stream_that_fails_is_logged_and_its_connection_cut(
    client: httpx.Client, server: Server
) -> None:
    received = b""
    with client.stream("GET", "stream/failing/") as response:
        assert response.status_code == 200  # sent with the first chunk
        try:
            for chunk in response.iter_raw():
                received += chunk
        except httpx.RemoteProtocolError:
            cut = True  # a chunked body that never ended
        else:
            # runserver ends every stream by closing the connection, so there
            # the end looks the same; the others send chunked bodies.
            cut = _name(server) == "runserver"
    assert received == b"line 0\nline 1\n"
    assert cut
    message = "The async stream of GET /stream/failing/ failed after its response began"
    wait_for_stderr(server, message)
    assert "ConnectionResetError: the upstream went away" in server.stderr()


def wait_for_stderr(server: Server, text: str, deadline_s: float = 10) -> None:
    """Until ``text`` is in the server's stderr (written after the connection was cut)."""
    deadline = time.monotonic() + deadline_s
    while text not in server.stderr():
        assert time.monotonic() < deadline, f"{text!r} not logged:\n{server.stderr()}"
        time.sleep(0.02)  # the log write is in another process: nothing to wait on but the file


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def test_a_1_gb_stream_keeps_a_gthread_workers_rss_flat(launcher: Launcher) -> None:
    server = _start(launcher, "gunicorn-gthread")
    with httpx.Client(base_url=server.url, timeout=60) as client:
        worker = client.get("stream/pid/").json()["pid"]
        samples: list[int] = []
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.05):  # a sampling interval, not synchronisation
                samples.append(_rss_kib(worker))

        sampler = threading.Thread(target=sample)
        received = 0
        before = _rss_kib(worker)
        sampler.start()
        try:
            with client.stream("GET", "stream/big/1024/") as response:
                for chunk in response.iter_raw():
                    received += len(chunk)
        finally:
            done.set()
            sampler.join(10)
    assert received == 1024 * 1024 * 1024
    growth_mib = (max(samples) - before) / 1024
    print(f"worker RSS {before / 1024:.0f} MiB, at most +{growth_mib:.1f} MiB over 1 GiB")
    assert len(samples) > 5  # sampled during the stream, not only at its end
    assert growth_mib < 32, f"the worker grew by {growth_mib:.0f} MiB"


def test_a_stream_open_at_shutdown_is_closed_by_the_loops_shutdown(launcher: Launcher) -> None:
    # waitress gives its threads 5 s on SIGTERM; the exit hook's drain then waits
    # SHUTDOWN_TIMEOUT (5 s here) for the stream's tokens and closes it.
    server = _start(launcher, "waitress")
    with (
        httpx.Client(base_url=server.url, timeout=60) as client,
        client.stream("GET", f"stream/ticks/{_key()}/?delay=0.2") as response,
    ):
        lines = response.iter_lines()
        assert next(lines) == "tick 1"
        server.process.send_signal(signal.SIGTERM)
        with pytest.raises(httpx.RemoteProtocolError):
            list(lines)  # cut, not ended: the client can tell
    assert wait_for_server_exit(server) == 0
    # The request's token and the stream's: waited for, then the loop stopped
    # under them. (Whether waitress's daemon thread still logs its call's
    # LoopStoppedError before the interpreter ends is a race, not asserted.)
    assert "Shutdown drain timed out with 2 token(s) held" in server.stderr()

"""Requests on the shared loop under a real gunicorn with gthread workers."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.support.processes import NOISE, ROOT, Launcher, Server, free_port, stop
from tests.testapp import debug_page, events
from tests.testapp import views as testapp_views

REQUESTS = "tests.integration.requests_settings"
# What tests.integration.requests_settings adds when asked through the environment.
ASYNC_ONLY_MIDDLEWARE = {"LOOPTOKEN_TEST_ASYNC_ONLY_MIDDLEWARE": "1"}
ASYNC_VIEWS_OFF = {"LOOPTOKEN_TEST_ASYNC_VIEWS": "off", **ASYNC_ONLY_MIDDLEWARE}
GTHREAD = ("--worker-class", "gthread", "--threads", "4")
# Not gunicorn's (it has no eventlet worker): eventlet's own WSGI server.
EVENTLET = ("eventlet",)


@contextmanager
def serve(workdir: Path, worker: tuple[str, ...] = GTHREAD, **env: str) -> Iterator[Server]:
    """gunicorn (1 ``worker``, by default gthread with 4 threads; or, for
    ``EVENTLET``, eventlet's own WSGI server) with the request tests'
    settings (and ``env``) on a fresh database in ``workdir``; stopped by
    its pid when the block ends."""
    settings = REQUESTS
    db = {"LOOPTOKEN_TEST_DB": str(workdir / "db.sqlite3"), **env}
    environment = {**os.environ, "DJANGO_SETTINGS_MODULE": settings, **db}
    migrate = [sys.executable, "-m", "django", "migrate", "--run-syncdb", "--noinput", "-v", "0"]
    done = subprocess.run(migrate, cwd=ROOT, env=environment, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    launcher = Launcher(workdir)
    try:
        if worker == EVENTLET:
            port = free_port()
            command = [sys.executable, "-m", "tests.integration.eventlet_server", str(port)]
            yield launcher.launch("eventlet", command, port=port, settings=settings, extra_env=db)
            return
        yield launcher.gunicorn(
            *worker,
            "--workers",
            "1",
            settings=settings,
            extra_env=db,
        )
    finally:
        launcher.stop_all()


# A token released only because it was garbage-collected was leaked first.
GC_RELEASE = "LoopToken was garbage-collected while held"


def assert_clean_exit(server: Server) -> None:
    """Stop the server; it exits 0, released every token itself, and its only
    tracebacks are Django's logged 500s."""
    assert stop(server) == 0
    stderr = server.stderr()
    assert GC_RELEASE not in stderr, stderr
    for noise in NOISE:
        if noise == "Traceback":
            # A view timeout's 500 shows two: the cancellation, then the TimeoutError.
            logged = stderr.count("Internal Server Error:") + stderr.count("direct cause")
            assert stderr.count(noise) == logged, stderr
        else:
            assert noise not in stderr, stderr


@contextmanager
def checked_server(
    factory: pytest.TempPathFactory, worker: tuple[str, ...] = GTHREAD, **env: str
) -> Iterator[Server]:
    """``serve`` in a fresh directory; when the block ends, ``assert_clean_exit``."""
    with serve(factory.mktemp("gunicorn"), worker, **env) as server:
        yield server
        assert_clean_exit(server)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server for the tests that only read from it (ASYNC_VIEWS on)."""
    with checked_server(tmp_path_factory) as server:
        yield server


def tokens_settle_at(client: httpx.Client, expected: int, deadline_s: float = 20) -> int:
    """Poll the token count (the asking request's own included) until it is
    ``expected``; return the last count seen."""
    deadline = time.monotonic() + deadline_s
    while True:
        tokens = int(client.get("tokens/").json()["tokens"])
        if tokens == expected or time.monotonic() > deadline:
            return tokens
        time.sleep(0.02)  # bounded by the deadline: the server closing the response is the event


def test_views_run_on_each_workers_shared_loop_with_one_pool_per_loop(
    gunicorn: Callable[..., Server],
) -> None:
    server = gunicorn("--worker-class", "gthread", "--workers", "2", "--threads", "4")
    with httpx.Client(base_url=server.url, timeout=10) as client, ThreadPoolExecutor(8) as pool:
        paths = ["where/plain/", "where/decorated/"] * 20
        answers = list(pool.map(lambda path: client.get(path).json(), paths))
    assert all(answer["on_shared_loop"] for answer in answers)
    by_pid: dict[int, set[tuple[int, int]]] = {}
    for answer in answers:
        by_pid.setdefault(answer["pid"], set()).add((answer["loop"], answer["pool"]))
    # One loop and one pool per worker process, shared by all its requests.
    assert all(len(loops_and_pools) == 1 for loops_and_pools in by_pid.values())
    assert stop(server) == 0
    for noise in NOISE:
        assert noise not in server.stderr()


def test_a_request_holds_a_token_beside_the_apps(gunicorn: Callable[..., Server]) -> None:
    server = gunicorn("--worker-class", "gthread", "--workers", "1", "--threads", "2")
    with httpx.Client(base_url=server.url, timeout=10) as client:
        # Once the readiness probe's request has let go of its token: the
        # app's and this request's.
        assert tokens_settle_at(client, 2) == 2
        assert client.get("tokens/").json() == {"held": True, "tokens": 2}
        # The previous request on this connection was closed before this one began.
        body = client.get("streaming/").text
    assert body == "2\n2\n2\n"  # the app's token and the streaming request's
    assert stop(server) == 0


# -- view styles ----------------------------------------------------------------


def test_each_async_view_style_runs_on_the_shared_loop(client: httpx.Client) -> None:
    plain = client.get("plain-async/")  # ASYNC_VIEWS
    assert plain.json() == {
        "on_shared_loop": True,
        "orm_thread": int(plain.headers["X-Request-Thread"]),
    }
    assert client.get("plain-async-class/").json() == {"on_shared_loop": True}
    decorated = client.get("async-function/")  # @runs_async
    assert decorated.json()["on_shared_loop"] is True
    assert decorated.json()["orm_thread"] == int(decorated.headers["X-Request-Thread"])
    assert client.get("async-class/").text == "class view on shared loop: True"


def test_runs_async_under_djangos_decorators(client: httpx.Client) -> None:
    # csrf_exempt and require_POST (CsrfViewMiddleware is on)
    assert client.get("post-only/").status_code == 405
    assert client.post("post-only/", data={"name": "x"}).text == "posted x"
    assert client.post("async-function/", data={"name": "x"}).status_code == 403
    # login_required
    refused = client.get("members-only/")
    assert refused.status_code == 302
    assert refused.headers["Location"] == "/accounts/login/?next=/members-only/"
    assert client.get("log-in/").text == "logged in"
    assert client.get("members-only/").text == "hello ada"
    # cache_page: the coroutine ran once, the second answer is the cached one
    first = client.get("cached/").text
    assert first.startswith("computed ")
    assert client.get("cached/").text == first


def test_with_async_views_off_only_runs_async_views_use_the_shared_loop(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    with (
        checked_server(tmp_path_factory, **ASYNC_VIEWS_OFF) as server,
        httpx.Client(base_url=server.url, timeout=30) as client,
    ):
        plain = client.get("plain-async/")
        assert plain.json()["on_shared_loop"] is False
        # asgiref's own hand-back still brings the ORM to the request thread.
        assert plain.json()["orm_thread"] == int(plain.headers["X-Request-Thread"])
        assert plain.headers["X-Middleware-On-Shared-Loop"] == "False"
        assert client.get("plain-async-class/").json() == {"on_shared_loop": False}
        decorated = client.get("async-function/")
        assert decorated.json()["on_shared_loop"] is True
        assert client.get("async-class/").text == "class view on shared loop: True"


def test_async_only_middleware_runs_on_the_shared_loop_with_the_views_under_it(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    with (
        checked_server(tmp_path_factory, **ASYNC_ONLY_MIDDLEWARE) as server,
        httpx.Client(base_url=server.url, timeout=30) as client,
    ):
        for path in ("plain-async/", "async-function/"):
            response = client.get(path)
            assert response.headers["X-Middleware-On-Shared-Loop"] == "True"
            assert response.json()["on_shared_loop"] is True
            assert response.json()["orm_thread"] == int(response.headers["X-Request-Thread"])


def test_the_pool_is_closed_at_shutdown_and_the_signals_are_sent(tmp_path: Path) -> None:
    with serve(tmp_path, LOOPTOKEN_TEST_EVENTS=str(tmp_path)) as server:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            answers = [
                client.get(path).json() for path in ["where/decorated/", "where/plain/"] * 3
            ]
        assert len({(a["pid"], a["loop"], a["pool"]) for a in answers}) == 1
        pid, loop, pool = answers[0]["pid"], answers[0]["loop"], answers[0]["pool"]
        log = events.log_path(tmp_path, pid)
        assert log.read_text().splitlines() == [f"loop_started {loop}"]
        assert stop(server) == 0
    assert log.read_text().splitlines() == [
        f"loop_started {loop}",
        f"loop_stopping {loop}",
        f"pool_closed {pool} {loop}",
        f"loop_stopped {loop}",
    ]
    for noise in NOISE:
        assert noise not in server.stderr()


# -- streaming ------------------------------------------------------------------


@contextmanager
def gate(client: httpx.Client) -> Iterator[str]:
    """A fresh gate key for a gated stream; the gate is open when the block ends,
    so that even a failing test leaves no server thread waiting on it."""
    key = uuid.uuid4().hex
    try:
        yield key
    finally:
        client.get(f"gate/{key}/")


def test_a_stream_holds_its_token_until_it_is_exhausted(
    server: Server, client: httpx.Client
) -> None:
    with (
        gate(client) as key,
        httpx.Client(base_url=server.url, timeout=30) as streamer,
        streamer.stream("GET", f"gated-stream/{key}/") as response,
    ):
        chunks = response.iter_lines()
        assert next(chunks) == "held True"
        # While it is open, its token counts beside the app's and the asker's.
        # (Polled: a request on another connection may still be letting go of its own.)
        assert tokens_settle_at(client, 3) == 3
        client.get(f"gate/{key}/")
        assert list(chunks) == ["held True"]  # to its last chunk
    assert tokens_settle_at(client, 2) == 2


def test_a_client_gone_mid_stream_leaves_no_token_behind(
    server: Server, client: httpx.Client
) -> None:
    # Leaving the block, the client hangs up first, then the gate opens: the
    # stream goes on into a closed connection, the write fails, gunicorn
    # closes the response, and the token goes with it.
    with (
        gate(client) as key,
        httpx.Client(base_url=server.url, timeout=30) as streamer,
        streamer.stream("GET", f"gated-stream/{key}/?then_kib=65536") as response,
    ):
        assert next(response.iter_lines()) == "held True"
        assert tokens_settle_at(client, 3) == 3
    assert tokens_settle_at(client, 2) == 2
    assert GC_RELEASE not in server.stderr()  # released by the close, not by the collector


def test_an_async_iterator_stream_runs_on_the_shared_loop_holding_its_token(
    client: httpx.Client,
) -> None:
    lines = [line.split() for line in client.get("async-streaming/").text.splitlines()]
    assert [(held, on_shared_loop) for held, _, on_shared_loop in lines] == [("True", "True")] * 3
    assert tokens_settle_at(client, 2) == 2


# -- errors ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "coroutine_function", "raising_line"),
    [
        (
            "failing/",
            testapp_views.failing.__wrapped__,  # type: ignore[attr-defined]
            'raise LookupError("raised in the coroutine")',
        ),
        (
            "plain-async-failing/",  # ASYNC_VIEWS
            testapp_views.plain_async_failing,
            'raise LookupError("raised in the plain async view")',
        ),
    ],
    ids=["runs_async", "ASYNC_VIEWS"],
)
def test_the_debug_500_page_shows_the_coroutines_own_frame(
    client: httpx.Client, path: str, coroutine_function: Callable[..., object], raising_line: str
) -> None:
    response = client.get(path)
    assert response.status_code == 500
    page = debug_page.page_text(response.content)
    assert f"LookupError at /{path}" in page
    assert raising_line in page
    line = debug_page.line_of(coroutine_function, raising_line)
    expected = (testapp_views.__file__, line, coroutine_function.__name__)
    assert debug_page.frames(response.content)[-1] == expected
    assert [f"/{path}", "LookupError"] in client.get("exceptions-seen/").json()["seen"]


def test_a_view_timeout_raises_in_the_request_thread_and_cancels_the_task(
    client: httpx.Client,
) -> None:
    response = client.get("too-slow/")
    assert response.status_code == 500
    assert "TimeoutError at /too-slow/" in debug_page.page_text(response.content)
    # Raised where the request thread waits, after the coroutine saw its cancellation.
    assert debug_page.frames(response.content)[-1][2] == "wait"
    assert client.get("cancelled/").json() == {"cancelled": True}
    assert ["/too-slow/", "TimeoutError"] in client.get("exceptions-seen/").json()["seen"]

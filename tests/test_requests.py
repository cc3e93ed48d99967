"""Requests on the shared loop: the middleware and @runs_async, via the test client."""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from asgiref.sync import iscoroutinefunction
from django.contrib.auth.models import User
from django.core.cache import cache
from django.test import Client
from django.views import View

import django_looptoken as looptoken
from django_looptoken._runtime import State, runtime
from tests.support.processes import ROOT, wait_until
from tests.testapp import debug_page, views
from tests.testapp.models import Item


@pytest.fixture
def client() -> Client:
    return Client()


def test_the_middleware_holds_a_token_for_the_request(client: Client) -> None:
    data = client.get("/tokens/").json()
    assert data == {"held": True, "tokens": 1}
    # Released when the response was closed: nothing else held the loop.
    assert runtime().state is State.STOPPED


def test_a_streaming_response_keeps_its_token_until_the_stream_is_done(client: Client) -> None:
    with looptoken.start_loop():
        response = client.get("/streaming/")
        assert runtime().current_run.tokens == 2  # type: ignore[union-attr]
        body = b"".join(response.streaming_content)  # type: ignore[attr-defined]
        assert body == b"2\n2\n2\n"  # the request's token held while streaming
        assert runtime().current_run.tokens == 1  # type: ignore[union-attr]


@pytest.mark.django_db  # closing a response sends request_finished: connections close
def test_a_stream_closed_before_its_end_releases_its_token(client: Client) -> None:
    with looptoken.start_loop():
        response = client.get("/streaming/")
        assert next(iter(response.streaming_content)) == b"2\n"  # type: ignore[attr-defined]
        response.close()  # as a WSGI server does when its client goes away
        assert runtime().current_run.tokens == 1  # type: ignore[union-attr]


@pytest.mark.django_db  # a request sends request_started: old connections are checked
def test_a_response_nobody_closed_gives_its_token_up_at_its_threads_next_request(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    with looptoken.start_loop(), caplog.at_level(logging.WARNING, logger="django_looptoken"):
        kept = client.get("/streaming/?unread=1")  # never read, never closed
        assert looptoken.status()["tokens"] == 2
        assert client.get("/tokens/").json() == {"held": True, "tokens": 2}
        assert looptoken.status()["tokens"] == 1  # the kept response's token is gone
        kept.close()  # late: nothing more happens
        assert looptoken.status()["tokens"] == 1
    (record,) = [r for r in caplog.records if "was never closed" in r.getMessage()]
    assert record.getMessage().startswith(
        "The response to GET /streaming/ was never closed; its loop token is released now, "
        "as its thread starts another request."
    )


def test_a_response_nobody_closed_gives_its_token_up_when_its_thread_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """As under ASGI, where each request's sync code runs in a thread of its own."""
    kept: list[Any] = []
    with looptoken.start_loop(), caplog.at_level(logging.WARNING, logger="django_looptoken"):
        serving = threading.Thread(target=lambda: kept.append(Client().get("/streaming/")))
        serving.start()
        serving.join(30)
        wait_until(lambda: looptoken.status()["tokens"] == 1, "the token to be given up")
    assert any(
        "GET /streaming/ was never closed" in r.getMessage()
        and r.getMessage().endswith(
            "as its thread ended. Whatever received it (the WSGI "
            "server, the test client, a client such as DRF's RequestsClient, code that kept "
            "it) must call response.close()."
        )
        for r in caplog.records
    )
    assert kept  # still referenced: the token went with the thread, not the response


UNCLOSED_AT_EXIT = """
import django
django.setup()
from django.test import Client
kept = Client().get("/streaming/")  # referenced, never read, never closed
print("ready", flush=True)
"""


def test_a_response_nobody_closed_does_not_hold_up_the_exit() -> None:
    """Under -W error::ResourceWarning, as DRF's suite runs: no garbage-collected
    token, and the exit does not wait SHUTDOWN_TIMEOUT (30 s) for the token."""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "PYTHONDEVMODE": "1"}
    began = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-W", "error::ResourceWarning", "-c", UNCLOSED_AT_EXIT],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    took = time.monotonic() - began
    assert done.returncode == 0, done.stderr
    assert done.stdout == "ready\n"
    assert took < 15, f"the exit took {took:.1f} s"  # the drain would wait 30 s
    assert "The response to GET /streaming/ was never closed" in done.stderr
    assert "as the process exits" in done.stderr
    assert "ResourceWarning" not in done.stderr
    assert "timed out" not in done.stderr


def test_an_async_iterator_stream_keeps_its_token_until_it_is_done(client: Client) -> None:
    with looptoken.start_loop():
        response = client.get("/async-streaming/")
        assert runtime().current_run.tokens == 2  # type: ignore[union-attr]
        # Iterated as a WSGI server does: chunk by chunk through iterate(),
        # on the shared loop, whose stream holds a token of its own meanwhile.
        body = b"".join(response)
        assert body == b"True 3 True\n" * 3
        assert runtime().current_run.tokens == 1  # type: ignore[union-attr]


def test_a_view_that_raises_releases_its_token(client: Client) -> None:
    with pytest.raises(LookupError, match="raised in the coroutine"):
        client.get("/failing/")
    assert runtime().state is State.STOPPED


@pytest.mark.django_db
def test_async_function_view_runs_on_the_shared_loop_with_the_orm_in_the_request_thread(
    client: Client,
) -> None:
    Item.objects.create(name="one")
    data = client.get("/async-function/").json()
    assert data == {"on_shared_loop": True, "orm_thread": threading.get_ident(), "count": 1}


def test_async_class_based_view(client: Client) -> None:
    response = client.get("/async-class/")
    assert response.content == b"class view on shared loop: True"


def test_django_sees_sync_views_with_their_metadata() -> None:
    for view in (views.async_function, views.async_class, views.too_slow):
        assert not iscoroutinefunction(view)
        assert not inspect.iscoroutinefunction(view)
    assert views.async_function.__name__ == "async_function"
    assert views.async_function.__doc__ is not None
    assert "shared loop" in views.async_function.__doc__
    assert views.async_class.view_class is views.AsyncClassView  # type: ignore[attr-defined]


def test_a_view_timeout_raises_in_the_request_thread_and_cancels_the_task(
    client: Client,
) -> None:
    views.cancelled.clear()
    with pytest.raises(TimeoutError):
        client.get("/too-slow/")
    assert views.cancelled.is_set()


def test_the_coroutines_exception_reaches_django_with_its_frames(client: Client) -> None:
    client.raise_request_exception = False
    response = client.get("/failing/")
    assert response.status_code == 500
    error = response.exc_info[1]  # type: ignore[attr-defined]
    assert isinstance(error, LookupError)
    frames = []
    tb = error.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame.f_code.co_name)
        tb = tb.tb_next
    assert "failing" in frames


@pytest.mark.parametrize(
    ("path", "coroutine_function", "raising_line"),
    [
        ("/failing/", views.failing.__wrapped__, 'raise LookupError("raised in the coroutine")'),
        (
            "/plain-async-failing/",  # ASYNC_VIEWS
            views.plain_async_failing,
            'raise LookupError("raised in the plain async view")',
        ),
    ],
    ids=["runs_async", "ASYNC_VIEWS"],
)
def test_the_debug_500_page_shows_the_coroutines_own_frame(
    settings: Any, path: str, coroutine_function: Callable[..., Any], raising_line: str
) -> None:
    settings.DEBUG = True
    response = Client(raise_request_exception=False).get(path)
    assert response.status_code == 500
    page = debug_page.page_text(response.content)
    assert f"LookupError at {path}" in page
    assert raising_line in page
    # The innermost frame is the async def's own, at the line that raised.
    line = debug_page.line_of(coroutine_function, raising_line)
    expected = (views.__file__, line, coroutine_function.__name__)
    assert debug_page.frames(response.content)[-1] == expected


@pytest.mark.parametrize(
    ("path", "error_type"),
    [
        ("/failing/", LookupError),
        ("/too-slow/", TimeoutError),
        ("/plain-async-failing/", LookupError),  # ASYNC_VIEWS
    ],
)
def test_process_exception_middleware_sees_the_coroutines_exception(
    settings: Any, path: str, error_type: type[BaseException]
) -> None:
    settings.MIDDLEWARE = [*settings.MIDDLEWARE, "tests.testapp.views.RecordsExceptions"]
    views.exceptions_seen.clear()
    response = Client(raise_request_exception=False).get(path)
    assert response.status_code == 500
    error = response.exc_info[1]  # type: ignore[attr-defined]
    assert type(error) is error_type
    assert views.exceptions_seen == [(path, error)]


def test_default_timeout_applies_to_a_view_without_its_own(looptoken_settings: Any) -> None:
    cancelled = threading.Event()

    @looptoken.runs_async
    async def slow() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    looptoken_settings(DEFAULT_TIMEOUT=0.05)  # read at each call, not at decoration
    with pytest.raises(TimeoutError, match=r"within 0\.05 s"):
        slow()
    assert cancelled.is_set()


def test_stacked_under_csrf_exempt_and_require_post(client: Client, settings: Any) -> None:
    settings.MIDDLEWARE = ["django.middleware.csrf.CsrfViewMiddleware", *settings.MIDDLEWARE]
    csrf_checked = Client(enforce_csrf_checks=True)
    assert client.get("/post-only/").status_code == 405
    assert csrf_checked.post("/post-only/", {"name": "x"}).content == b"posted x"
    # Without csrf_exempt the same POST is refused.
    assert csrf_checked.post("/async-function/", {"name": "x"}).status_code == 403


@pytest.mark.django_db
def test_stacked_under_login_required(client: Client) -> None:
    assert client.get("/members-only/").status_code == 302
    user = User.objects.create_user("ada", password="pw")
    client.force_login(user)
    assert client.get("/members-only/").content == b"hello ada"


def test_stacked_under_cache_page(client: Client) -> None:
    cache.clear()
    views.calls["cached"] = 0
    assert client.get("/cached/").content == b"computed 1 time(s)"
    assert client.get("/cached/").content == b"computed 1 time(s)"
    assert views.calls["cached"] == 1


def _sync_view(request: Any) -> None:
    pass


async def _async_generator(request: Any) -> Any:
    yield None


class _SyncClassView(View):
    def get(self, request: Any) -> None:
        pass


@pytest.mark.parametrize(
    "not_async",
    [_sync_view, _SyncClassView.as_view(), _async_generator, "a string"],
    ids=["sync function", "sync class-based view", "async generator", "not callable"],
)
def test_runs_async_rejects_a_non_coroutine_function_at_decoration(not_async: Any) -> None:
    with pytest.raises(TypeError, match="not a coroutine function"):
        looptoken.runs_async(not_async)
    with pytest.raises(TypeError, match="not a coroutine function"):
        looptoken.runs_async(timeout=5)(not_async)


def test_runs_async_turns_any_coroutine_function_into_a_sync_one() -> None:
    @looptoken.runs_async(timeout=5)
    async def add(a: int, b: int) -> int:
        await asyncio.sleep(0)
        return a + b

    assert add(2, 3) == 5
    assert add.__name__ == "add"

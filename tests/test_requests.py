"""Requests on the shared loop: the middleware and @runs_async, via the test client."""

from __future__ import annotations

import asyncio
import inspect
import threading
from typing import Any

import pytest
from asgiref.sync import iscoroutinefunction
from django.contrib.auth.models import User
from django.core.cache import cache
from django.test import Client

import django_looptoken as looptoken
from django_looptoken._runtime import State, runtime
from tests.testapp import views
from tests.testapp.models import Item

pytestmark = pytest.mark.usefixtures("backend")


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


def test_stacked_under_csrf_exempt_and_require_post(client: Client) -> None:
    assert client.get("/post-only/").status_code == 405
    response = Client(enforce_csrf_checks=True).post("/post-only/", {"name": "x"})
    assert response.content == b"posted x"


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


def test_runs_async_rejects_a_sync_function() -> None:
    def sync_view(request: Any) -> None:
        pass

    with pytest.raises(TypeError, match="not a coroutine function"):
        looptoken.runs_async(sync_view)  # type: ignore[arg-type]


def test_runs_async_turns_any_coroutine_function_into_a_sync_one() -> None:
    @looptoken.runs_async(timeout=5)
    async def add(a: int, b: int) -> int:
        await asyncio.sleep(0)
        return a + b

    assert add(2, 3) == 5
    assert add.__name__ == "add"

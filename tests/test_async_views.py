"""ASYNC_VIEWS: Django's own async views under WSGI run on the shared loop."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from asgiref.sync import SyncToAsync, async_to_sync
from django.core.checks import run_checks
from django.core.signals import request_started
from django.test import AsyncClient, Client

import django_looptoken as looptoken
from django_looptoken import _async_views
from django_looptoken._runtime import State, runtime
from tests.testapp.models import Item

ASYNC_MIDDLEWARE = "tests.testapp.views.AsyncOnlyMiddleware"


@pytest.fixture(autouse=True)
def fresh_probe() -> Iterator[None]:
    """Each test probes asgiref afresh and leaves no loop noted in this thread."""
    _async_views.hook_works.cache_clear()
    yield
    _async_views.hook_works.cache_clear()
    if hasattr(SyncToAsync.threadlocal, "main_event_loop"):
        del SyncToAsync.threadlocal.main_event_loop


def test_a_plain_async_view_runs_on_the_shared_loop() -> None:
    data = Client().get("/plain-async/").json()
    assert data == {"on_shared_loop": True, "orm_thread": threading.get_ident()}


def test_an_async_class_based_view_runs_on_the_shared_loop() -> None:
    assert Client().get("/plain-async-class/").json() == {"on_shared_loop": True}


def test_async_only_middleware_runs_on_the_shared_loop(settings: Any) -> None:
    settings.MIDDLEWARE = [*settings.MIDDLEWARE, ASYNC_MIDDLEWARE]
    response = Client().get("/tokens/")
    assert response["X-Middleware-On-Shared-Loop"] == "True"


def _receiver_connected() -> bool:
    return any(key[0] == _async_views._RECEIVER_UID for key, *_ in request_started.receivers)


async def _running_loop() -> asyncio.AbstractEventLoop:
    return asyncio.get_running_loop()


def _async_to_sync_runs_on_the_shared_loop() -> bool:
    """Where ``async_to_sync`` runs a coroutine from this thread, now."""
    return bool(async_to_sync(_running_loop)() is looptoken.get_loop())


def test_where_the_middleware_routes_each_request_no_receiver_is_left() -> None:
    with looptoken.start_loop():
        for _ in range(2):  # each request routes the thread afresh, and un-routes it
            assert Client().get("/plain-async/").json()["on_shared_loop"] is True
            assert not _async_to_sync_runs_on_the_shared_loop()
    assert not _receiver_connected()


def test_async_only_middleware_above_the_apps_is_routed_by_the_receiver(settings: Any) -> None:
    settings.MIDDLEWARE = [ASYNC_MIDDLEWARE, *settings.MIDDLEWARE]
    with looptoken.start_loop():  # running before the request, as with AUTOSTART
        for _ in range(2):  # the receiver routes before the async middleware runs
            assert Client().get("/tokens/")["X-Middleware-On-Shared-Loop"] == "True"
            assert _receiver_connected()
            assert not _async_to_sync_runs_on_the_shared_loop()


def test_after_a_request_async_to_sync_in_its_thread_runs_as_without_the_app() -> None:
    """The reproduction: a coroutine that blocks until the shared loop answers
    deadlocks if a request left ``async_to_sync`` pointed at the shared loop."""

    async def asks_the_shared_loop() -> asyncio.AbstractEventLoop:
        shared = asyncio.run_coroutine_threadsafe(_running_loop(), looptoken.get_loop())
        return shared.result(timeout=5)  # noqa: ASYNC - blocking is the point

    with looptoken.start_loop():
        assert Client().get("/plain-async/").json()["on_shared_loop"] is True
        assert async_to_sync(asks_the_shared_loop)() is looptoken.get_loop()


def test_a_request_that_raises_leaves_no_routing() -> None:
    with looptoken.start_loop():
        with pytest.raises(LookupError):
            Client().get("/failing/")
        assert not _async_to_sync_runs_on_the_shared_loop()


def test_a_streaming_response_keeps_the_routing_until_it_is_closed() -> None:
    with looptoken.start_loop():
        response = Client().get("/streaming/")
        assert _async_to_sync_runs_on_the_shared_loop()  # the body is not sent yet
        assert b"".join(response.streaming_content)  # type: ignore[attr-defined]
        assert not _async_to_sync_runs_on_the_shared_loop()  # sent, closed, restored


def test_a_loop_asgiref_noted_before_the_request_is_put_back() -> None:
    own = asyncio.new_event_loop()
    SyncToAsync.threadlocal.main_event_loop = own
    try:
        with looptoken.start_loop():
            assert Client().get("/plain-async/").json()["on_shared_loop"] is True
        assert SyncToAsync.threadlocal.main_event_loop is own
    finally:
        own.close()


def test_with_async_views_off_django_uses_a_loop_of_its_own(
    looptoken_settings: Any, settings: Any
) -> None:
    looptoken_settings(ASYNC_VIEWS=False)
    settings.MIDDLEWARE = [*settings.MIDDLEWARE, ASYNC_MIDDLEWARE]
    response = Client().get("/plain-async/")
    assert response.json()["on_shared_loop"] is False
    assert response["X-Middleware-On-Shared-Loop"] == "False"
    # asgiref's own hand-back still brings the ORM to the request thread.
    assert response.json()["orm_thread"] == threading.get_ident()


def test_under_asgi_nothing_changes() -> None:
    async def request() -> Any:
        response = await AsyncClient().get("/plain-async/")
        return response.json()

    assert asyncio.run(request())["on_shared_loop"] is False


def test_exceptions_reach_django_as_without_the_app() -> None:
    client = Client(raise_request_exception=False)
    response = client.get("/failing/")
    assert response.status_code == 500
    assert isinstance(response.exc_info[1], LookupError)  # type: ignore[attr-defined]


@pytest.mark.django_db(transaction=True)
def test_atomic_requests_roll_back_the_async_orm_calls_of_a_runs_async_view(
    settings: Any,
) -> None:
    settings.DATABASES["default"]["ATOMIC_REQUESTS"] = True
    try:
        with pytest.raises(ValueError, match="after the insert"):
            Client().get("/create-then-fail/")
    finally:
        settings.DATABASES["default"]["ATOMIC_REQUESTS"] = False
    assert not Item.objects.filter(name="rolled back").exists()


def test_if_asgiref_stops_allowing_it_django_behaves_as_without_the_app(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Simulate an asgiref whose async_to_sync ignores the noted loop: the live
    probe (at the first request) finds it, and the check then reports it."""
    monkeypatch.setattr(SyncToAsync, "threadlocal", _IgnoresWrites())
    response = Client().get("/plain-async/")
    assert response.status_code == 200
    assert response.json()["on_shared_loop"] is False
    warnings = [m for m in run_checks() if m.id == "looptoken.W003"]
    assert len(warnings) == 1


class _IgnoresWrites(threading.local):
    def __setattr__(self, name: str, value: object) -> None:
        pass


def test_a_request_while_the_loop_stops_runs_on_a_loop_of_its_own(settings: Any) -> None:
    """Without the middleware no token holds the loop for the request: one that
    starts while the loop stops must not be routed to the stopping loop."""
    settings.MIDDLEWARE = [m for m in settings.MIDDLEWARE if not m.startswith("django_looptoken")]
    release = threading.Event()

    async def hold_the_stop_open() -> None:
        await asyncio.get_running_loop().run_in_executor(None, release.wait, 30)

    token = looptoken.start_loop()
    stopper = threading.Thread(target=token.release, name="stopper")
    try:
        assert Client().get("/plain-async/").json()["on_shared_loop"] is True  # routed
        looptoken.spawn(looptoken.shutdown_waits_for(hold_the_stop_open()))
        stopper.start()
        deadline = time.monotonic() + 30
        while runtime().state is not State.STOPPING:
            assert time.monotonic() < deadline, "the loop never began to stop"
            time.sleep(0.001)
        response = Client().get("/plain-async/")
        assert response.json() == {"on_shared_loop": False, "orm_thread": threading.get_ident()}
    finally:
        release.set()
        if stopper.ident is not None:  # started
            stopper.join(30)
        token.release()
    assert not stopper.is_alive()

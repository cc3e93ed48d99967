"""Views for the request-integration tests."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

from asgiref.sync import markcoroutinefunction, sync_to_async
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.views import View
from django.views.decorators.cache import cache_page
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

import django_looptoken as looptoken
from tests.testapp.models import Item

# Set by the timeout view's coroutine when it is cancelled.
cancelled = threading.Event()


def tokens_held() -> int:
    """Tokens held on the shared loop now, as ``status()`` counts them."""
    return int(looptoken.status()["tokens"])


def token_count(request: HttpRequest) -> JsonResponse:
    """What the middleware gave this request."""
    token = getattr(request, "looptoken", None)
    return JsonResponse({"held": bool(token and token.held), "tokens": tokens_held()})


def streaming(request: HttpRequest) -> StreamingHttpResponse:
    """A stream whose chunks report the token count while it is sent."""

    def chunks() -> Iterator[bytes]:
        for _ in range(3):
            yield f"{tokens_held()}\n".encode()

    return StreamingHttpResponse(chunks())


@looptoken.runs_async
async def async_function(request: HttpRequest) -> JsonResponse:
    """An async def view run on the shared loop, with the ORM in the request thread."""
    orm_thread = await sync_to_async(threading.get_ident)()
    count = await Item.objects.acount()
    return JsonResponse(
        {
            "on_shared_loop": asyncio.get_running_loop() is looptoken.get_loop(),
            "orm_thread": orm_thread,
            "count": count,
        }
    )


class AsyncClassView(View):
    """An async class-based view."""

    async def get(self, request: HttpRequest) -> HttpResponse:
        await asyncio.sleep(0)
        return HttpResponse(
            f"class view on shared loop: {asyncio.get_running_loop() is looptoken.get_loop()}"
        )


async_class = looptoken.runs_async(AsyncClassView.as_view())


@looptoken.runs_async(timeout=0.05)
async def too_slow(request: HttpRequest) -> HttpResponse:
    """Times out: the coroutine is cancelled on the loop."""
    try:
        await asyncio.sleep(60)
    except asyncio.CancelledError:
        cancelled.set()
        raise
    return HttpResponse("never")


@looptoken.runs_async
async def failing(request: HttpRequest) -> HttpResponse:
    """Raises from inside the coroutine."""
    await asyncio.sleep(0)
    raise LookupError("raised in the coroutine")


@csrf_exempt
@require_POST
@looptoken.runs_async
async def post_only(request: HttpRequest) -> HttpResponse:
    """Stacked under Django's own decorators."""
    await asyncio.sleep(0)
    return HttpResponse(f"posted {request.POST['name']}")


@login_required
@looptoken.runs_async
async def members_only(request: HttpRequest) -> HttpResponse:
    """Behind login_required."""
    await asyncio.sleep(0)
    return HttpResponse(f"hello {request.user.get_username()}")


calls = {"cached": 0}


@cache_page(60)
@looptoken.runs_async
async def cached(request: HttpRequest) -> HttpResponse:
    """Behind cache_page: the coroutine runs once."""
    calls["cached"] += 1
    await asyncio.sleep(0)
    return HttpResponse(f"computed {calls['cached']} time(s)")


async def plain_async(request: HttpRequest) -> JsonResponse:
    """A plain async def view: Django runs it through async_to_sync under WSGI."""
    orm_thread = await sync_to_async(threading.get_ident)()
    return JsonResponse(
        {
            "on_shared_loop": asyncio.get_running_loop() is looptoken.get_loop(),
            "orm_thread": orm_thread,
        }
    )


class PlainAsyncClassView(View):
    """An async class-based view without any decorator."""

    async def get(self, request: HttpRequest) -> JsonResponse:
        return JsonResponse({"on_shared_loop": asyncio.get_running_loop() is looptoken.get_loop()})


@looptoken.runs_async
async def create_then_fail(request: HttpRequest) -> HttpResponse:
    """Creates a row, then fails: ATOMIC_REQUESTS must roll the row back."""
    await Item.objects.acreate(name="rolled back")
    raise ValueError("after the insert")


async def plain_async_failing(request: HttpRequest) -> HttpResponse:
    """A plain async view (ASYNC_VIEWS) that raises from inside its coroutine."""
    await asyncio.sleep(0)
    raise LookupError("raised in the plain async view")


def async_streaming(request: HttpRequest) -> StreamingHttpResponse:
    """A stream from an async iterator: Django consumes it with async_to_sync under WSGI."""

    token = request.looptoken  # type: ignore[attr-defined]

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(3):
            await asyncio.sleep(0)
            on_shared_loop = asyncio.get_running_loop() is looptoken.get_loop()
            yield f"{token.held} {tokens_held()} {on_shared_loop}\n".encode()

    return StreamingHttpResponse(chunks())


# (path, exception) for every exception process_exception middleware saw.
exceptions_seen: list[tuple[str, BaseException]] = []


class RecordsExceptions:
    """Sync middleware whose process_exception notes what reached it."""

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response: HttpResponse = self.get_response(request)
        return response

    def process_exception(self, request: HttpRequest, exception: BaseException) -> None:
        """Note the exception; Django's normal handling goes on (returns None)."""
        exceptions_seen.append((request.path, exception))


class AsyncOnlyMiddleware:
    """Async-only middleware: Django adapts it with async_to_sync under WSGI."""

    sync_capable = False
    async_capable = True

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response
        markcoroutinefunction(self)  # as Django's docs ask of async middleware classes

    async def __call__(self, request: HttpRequest) -> HttpResponse:
        response: HttpResponse = await self.get_response(request)
        response["X-Middleware-On-Shared-Loop"] = str(
            asyncio.get_running_loop() is looptoken.get_loop()
        )
        return response

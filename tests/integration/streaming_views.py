"""Streaming views (and their URLs) served by the streaming tests.

Each stream is named by a ``key`` in its URL; ``closed/<key>/`` waits on the
shared loop until that stream's generator has run its ``finally``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator

from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.urls import path

import django_looptoken as looptoken
from tests.urls import urlpatterns as test_urlpatterns

CHUNK = 64 * 1024


class Stream:
    """One stream's gates (one per chunk after the first) and its end."""

    def __init__(self) -> None:
        self.gates: dict[int, asyncio.Event] = {}
        self.ended = asyncio.Event()
        self.ended_by = ""

    def gate(self, number: int) -> asyncio.Event:
        return self.gates.setdefault(number, asyncio.Event())


# Touched on the shared loop only (every view below runs there).
streams: dict[str, Stream] = {}


def _stream(key: str) -> Stream:
    return streams.setdefault(key, Stream())


async def _watched(stream: Stream, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """``chunks``, noting how the generator ended once its ``finally`` runs."""
    stream.ended_by = "closed"
    try:
        async for chunk in chunks:
            yield chunk
        stream.ended_by = "exhausted"
    except asyncio.CancelledError:
        stream.ended_by = "cancelled"
        raise
    finally:
        stream.ended.set()


async def ticks(request: HttpRequest, key: str) -> StreamingHttpResponse:
    """``count`` lines (endless without it), ``delay`` seconds before each."""
    count = int(request.GET.get("count", "0")) or None
    delay = float(request.GET.get("delay", "0.1"))

    async def lines() -> AsyncIterator[bytes]:
        number = 0
        while count is None or number < count:
            await asyncio.sleep(delay)
            number += 1
            yield f"tick {number}\n".encode()

    return StreamingHttpResponse(_watched(_stream(key), lines()), content_type="text/plain")


async def gated(request: HttpRequest, key: str) -> StreamingHttpResponse:
    """Three lines; each after the first only once ``open/<key>/<n>/`` opened its gate."""
    stream = _stream(key)

    async def lines() -> AsyncIterator[bytes]:
        for number in range(3):
            if number:
                await stream.gate(number).wait()
            yield f"line {number}\n".encode()

    return StreamingHttpResponse(_watched(stream, lines()), content_type="text/plain")


async def open_gate(request: HttpRequest, key: str, number: int) -> HttpResponse:
    """Let the gated stream ``key`` make line ``number``."""
    _stream(key).gate(number).set()
    return HttpResponse("open")


async def failing(request: HttpRequest) -> StreamingHttpResponse:
    """Two lines, then the upstream fails."""

    async def lines() -> AsyncIterator[bytes]:
        yield b"line 0\n"
        yield b"line 1\n"
        raise ConnectionResetError("the upstream went away")

    return StreamingHttpResponse(lines(), content_type="text/plain")


async def big(request: HttpRequest, mib: int) -> StreamingHttpResponse:
    """``mib`` MiB in fresh 64 KiB chunks (each made anew, as a relay's would be)."""

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(mib * 1024 * 1024 // CHUNK):
            await asyncio.sleep(0)
            # Written, not bytes(CHUNK): zeros from calloc would never become resident.
            yield b"x" * CHUNK

    return StreamingHttpResponse(chunks(), content_type="application/octet-stream")


async def closed(request: HttpRequest, key: str) -> JsonResponse:
    """Wait up to ``within`` seconds for stream ``key``'s ``finally``; say how it ended."""
    stream = _stream(key)
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(stream.ended.wait(), float(request.GET.get("within", "10")))
    return JsonResponse({"ended": stream.ended.is_set(), "ended_by": stream.ended_by})


def pid(request: HttpRequest) -> JsonResponse:
    """The serving process, for its RSS."""
    return JsonResponse({"pid": os.getpid(), "loop": looptoken.status()["state"]})


urlpatterns = [
    *test_urlpatterns,
    path("stream/ticks/<str:key>/", ticks),
    path("stream/gated/<str:key>/", gated),
    path("stream/open/<str:key>/<int:number>/", open_gate),
    path("stream/failing/", failing),
    path("stream/big/<int:mib>/", big),
    path("stream/closed/<str:key>/", closed),
    path("stream/pid/", pid),
]

"""The dashboard's pages, each a different way to run async code from Django under WSGI.

* ``dashboard``: ``@runs_async``, all upstreams at once with ``asyncio.gather``.
* ``sequential``: a plain sync view calling ``looptoken.await_`` per upstream.
* ``activity``: ``@runs_async`` with Django's async ORM (async iteration,
  ``acount``, ``aaggregate``).
* ``async_view``: a plain ``async def`` view, which ``ASYNC_VIEWS`` runs on
  the shared loop.
* ``stream`` and ``ticker_events``: server-sent events relayed from the
  upstream's streamed ticker, each sent the moment it arrives (the app's
  middleware streams async responses chunk by chunk under WSGI).

Both dashboard pages write an audit row after the response, in a background
task the shutdown sequence waits for: ``spawn(shutdown_waits_for(...))``.
The views return ``TemplateResponse``: Django renders it in the request
thread after the view, so templates never run on (or block) the loop.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
from django.db.models import Avg
from django.http import HttpRequest, StreamingHttpResponse
from django.template.response import TemplateResponse

import django_looptoken as looptoken
from dashboard.models import AuditEntry, Panel
from dashboard.upstreams import PoolInfo, Reading, pool_info, read, upstream

# The waterfall's full width, in seconds: the same scale on both pages, so
# their bars compare at a glance (a slower page widens its own scale).
WATERFALL_S = 1.6


@dataclass
class Bar:
    """One bar of the waterfall, in percent of its width."""

    left: float
    width: float


def waterfall(readings: list[Reading], elapsed_s: float) -> list[tuple[Reading, Bar]]:
    """Each reading with its bar: when it started and how long it took."""
    scale = max(WATERFALL_S, elapsed_s)
    return [(r, Bar(100 * r.started_s / scale, 100 * r.seconds / scale)) for r in readings]


def dashboard_page(
    request: HttpRequest,
    page: str,
    readings: list[Reading],
    started: float,
    pool: PoolInfo,
) -> TemplateResponse:
    """The dashboard with its timings; spawns the audit row's write."""
    elapsed_s = time.perf_counter() - started
    looptoken.spawn(
        looptoken.shutdown_waits_for(write_audit_row(page, elapsed_s, len(readings), pool.pid))
    )
    served = max((r.served for r in readings), key=lambda s: s.get("requests", 0), default={})
    context = {
        "page": page,
        "concurrent": page == AuditEntry.CONCURRENT,
        "readings": waterfall(readings, elapsed_s),
        "elapsed_s": elapsed_s,
        "calls_s": sum(r.seconds for r in readings),
        "pool": pool,
        "served": served,
        "total_bar": Bar(0, 100 * elapsed_s / max(WATERFALL_S, elapsed_s)),
    }
    return TemplateResponse(request, "dashboard/dashboard.html", context)


async def write_audit_row(page: str, elapsed_s: float, calls: int, pid: int) -> None:
    """Record a served dashboard page (runs after the response, in the background)."""
    await AuditEntry.objects.acreate(
        page=page, elapsed_ms=round(elapsed_s * 1000), upstream_calls=calls, pid=pid
    )


@looptoken.runs_async
async def dashboard(request: HttpRequest) -> TemplateResponse:
    """All panels' upstreams at once: the page takes about as long as the slowest."""
    started = time.perf_counter()
    panels = [panel async for panel in Panel.objects.all()]
    readings = await asyncio.gather(*(read(panel, started) for panel in panels))
    return dashboard_page(request, AuditEntry.CONCURRENT, readings, started, await pool_info())


def sequential(request: HttpRequest) -> TemplateResponse:
    """The same page from sync code, one upstream after another: the sum of them all."""
    started = time.perf_counter()
    panels = list(Panel.objects.all())
    readings = [looptoken.await_(read(panel, started)) for panel in panels]
    pool = looptoken.await_(pool_info())
    return dashboard_page(request, AuditEntry.SEQUENTIAL, readings, started, pool)


@looptoken.runs_async
async def activity(request: HttpRequest) -> TemplateResponse:
    """The panels (seed data) and the audit rows, read with the async ORM."""
    panels = [panel async for panel in Panel.objects.all()]
    averages = {}
    for page, label in AuditEntry.PAGES:
        rows = AuditEntry.objects.filter(page=page)
        averages[page] = {
            "label": label,
            "count": await rows.acount(),
            "avg_ms": (await rows.aaggregate(avg=Avg("elapsed_ms")))["avg"],
        }
    context = {
        "panels": panels,
        "averages": averages,
        "total": await AuditEntry.objects.acount(),
        "latest": [entry async for entry in AuditEntry.objects.all()[:15]],
    }
    return TemplateResponse(request, "dashboard/activity.html", context)


async def async_view(request: HttpRequest) -> TemplateResponse:
    """A plain ``async def`` view, no decorator: ``ASYNC_VIEWS`` runs it on the shared loop."""
    loop = asyncio.get_running_loop()
    panel = await Panel.objects.aget(slug="weather")
    reading = await read(panel, time.perf_counter())
    context = {
        "on_shared_loop": loop is looptoken.get_loop(),
        "thread": threading.current_thread().name,
        "pid": os.getpid(),
        "reading": reading,
        "pool": await pool_info(),
        "status": looptoken.status(),
    }
    return TemplateResponse(request, "dashboard/async_view.html", context)


def stream(request: HttpRequest) -> TemplateResponse:
    """The page whose script shows the ticker's events as they arrive."""
    count = request.GET.get("count", "20")  # how many ticks to ask the upstream for
    return TemplateResponse(request, "dashboard/stream.html", {"pid": os.getpid(), "count": count})


async def ticker_events(request: HttpRequest) -> StreamingHttpResponse:
    """The upstream's streamed ``/ticker``, relayed as server-sent events, line by line.

    The upstream request is opened here, on the shared loop, with the pooled
    client; the generator relays its lines and closes it when the stream ends
    or the browser goes away (the server then closes the response, and the
    generator's ``finally`` runs on the loop).
    """
    client = upstream.get()
    client.requests += 1
    count = request.GET.get("count", "20")
    try:
        source = await client.http.send(
            client.http.build_request("GET", "/ticker", params={"count": count}), stream=True
        )
        source.raise_for_status()
    except httpx.HTTPError as error:
        message = f"The upstream ticker is unavailable: {type(error).__name__}."
        return _events_response(_one_event("failed", message))

    async def events() -> AsyncIterator[str]:
        try:
            async for line in source.aiter_lines():
                if line:
                    yield f"event: tick\ndata: {line}\n\n"
            yield "event: done\ndata: {}\n\n"
        finally:
            await source.aclose()  # the pooled connection goes back to the pool

    return _events_response(events())


async def _one_event(name: str, data: str) -> AsyncIterator[str]:
    yield f"event: {name}\ndata: {data}\n\n"


def _events_response(events: AsyncIterator[str]) -> StreamingHttpResponse:
    response = StreamingHttpResponse(events, content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # a proxy in front (nginx) passes each event on
    return response

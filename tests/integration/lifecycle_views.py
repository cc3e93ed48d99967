"""Views that leave work on the loop for the shutdown tests to find.

Markers are files in ``$LOOPTOKEN_TEST_MARKERS``: the tests read what each
piece of work did (started, finished, saw its cancellation) after the server
has exited.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path

from asgiref.sync import sync_to_async
from django.http import HttpRequest, JsonResponse

import django_looptoken as looptoken
from django_looptoken._runtime import runtime


def mark(name: str) -> None:
    """Write marker ``name`` with this process's pid."""
    Path(os.environ["LOOPTOKEN_TEST_MARKERS"], name).write_text(str(os.getpid()))


@looptoken.runs_async
async def loop_here(request: HttpRequest) -> JsonResponse:
    """Which process, loop and loop thread serve this request (after holding it a moment)."""
    await asyncio.sleep(0.02)
    run = runtime().current_run
    assert run is not None
    assert run.thread is not None
    return JsonResponse(
        {
            "pid": os.getpid(),
            "loop": id(asyncio.get_running_loop()),
            "on_shared_loop": asyncio.get_running_loop() is looptoken.get_loop(),
            "loop_thread": run.thread.native_id,
            "on_loop_thread": threading.get_ident() == run.thread.ident,
        }
    )


async def finish_later(name: str, seconds: float) -> None:
    """Write marker ``done-<name>`` after ``seconds``."""
    await asyncio.sleep(seconds)
    mark(f"done-{name}")


@looptoken.runs_async
async def drain(request: HttpRequest, name: str) -> JsonResponse:
    """Leave protected work that writes its marker after 1 s (or ``?seconds=``);
    answer after 0.5 s."""
    mark(f"started-{name}")
    seconds = float(request.GET.get("seconds", "1"))
    looptoken.spawn(looptoken.shutdown_waits_for(finish_later(name, seconds)))
    await asyncio.sleep(0.5)
    return JsonResponse({"pid": os.getpid()})


def busy_then_finish(name: str, seconds: float) -> None:
    """Write marker ``busy-<name>``, then keep this thread busy (no wait) for
    ``seconds``, then write ``done-<name>``."""
    mark(f"busy-{name}")
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        pass
    mark(f"done-{name}")


async def busy_on_the_loop(name: str, seconds: float) -> None:
    busy_then_finish(name, seconds)


async def busy_in_the_executor(name: str, seconds: float) -> None:
    await asyncio.get_running_loop().run_in_executor(None, busy_then_finish, name, seconds)


def busy_protected(request: HttpRequest, name: str) -> JsonResponse:
    """Leave protected work that keeps the loop's thread busy for 2 s
    (``?seconds=``), or a thread of its executor (``?in=executor``)."""
    seconds = float(request.GET.get("seconds", "2"))
    work = busy_in_the_executor if request.GET.get("in") == "executor" else busy_on_the_loop
    looptoken.spawn(looptoken.shutdown_waits_for(work(name, seconds)))
    return JsonResponse({"pid": os.getpid()})


@looptoken.runs_async
async def spawn_sync(request: HttpRequest, calls: int) -> JsonResponse:
    """Spawn ``calls`` tasks that each make a thread-sensitive call; answer
    how many of them ran within 5 s."""
    ran: list[int] = []

    async def job() -> None:
        await sync_to_async(ran.append)(os.getpid())

    tasks = [looptoken.spawn(job()) for _ in range(calls)]
    await asyncio.wait([asyncio.wrap_future(task) for task in tasks], timeout=5)
    return JsonResponse({"pid": os.getpid(), "ran": len(ran)})


async def _wait_to_be_cancelled(started: asyncio.Event) -> None:
    started.set()
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        mark(f"cancelled-{os.getpid()}")
        raise


@looptoken.runs_async
async def unprotected(request: HttpRequest) -> JsonResponse:
    """Leave unprotected background work that would run for an hour."""
    started = asyncio.Event()
    looptoken.spawn(_wait_to_be_cancelled(started))
    await started.wait()
    return JsonResponse({"pid": os.getpid()})


async def sleep_for_an_hour(started: asyncio.Event) -> None:
    """Protected work that would outlive any shutdown timeout."""
    started.set()
    await asyncio.sleep(3600)


@looptoken.runs_async
async def stuck(request: HttpRequest) -> JsonResponse:
    """Leave protected work that the shutdown timeout must cut."""
    started = asyncio.Event()
    looptoken.spawn(looptoken.shutdown_waits_for(sleep_for_an_hour(started)))
    await started.wait()
    return JsonResponse({"pid": os.getpid()})


async def _refuse_to_stop(started: asyncio.Event) -> None:
    started.set()
    while True:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            mark(f"refused-{os.getpid()}")  # and keep running: a badly written task


@looptoken.runs_async
async def stubborn(request: HttpRequest) -> JsonResponse:
    """Leave a task that swallows every cancellation."""
    started = asyncio.Event()
    looptoken.spawn(_refuse_to_stop(started))
    await started.wait()
    return JsonResponse({"pid": os.getpid()})


def hang_the_exit(request: HttpRequest) -> JsonResponse:
    """Start a non-daemon thread that never ends, so this process cannot exit by itself."""
    threading.Thread(target=threading.Event().wait, name="never-ends", daemon=False).start()
    return JsonResponse({"pid": os.getpid()})

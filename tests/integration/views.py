"""Views served by the real-server tests."""

from __future__ import annotations

import asyncio
import concurrent.futures
import ctypes.util
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

from asgiref.sync import sync_to_async
from django.contrib.auth import login
from django.contrib.auth.models import User
from django.db import connection, transaction
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse

import django_looptoken as looptoken
from django_looptoken._status_socket import status_dir
from django_looptoken.conf import looptoken_settings
from tests.testapp import events
from tests.testapp import views as testapp_views
from tests.testapp.fds import database_fds
from tests.testapp.models import Item
from tests.testapp.views import tokens_held


class Pool:
    """Stands for a connection pool: one per loop, closed at shutdown."""

    async def aclose(self) -> None:
        """Note the close, with this pool's and its loop's ids."""
        events.record(f"pool_closed {id(self)} {id(asyncio.get_running_loop())}")


pool = looptoken.loop_resource(Pool, close="aclose")


def _where() -> dict[str, object]:
    return {
        "pid": os.getpid(),
        "loop": id(asyncio.get_running_loop()),
        "on_shared_loop": asyncio.get_running_loop() is looptoken.get_loop(),
        "tokens": tokens_held(),
        "pool": id(pool.get()),
    }


async def plain_async(request: HttpRequest) -> JsonResponse:
    """A plain async view, run through ASYNC_VIEWS."""
    await asyncio.sleep(0.01)
    return JsonResponse(_where())


@looptoken.runs_async
async def decorated(request: HttpRequest) -> JsonResponse:
    """A @runs_async view."""
    await asyncio.sleep(0.01)
    return JsonResponse(_where())


# -- request tests (tests/integration/test_gunicorn_requests.py, _orm.py) -------


class RequestThread:
    """Notes the request thread: ``request.thread_ident`` and ``X-Request-Thread``."""

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request.thread_ident = threading.get_ident()  # type: ignore[attr-defined]
        response: HttpResponse = self.get_response(request)
        response["X-Request-Thread"] = str(threading.get_ident())
        return response


class AtomicWhenAsked:
    """With an ``X-Atomic`` request header, runs the request in ``transaction.atomic()``
    and rolls it back if the response is a server error."""

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if "X-Atomic" not in request.headers:
            response: HttpResponse = self.get_response(request)
            return response
        with transaction.atomic():
            response = self.get_response(request)
            if response.status_code >= 500:
                transaction.set_rollback(True)
        return response


_lock = threading.Lock()
_gates: dict[str, threading.Event] = {}
_barriers: dict[str, threading.Barrier] = {}
GATE_SECONDS = BARRIER_SECONDS = 30.0  # bound a failing test's wait, never a passing one's


def _gate(key: str) -> threading.Event:
    with _lock:
        return _gates.setdefault(key, threading.Event())


def open_gate(request: HttpRequest, key: str) -> JsonResponse:
    """Let the gated stream ``key`` go on."""
    _gate(key).set()
    return JsonResponse({"opened": key})


def gated_stream(request: HttpRequest, key: str) -> StreamingHttpResponse:
    """Streams whether the request's token is held, waits for gate ``key``, then
    ``?then_kib=`` KiB and whether the token is held still."""
    then_kib = int(request.GET.get("then_kib", "0"))
    token = request.looptoken  # type: ignore[attr-defined]

    def chunks() -> Iterator[bytes]:
        yield f"held {token.held}\n".encode()
        if not _gate(key).wait(GATE_SECONDS):
            yield b"the gate never opened\n"
            return
        for _ in range(then_kib // 64):
            yield b"x" * 65536
        yield f"held {token.held}\n".encode()

    return StreamingHttpResponse(chunks())


def log_in(request: HttpRequest) -> HttpResponse:
    """Log this client in as ada."""
    user, _ = User.objects.get_or_create(username="ada")
    login(request, user)
    return HttpResponse("logged in")


def cancelled(request: HttpRequest) -> JsonResponse:
    """Whether the too-slow view's coroutine saw its cancellation."""
    return JsonResponse({"cancelled": testapp_views.cancelled.is_set()})


def exceptions_seen(request: HttpRequest) -> JsonResponse:
    """[path, exception type] for every exception process_exception saw."""
    seen = [[path, type(error).__name__] for path, error in testapp_views.exceptions_seen]
    return JsonResponse({"seen": seen})


def _orm_then_barrier(key: str) -> dict[str, int]:
    rows = Item.objects.count()
    with _lock:
        barrier = _barriers.setdefault(key, threading.Barrier(2, timeout=BARRIER_SECONDS))
    # Both requests' calls must be inside here at once: calls serialised on
    # one thread would break the barrier at its timeout.
    barrier.wait()
    return {"orm_thread": threading.get_ident(), "rows": rows}


@looptoken.runs_async
async def barrier_decorated(request: HttpRequest, key: str) -> JsonResponse:
    """A thread-sensitive ORM call that meets another request's at a barrier."""
    return JsonResponse(await sync_to_async(_orm_then_barrier)(key))


async def barrier_plain(request: HttpRequest, key: str) -> JsonResponse:
    """The same, as a plain async view (ASYNC_VIEWS)."""
    return JsonResponse(await sync_to_async(_orm_then_barrier)(key))


async def _create(request: HttpRequest, name: str) -> JsonResponse:
    await Item.objects.acreate(name=name)
    in_atomic_block = await sync_to_async(lambda: connection.in_atomic_block)()
    seen = await Item.objects.filter(name=name).acount()
    if "fail" in request.GET:
        raise ValueError(f"failed after creating {name}")
    return JsonResponse({"in_atomic_block": in_atomic_block, "seen": seen})


@transaction.atomic  # as ATOMIC_REQUESTS applies it
@looptoken.runs_async
async def create_decorated(request: HttpRequest, name: str) -> JsonResponse:
    """Creates item ``name`` inside a transaction; ``?fail`` then raises."""
    return await _create(request, name)


async def create_plain(request: HttpRequest, name: str) -> JsonResponse:
    """Creates item ``name`` (ASYNC_VIEWS); ``?fail`` then raises."""
    return await _create(request, name)


def count_items(request: HttpRequest, name: str) -> JsonResponse:
    """How many items are called ``name``, as committed."""
    return JsonResponse({"count": Item.objects.filter(name=name).count()})


def spawn_orm(request: HttpRequest, tasks: int) -> JsonResponse:
    """Spawns ``tasks`` tasks that each make a thread-sensitive ORM call; reports the
    real database connections before, during and after them, and their threads."""
    during: list[tuple[int, str]] = []

    def count_rows() -> None:
        Item.objects.count()
        during.append((database_fds(), threading.current_thread().name))

    async def job() -> None:
        await asyncio.sleep(0)  # all pending at once before the first call starts
        await sync_to_async(count_rows)()

    before = database_fds()
    futures = [looptoken.spawn(job()) for _ in range(tasks)]
    for future in concurrent.futures.as_completed(futures, timeout=60):
        future.result()
    return JsonResponse(
        {
            "before": before,
            "during": sorted({fds for fds, _ in during}),
            "threads": sorted({name for _, name in during}),
            "calls": len(during),
            "after": database_fds(),
        }
    )


# -- many requests waiting on the loop at once (tests/integration/test_gevent.py) --

_gathering: list[asyncio.Future[None]] = []  # touched on the loop thread only


@looptoken.runs_async
async def together(request: HttpRequest, count: int) -> JsonResponse:
    """Answer once ``count`` requests wait here at once: requests that waited
    for the loop one after another would never all be here, and time out."""
    arrived: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    _gathering.append(arrived)
    if len(_gathering) >= count:
        for waiting in _gathering:
            if not waiting.done():
                waiting.set_result(None)
        _gathering.clear()
    try:
        await asyncio.wait_for(arrived, BARRIER_SECONDS)
    except TimeoutError:
        return JsonResponse({"together": False}, status=504)
    return JsonResponse({"together": True, "pid": os.getpid()})


@looptoken.runs_async
async def in_executors(request: HttpRequest) -> JsonResponse:
    """Which threads run the loop's default executor's work and asgiref's
    non-thread-sensitive work, and which runs the loop: OS threads (native),
    and as ``threading`` names them (green threads under eventlet)."""

    def both() -> tuple[int, int]:
        return threading.get_native_id(), threading.get_ident()

    in_default = await asyncio.get_running_loop().run_in_executor(None, both)
    in_asgiref = await sync_to_async(both, thread_sensitive=False)()
    return JsonResponse(
        {
            "executors": [in_default[0], in_asgiref[0]],
            "loop": threading.get_native_id(),
            "executor_threads": [in_default[1], in_asgiref[1]],
            "loop_thread": threading.get_ident(),
        }
    )


def run_a_child(request: HttpRequest) -> JsonResponse:
    """Run a short child process, as libraries do (``ctypes.util.find_library``
    runs ``ldconfig``), and say whether the child, forked from this worker,
    left a status socket behind: one made in the after-fork hook, before the
    child's exec, which nothing removes."""
    found = ctypes.util.find_library("c")
    child = subprocess.Popen(
        [sys.executable, "-c", "print('child')"], stdout=subprocess.PIPE, text=True
    )
    output, _ = child.communicate(timeout=30)
    directory = status_dir(looptoken_settings.STATUS_DIR)
    left = [name for name in os.listdir(directory) if name.startswith(f"{child.pid}.")]
    return JsonResponse({"found": found, "child": output.strip(), "sockets_left": left})

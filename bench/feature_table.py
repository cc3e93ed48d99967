"""The feature table of docs/comparison.md, probed: every cell is the result of running something.

Run it from the repository root (``make bench`` runs it too)::

    .venv/bin/python bench/feature_table.py                    # the whole table, ~1 min
    .venv/bin/python bench/feature_table.py --only looptoken --rows 2,5
    .venv/bin/python bench/feature_table.py --json bench/results/feature_table.json

Contenders (columns): django-looptoken, asgiref's ``async_to_sync``, Django's
own ``async def`` view under WSGI (a real ``WSGIHandler`` call on a minimal
site configured here, without the app), ``asyncio.run``, anyio's blocking
portal, score.asyncio 0.3.0 and aiorun. Every cell runs in a child process of
its own (``--probe ROW CONTENDER``) with a time limit, so a probe that hangs
or crashes costs only its cell, which then reads "hangs" or "error: ...".
Inside a probe every wait is bounded too. A probe leaves with ``os._exit``:
score.asyncio's loop thread is not a daemon and its stop path is broken on
Python 3.9+, so a process that used it never exits on its own.

Every contender uses the builtin asyncio loop, so row 3 compares like with
like (``bench/bench_await.py`` has the real figures, asyncio and uvloop).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import contextvars
import importlib
import inspect
import io
import json
import os
import platform
import select
import signal
import statistics
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from importlib import metadata
from typing import Any, NoReturn

from django.urls import path

CONTENDERS = {
    "looptoken": "django-looptoken",
    "async_to_sync": "asgiref `async_to_sync`",
    "django": "Django `async def` view under WSGI",
    "asyncio.run": "`asyncio.run`",
    "anyio": "anyio blocking portal",
    "score": "score.asyncio 0.3.0",
    "aiorun": "aiorun",
}
ROWS = {
    1: "callable from sync code, blocking for the result",
    2: "same event loop across calls (a client pool made in call 1 reused in call 2)",
    3: "µs per call of a trivial coroutine (asyncio loop)",
    4: "thread-sensitive `sync_to_async` (the ORM's path) runs in the calling thread",
    5: "timeout that cancels the task on the loop",
    6: "contextvars flow into the coroutine / back to the caller",
    7: "a forked child can still run coroutines",
    8: "shutdown waits for protected work, cancels the rest",
    9: "Django's own `async def` views under WSGI on one long-lived loop",
    10: "status of every worker's loop (`loopstatus`, staff page)",
}
PROBE_TIMEOUT_S = 60.0  # the whole child process; a probe's own waits are shorter
WAIT_S = 10.0  # one bounded wait inside a probe (a fork, a stop, a signal)
NOT_CALLABLE = "n/a: aiorun has no call from sync code (row 1)."
NOT_DJANGO = "n/a: not a Django integration (Django's own async views have their own column)."

Job = Callable[[], Coroutine[Any, Any, Any]]
Run = Callable[[Job], Any]


@dataclass
class Cell:
    """One probed cell: a verdict, the short text shown, and an optional footnote."""

    verdict: str  # "yes", "no", "partly", "n/a", "hangs", "error"
    text: str
    note: str = ""


# -- Django, configured once per probe process --------------------------------

ANSWER = 42
VAR: contextvars.ContextVar[str] = contextvars.ContextVar("feature_table_var")


@dataclass
class Slot:
    """The job the ``job/`` view runs next, and what it gave (one caller at a time)."""

    job: Job | None = None
    ok: bool = False
    value: Any = None


SLOT = Slot()


async def job_view(request: Any) -> Any:
    """Run ``SLOT.job`` in Django's own async view and keep its outcome."""
    from django.http import HttpResponse

    job, SLOT.job = SLOT.job, None
    assert job is not None, "no job for the view"
    try:
        SLOT.value, SLOT.ok = await job(), True
    except BaseException as exc:  # handed to the caller, like any other runner
        SLOT.value, SLOT.ok = exc, False
    return HttpResponse("done")


def sync_view(request: Any) -> Any:
    """A plain sync view: row 3's baseline for a request."""
    from django.http import HttpResponse

    return HttpResponse("done")


# The minimal site's URLconf (``ROOT_URLCONF`` is this module).
urlpatterns = [path("job/", job_view), path("sync/", sync_view)]


def configure_django(app: bool) -> None:
    """A minimal settings.configure()d site; with ``app``, django_looptoken installed."""
    import django
    from django.conf import settings

    settings.configure(
        SECRET_KEY="feature-table",
        ALLOWED_HOSTS=["*"],
        ROOT_URLCONF=__name__,
        INSTALLED_APPS=["django_looptoken"] if app else [],
        MIDDLEWARE=[],
        DATABASES={},
        LOOPTOKEN={"AUTOSTART": False, "BACKEND": "asyncio", "ASYNC_VIEWS": True},
    )
    django.setup()


def wsgi_get(handler: Callable[..., Any], path: str) -> None:
    """One GET through a WSGI handler; raise unless it answered 200."""
    from wsgiref.util import setup_testing_defaults

    environ: dict[str, Any] = {"PATH_INFO": path, "wsgi.input": io.BytesIO()}
    setup_testing_defaults(environ)
    statuses: list[str] = []
    body = handler(environ, lambda status, headers, exc_info=None: statuses.append(status))
    try:
        b"".join(body)
    finally:
        body.close()
    if not statuses[0].startswith("200"):
        raise RuntimeError(f"GET {path}: {statuses[0]}")


# -- runners: how each contender runs a coroutine from sync code ---------------


async def call(job: Job) -> Any:
    """Await ``job()``: a coroutine function for the APIs that take one."""
    return await job()


@contextlib.contextmanager
def looptoken_runner() -> Iterator[Run]:
    """``looptoken.await_`` with a token held for the run."""
    configure_django(app=True)
    import django_looptoken as looptoken

    with looptoken.start_loop():
        yield lambda job: looptoken.await_(job())
    looptoken.shutdown()


@contextlib.contextmanager
def async_to_sync_runner() -> Iterator[Run]:
    """``async_to_sync(call)(job)``."""
    configure_django(app=False)
    from asgiref.sync import async_to_sync

    yield lambda job: async_to_sync(call)(job)


@contextlib.contextmanager
def django_runner() -> Iterator[Run]:
    """A request through Django's ``WSGIHandler`` to an ``async def`` view."""
    configure_django(app=False)
    from django.core.handlers.wsgi import WSGIHandler

    handler = WSGIHandler()

    def run(job: Job) -> Any:
        SLOT.job = job
        wsgi_get(handler, "/job/")
        if not SLOT.ok:
            raise SLOT.value
        return SLOT.value

    yield run


@contextlib.contextmanager
def asyncio_run_runner() -> Iterator[Run]:
    """``asyncio.run(job())``."""
    configure_django(app=False)
    yield lambda job: asyncio.run(job())


@contextlib.contextmanager
def anyio_runner() -> Iterator[Run]:
    """anyio's blocking portal, entered once for the run."""
    configure_django(app=False)
    from anyio.from_thread import start_blocking_portal

    with start_blocking_portal(backend="asyncio") as portal:
        yield lambda job: portal.call(call, job)


def score_module() -> Any:
    """score.asyncio configured on the builtin loop (never stopped: see the docstring)."""
    import score.asyncio as sa  # type: ignore[import-untyped]

    # Importing it installs uvloop's policy; put asyncio's back (row 3 compares asyncio).
    asyncio.set_event_loop_policy(None)
    return sa.init({"backend": "builtin"})


SCORE_KEEPALIVE: list[object] = []


@contextlib.contextmanager
def score_runner() -> Iterator[Run]:
    """score.asyncio's ``await_``, one of its tokens held until ``os._exit``."""
    configure_django(app=False)
    conf = score_module()
    SCORE_KEEPALIVE.extend([conf, conf.start_loop()])
    yield lambda job: conf.await_(job())


RUNNERS: dict[str, Callable[[], contextlib.AbstractContextManager[Run]]] = {
    "looptoken": looptoken_runner,
    "async_to_sync": async_to_sync_runner,
    "django": django_runner,
    "asyncio.run": asyncio_run_runner,
    "anyio": anyio_runner,
    "score": score_runner,
}


# -- rows 1 to 6: the same probe through every runner --------------------------


async def answer() -> int:
    """A coroutine with one suspension and a known result."""
    await asyncio.sleep(0)
    return ANSWER


def probe_callable(contender: str) -> Cell:
    """Row 1: run ``answer()`` from sync code and get 42 back."""
    if contender == "aiorun":
        return probe_aiorun_callable()
    with RUNNERS[contender]() as run:
        result = run(answer)
    if result != ANSWER:
        return Cell("no", f"no: got {result!r}")
    if contender == "django":
        return Cell(
            "partly",
            "views only",
            "Django runs an `async def` view under WSGI through `async_to_sync`; it has "
            "no call of its own for sync code (the probe ran the coroutine in a view).",
        )
    return Cell("yes", "yes")


def probe_aiorun_callable() -> Cell:
    """Row 1 for aiorun: ``aiorun.run(answer())`` from the main thread and from another."""
    import aiorun

    returned = threading.Event()
    blocked: list[bool] = []

    def stop_if_blocked() -> None:
        # The question is "does run() return on its own?": give it 2 s, then SIGINT.
        blocked.append(not returned.wait(2))
        if blocked[0]:
            os.kill(os.getpid(), signal.SIGINT)

    stopper = threading.Thread(target=stop_if_blocked)
    stopper.start()
    result: object = aiorun.run(answer())  # type: ignore[func-returns-value]
    returned.set()
    stopper.join(WAIT_S)

    errors: list[BaseException] = []

    def from_thread() -> None:
        try:
            aiorun.run()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=from_thread, daemon=True)
    thread.start()
    thread.join(WAIT_S)
    other = f"{type(errors[0]).__name__}: {errors[0]}" if errors else "no error"
    if not blocked[0] and result == ANSWER:
        return Cell("yes", "yes")
    return Cell(
        "no",
        "no: `run()` blocks until a signal",
        f"`aiorun.run(coro)` runs a program's main loop: 2 s after the coroutine had "
        f"returned {ANSWER} it was {'still blocked' if blocked[0] else 'done'}; after SIGINT "
        f"it returned {result!r}, not the result. From a non-main thread: {other}. "
        "So rows 2 to 7 do not apply.",
    )


async def pool_call(url: str, session: Any = None) -> tuple[asyncio.AbstractEventLoop, Any]:
    """GET ``url`` with ``session`` (a new aiohttp session if None); return the loop and it."""
    import aiohttp

    session = session or aiohttp.ClientSession()
    async with session.get(url) as response:
        await response.read()
    return asyncio.get_running_loop(), session


def probe_same_loop(contender: str) -> Cell:
    """Row 2: loop identity across two calls, and an aiohttp session reused in call 2."""
    if contender == "aiorun":
        return Cell("n/a", "n/a", NOT_CALLABLE)
    with counting_server() as (url, counter), RUNNERS[contender]() as run:
        loop1, session = run(lambda: pool_call(url))
        try:
            run(lambda: pool_call(url, session))
        except Exception as exc:
            reuse = f"{type(exc).__name__}: {exc}"
        else:
            reuse = f"reused, {counter[0]} TCP connection(s) for 2 calls"
        same = loop1 is run(current_loop)
        with contextlib.suppress(Exception):  # a session on a dead loop cannot close
            run(session.close)
    identity = "same" if same else "a new loop per call"
    note = f"Loop identity: {identity}; session from call 1: {reuse}."
    if same and reuse.startswith("reused"):
        return Cell("yes", "yes", note if counter[0] != 1 else "")
    return Cell("no", "no: a new loop per call", note)


async def current_loop() -> asyncio.AbstractEventLoop:
    """The loop running this coroutine."""
    return asyncio.get_running_loop()


@contextlib.contextmanager
def counting_server() -> Iterator[tuple[str, list[int]]]:
    """A tiny aiohttp server on a free 127.0.0.1 port, counting accepted TCP connections.

    It runs on a loop of its own in a daemon thread, apart from every contender.
    """
    from aiohttp import web

    counter = [0]
    loop = asyncio.new_event_loop()
    holder: dict[str, Any] = {}

    async def hello(request: web.BaseRequest) -> web.Response:
        return web.Response(text="hello")

    async def start() -> None:
        server = web.Server(hello)

        def counted() -> Any:
            counter[0] += 1
            return server()

        holder["listener"] = await loop.create_server(counted, "127.0.0.1", 0)
        holder["port"] = holder["listener"].sockets[0].getsockname()[1]

    thread = threading.Thread(target=loop.run_forever, name="counting-server", daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(start(), loop).result(WAIT_S)
    try:
        yield f"http://127.0.0.1:{holder['port']}/", counter
    finally:
        loop.call_soon_threadsafe(holder["listener"].close)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(WAIT_S)
        if not thread.is_alive():
            loop.close()


async def triv() -> int:
    """The timed coroutine: one suspension, then a result (as in bench_await.py)."""
    await asyncio.sleep(0)
    return 1


def per_call_us(call_once: Callable[[], object]) -> float:
    """Median µs per call over 5 batches of ~40 ms each (a quick look, not a benchmark)."""
    count = 1
    while True:
        start = time.perf_counter()
        for _ in range(count):
            call_once()
        if time.perf_counter() - start > 0.01 or count >= 100_000:
            break
        count *= 4
    batches = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(count * 4):
            call_once()
        batches.append((time.perf_counter() - start) / (count * 4))
    return statistics.median(batches) * 1e6


def probe_per_call(contender: str) -> Cell:
    """Row 3: µs per call of ``triv()``."""
    if contender == "aiorun":
        return Cell("n/a", "n/a", NOT_CALLABLE)
    with RUNNERS[contender]() as run:
        us = per_call_us(lambda: run(triv))
        if contender != "django":
            return Cell("yes", f"{us:,.0f}")
        from django.core.handlers.wsgi import WSGIHandler

        handler = WSGIHandler()
        plain = per_call_us(lambda: wsgi_get(handler, "/sync/"))
    return Cell(
        "yes",
        f"{us:,.0f} per request",
        f"A whole request through `WSGIHandler` to an `async def` view; the same "
        f"request to a sync view took {plain:,.0f} µs.",
    )


async def ident_in_sync_to_async() -> int:
    """The thread a thread-sensitive ``sync_to_async`` call runs in."""
    from asgiref.sync import sync_to_async

    return await sync_to_async(threading.get_ident, thread_sensitive=True)()


def probe_thread_sensitive(contender: str) -> Cell:
    """Row 4: thread-sensitive sync code runs in the thread that called."""
    if contender == "aiorun":
        return Cell("n/a", "n/a", NOT_CALLABLE)
    with RUNNERS[contender]() as run:
        caller = threading.get_ident()
        ran_in = run(ident_in_sync_to_async)
        names = {t.ident: t.name for t in threading.enumerate()}
    if ran_in == caller:
        return Cell("yes", "yes")
    return Cell(
        "no",
        "no: another thread",
        f"`sync_to_async(thread_sensitive=True)` ran in thread `{names.get(ran_in, ran_in)}`, "
        "not the caller's: ORM calls there use another database connection and "
        "transaction than the caller's.",
    )


def probe_timeout(contender: str) -> Cell:
    """Row 5: a timeout in the API, and the coroutine sees CancelledError."""
    if contender == "aiorun":
        return Cell("n/a", "n/a", NOT_CALLABLE)
    if contender != "looptoken":
        api = {
            "async_to_sync": "asgiref.sync:AsyncToSync.__init__",
            "django": "",
            "asyncio.run": "asyncio:run",
            "anyio": "anyio.from_thread:BlockingPortal.call",
            "score": "score.asyncio._init:ConfiguredAsyncioModule.await_",
        }[contender]
        if not api:
            return Cell("no", "no", "Django has no per-view timeout for async views.")
        if "timeout" in signature_of(api).parameters:
            return Cell("error", f"error: `{api}` has a timeout this probe does not know")
        return Cell(
            "no",
            "no",
            "No timeout parameter (the probe read the call's signature); an "
            "`asyncio.wait_for` inside the coroutine is left to the caller.",
        )
    import django_looptoken as looptoken

    seen: list[str] = []

    async def forever() -> None:
        try:
            await asyncio.sleep(WAIT_S * 10)
        except asyncio.CancelledError:
            seen.append("CancelledError")
            raise

    with RUNNERS[contender]():
        started = time.monotonic()
        try:
            looptoken.await_(forever(), timeout=0.2)
        except TimeoutError:
            raised = "TimeoutError"
        else:
            raised = "nothing"
        took = time.monotonic() - started
    ok = raised == "TimeoutError" and seen == ["CancelledError"]
    text = "yes" if ok else f"no: raised {raised}, coroutine saw {seen or 'nothing'}"
    return Cell("yes" if ok else "no", text, "" if ok and took < 5 else f"took {took:.1f} s")


def signature_of(dotted: str) -> inspect.Signature:
    """The signature of ``module:qualname``."""
    module_name, qualname = dotted.split(":")
    target: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        target = getattr(target, part)
    return inspect.signature(target)


async def swap_var() -> str:
    """Read the caller's value of ``VAR``, then set a new one."""
    seen = VAR.get("unset")
    VAR.set("set inside")
    return seen


def probe_contextvars(contender: str) -> Cell:
    """Row 6: the caller's contextvars reach the coroutine; its sets come back."""
    if contender == "aiorun":
        return Cell("n/a", "n/a", NOT_CALLABLE)
    with RUNNERS[contender]() as run:
        VAR.set("set by caller")
        seen_inside = run(swap_var)
        after = VAR.get()
    into, back = seen_inside == "set by caller", after == "set inside"
    text = {(True, True): "both ways", (True, False): "in only", (False, False): "no"}.get(
        (into, back), "back only"
    )
    return Cell("yes" if into and back else "partly" if into or back else "no", text)


# -- row 7: fork ---------------------------------------------------------------


def probe_fork(contender: str) -> Cell:
    """Row 7: after one call in the parent, a forked child makes a call."""
    if contender == "aiorun":
        return Cell("n/a", "n/a", NOT_CALLABLE)
    with RUNNERS[contender]() as run:
        run(answer)  # the contender's loop (if it keeps one) now runs in the parent
        outcome = call_in_fork(lambda: run(answer))
    if outcome == repr(ANSWER):
        return Cell("yes", "works")
    if outcome == "hangs":
        return Cell("hangs", "hangs", f"The child's call was still blocked after {WAIT_S:g} s.")
    return Cell("error", f"error: {outcome}")


def call_in_fork(call_once: Callable[[], object]) -> str:
    """``repr`` of ``call_once()`` in a forked child, "hangs", or the child's error."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: one call, its outcome down the pipe, then leave at once
        os.close(read_fd)
        try:
            message = repr(call_once())
        except BaseException as exc:
            message = f"{type(exc).__name__}: {exc}"
        os.write(write_fd, message.encode())
        os._exit(0)
    os.close(write_fd)
    try:
        readable, _, _ = select.select([read_fd], [], [], WAIT_S)
        if not readable:
            os.kill(pid, signal.SIGKILL)
            return "hangs"
        return os.read(read_fd, 4096).decode() or "the child died without a word"
    finally:
        os.close(read_fd)
        os.waitpid(pid, 0)


# -- row 8: shutdown -----------------------------------------------------------


@dataclass
class Work:
    """Two background coroutines: one that must finish, one that may be cut."""

    started: threading.Event
    events: list[str]

    async def must_finish(self) -> None:
        """Work that must finish: 0.3 s, then it says so."""
        self.mark("must-finish started")
        try:
            await asyncio.sleep(0.3)
        except asyncio.CancelledError:
            self.events.append("must-finish cancelled")
            raise
        self.events.append("must-finish finished")

    async def may_be_cut(self) -> None:
        """Work that may be cut: it would take far longer than any wait here."""
        self.mark("may-be-cut started")
        try:
            await asyncio.sleep(WAIT_S * 10)
        except asyncio.CancelledError:
            self.events.append("may-be-cut cancelled")
            raise
        self.events.append("may-be-cut finished")

    def mark(self, event: str) -> None:
        """Note a start; both started sets ``started``."""
        self.events.append(event)
        if sum(e.endswith("started") for e in self.events) == 2:
            self.started.set()

    def verdict(self, how: str) -> Cell:
        """The cell for what happened to the two coroutines."""
        done = "must-finish finished" in self.events
        cut = "may-be-cut cancelled" in self.events
        note = f"{how}: " + ", ".join(e for e in self.events if not e.endswith("started"))
        if done and cut:
            return Cell("yes", "yes", note)
        if done:
            return Cell("partly", "waits for all, cuts none", note)
        return Cell("no", "no: cancelled" if cut else "no", note)


def new_work() -> Work:
    """A fresh pair of background coroutines."""
    return Work(threading.Event(), [])


async def start_both(work: Work) -> set[asyncio.Task[None]]:
    """Start both coroutines as plain tasks and return once both run (no protection)."""
    tasks = {asyncio.create_task(work.must_finish()), asyncio.create_task(work.may_be_cut())}
    await asyncio.sleep(0)  # both tasks take their first step before this one resumes
    assert work.started.is_set()
    return tasks


def probe_shutdown(contender: str) -> Cell:
    """Row 8: background work started, then the contender stops: what happens to it."""
    probes: dict[str, Callable[[], Cell]] = {
        "looptoken": shutdown_looptoken,
        "aiorun": shutdown_aiorun,
        "score": shutdown_score,
        "anyio": shutdown_anyio,
    }
    if contender in probes:
        return probes[contender]()
    # async_to_sync, Django's view, asyncio.run: tasks started in the call, call returns.
    work = new_work()
    with RUNNERS[contender]() as run:
        tasks = run(lambda: start_both(work))
    del tasks
    return work.verdict("no way to protect a task; two tasks started in a call, call returned")


def shutdown_looptoken() -> Cell:
    """``spawn(shutdown_waits_for(...))`` and a plain ``spawn``, then the last token goes."""
    import django_looptoken as looptoken

    work = new_work()
    with RUNNERS["looptoken"]():
        looptoken.spawn(looptoken.shutdown_waits_for(work.must_finish()))
        looptoken.spawn(work.may_be_cut())
        work.started.wait(WAIT_S)
    return work.verdict("`spawn(shutdown_waits_for(...))` and `spawn(...)`, last token released")


def shutdown_aiorun() -> Cell:
    """aiorun's ``shutdown_waits_for`` and a plain task, then SIGTERM."""
    import aiorun

    work = new_work()

    background: set[asyncio.Task[Any]] = set()

    async def main() -> None:
        protected = aiorun.shutdown_waits_for(work.must_finish())  # type: ignore[no-untyped-call]
        background.add(asyncio.create_task(protected))
        background.add(asyncio.create_task(work.may_be_cut()))

    def terminate() -> None:
        if work.started.wait(WAIT_S):
            os.kill(os.getpid(), signal.SIGTERM)

    stopper = threading.Thread(target=terminate)
    stopper.start()
    aiorun.run(main())
    stopper.join(WAIT_S)
    return work.verdict("`shutdown_waits_for(...)` and a plain task, SIGTERM")


def shutdown_anyio() -> Cell:
    """One task via the portal's ``start_task_soon``, one via ``create_task``; portal closes."""
    from anyio.from_thread import start_blocking_portal

    work = new_work()
    with start_blocking_portal(backend="asyncio") as portal:
        portal.start_task_soon(work.must_finish)
        portal.call(start_other, work)
        work.started.wait(WAIT_S)
    cell = work.verdict("`portal.start_task_soon(...)` and `create_task(...)`, portal closed")
    if cell.verdict != "yes":
        return cell
    # No protection as such: closing waits for every task of the portal's own group.
    if "timeout" in inspect.signature(start_blocking_portal).parameters:
        return Cell("partly", "portal's tasks", cell.note)
    note = f"{cell.note}. `start_blocking_portal` has no time limit for that wait."
    return Cell("partly", "portal's tasks, no time limit", note)


async def start_other(work: Work) -> asyncio.Task[None]:
    """Start the cuttable coroutine as a plain task."""
    return asyncio.create_task(work.may_be_cut())


def shutdown_score() -> Cell:
    """score.asyncio: tasks started, then its last token released."""
    conf = score_module()
    errors: list[str] = []

    def record(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        errors.append(f"{type(exc).__name__}: {exc}" if exc else str(context["message"]))

    conf.loop.set_exception_handler(record)
    work = new_work()
    token = conf.start_loop()
    conf.await_(start_both(work))
    releaser = threading.Thread(target=token.release, daemon=True)
    releaser.start()
    releaser.join(WAIT_S)
    if releaser.is_alive():
        cause = errors[0] if errors else "no error reported"
        return Cell(
            "hangs",
            "hangs",
            f"Releasing the last token was still blocked after {WAIT_S:g} s: its stop "
            f"callback failed ({cause}), and `release_loop` then joins the loop thread.",
        )
    return work.verdict("tasks started, last token released")


# -- rows 9 and 10 -------------------------------------------------------------


async def loop_now() -> asyncio.AbstractEventLoop:
    """The loop the view runs on."""
    return asyncio.get_running_loop()


def probe_async_views(contender: str) -> Cell:
    """Row 9: two requests to Django's own async view: the same loop?"""
    if contender not in ("looptoken", "django"):
        return Cell("n/a", "n/a", NOT_DJANGO)
    configure_django(app=contender == "looptoken")
    from django.core.handlers.wsgi import WSGIHandler

    handler = WSGIHandler()
    loops = []
    with contextlib.ExitStack() as stack:
        if contender == "looptoken":
            import django_looptoken as looptoken

            stack.callback(looptoken.shutdown)  # after the token's release below
            stack.enter_context(looptoken.start_loop())
        for _ in range(2):
            SLOT.job = loop_now
            wsgi_get(handler, "/job/")
            loops.append(SLOT.value)
        shared = contender == "looptoken" and loops[0] is looptoken.get_loop()
    if loops[0] is loops[1]:
        return Cell("yes", "yes" + (" (`ASYNC_VIEWS`)" if shared else ""))
    return Cell("no", "no: a new loop per request")


def probe_status(contender: str) -> Cell:
    """Row 10: looptoken's ``status()`` on a running loop; a plain fact for the others."""
    if contender != "looptoken":
        return Cell("no", "no", "A fact, not a probe: none of the others has such a facility.")
    import django_looptoken as looptoken

    with RUNNERS[contender]():
        snapshot = looptoken.status()
    ok = snapshot.get("state") == "running" and snapshot.get("pid") == os.getpid()
    return Cell("yes" if ok else "no", "yes" if ok else f"no: {snapshot}")


PROBES: dict[int, Callable[[str], Cell]] = {
    1: probe_callable,
    2: probe_same_loop,
    3: probe_per_call,
    4: probe_thread_sensitive,
    5: probe_timeout,
    6: probe_contextvars,
    7: probe_fork,
    8: probe_shutdown,
    9: probe_async_views,
    10: probe_status,
}


# -- driver --------------------------------------------------------------------


def probe_main(row: int, contender: str) -> NoReturn:
    """Child process: run one probe, print its cell as one JSON line, leave at once."""
    try:
        cell = PROBES[row](contender)
    except BaseException as exc:
        traceback.print_exc()
        cell = Cell("error", f"error: {type(exc).__name__}: {exc}"[:120])
    print(json.dumps(asdict(cell)), flush=True)
    sys.stderr.flush()
    os._exit(0)


def run_probe(row: int, contender: str) -> Cell:
    """One probe in a child process, bounded by ``PROBE_TIMEOUT_S``."""
    command = [sys.executable, os.path.abspath(__file__), "--probe", str(row), contender]
    try:
        child = subprocess.run(
            command, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        return Cell("hangs", "hangs", f"The probe did not finish within {PROBE_TIMEOUT_S:g} s.")
    lines = child.stdout.strip().splitlines()
    if child.returncode or not lines:
        last = (child.stderr.strip().splitlines() or ["no output"])[-1]
        return Cell("error", f"error: {last}"[:120], f"exit code {child.returncode}")
    return Cell(**json.loads(lines[-1]))


def version(dist: str) -> str:
    """Installed version of ``dist``, or "not installed"."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def markdown(cells: dict[int, dict[str, Cell]], contenders: list[str]) -> str:
    """The table, with a numbered footnote for each cell that has a note."""
    notes: list[str] = []
    lines = [
        "| | " + " | ".join(CONTENDERS[c] for c in contenders) + " |",
        "|---|" + "---|" * len(contenders),
    ]
    for row, by_contender in cells.items():
        texts = []
        for contender in contenders:
            cell = by_contender[contender]
            if cell.note:
                if cell.note not in notes:  # cells with the same finding share a footnote
                    notes.append(cell.note)
                texts.append(f"{cell.text} [{notes.index(cell.note) + 1}]")
            else:
                texts.append(cell.text)
        lines.append(f"| {row}. {ROWS[row]} | " + " | ".join(texts) + " |")
    lines += ["", *(f"[{n}] {note}" for n, note in enumerate(notes, 1))]
    dists = ("django-looptoken", "Django", "asgiref", "anyio", "score.asyncio", "aiorun")
    lines += [
        "",
        f"Probed by `bench/feature_table.py`: Python {platform.python_version()}, "
        + ", ".join(f"{d} {version(d)}" for d in dists)
        + f"; {os.cpu_count()} CPUs. Row 3 is a quick look (median of 5 short batches "
        "on the asyncio loop); `bench/bench_await.py`'s interleaved medians are the "
        "real figures.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Probe every cell (in parallel child processes) and print the Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", choices=list(CONTENDERS), help="a column")
    parser.add_argument("--rows", help="comma-separated row numbers (default: all)")
    parser.add_argument("--json", metavar="PATH", help="also write the cells as JSON")
    parser.add_argument("--jobs", type=int, default=2, help="probes run at once (default 2)")
    parser.add_argument("--probe", nargs=2, metavar=("ROW", "CONTENDER"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.probe:
        probe_main(int(args.probe[0]), args.probe[1])
    contenders = args.only or list(CONTENDERS)
    rows = [int(r) for r in args.rows.split(",")] if args.rows else list(ROWS)
    if not set(rows) <= set(ROWS):
        parser.error(f"--rows: choose among {sorted(ROWS)}")
    jobs = [(row, contender) for row in rows for contender in contenders]
    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        found = dict(zip(jobs, pool.map(lambda job: run_probe(*job), jobs), strict=True))
    cells = {row: {c: found[row, c] for c in contenders} for row in rows}
    print(markdown(cells, contenders), flush=True)
    if args.json:
        payload = {
            "python": platform.python_version(),
            "versions": {d: version(d) for d in ("Django", "asgiref", "anyio", "aiorun")},
            "rows": {str(r): ROWS[r] for r in rows},
            "contenders": {c: CONTENDERS[c] for c in contenders},
            "cells": {
                str(r): {c: asdict(cell) for c, cell in by.items()} for r, by in cells.items()
            },
        }
        with open(args.json, "w") as out:
            json.dump(payload, out, indent=2)
            out.write("\n")
    return (
        1 if any(cell.verdict == "error" for by in cells.values() for cell in by.values()) else 0
    )


if __name__ == "__main__":
    sys.exit(main())

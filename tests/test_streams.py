"""iterate and enter: async iterators and async context managers from sync code,
and async-iterator streaming responses sent chunk by chunk under WSGI."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import gc
import logging
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.http import HttpRequest, StreamingHttpResponse
from django.test import AsyncRequestFactory, RequestFactory

import django_looptoken as looptoken
from django_looptoken._runtime import State, runtime
from django_looptoken.middleware import LoopTokenMiddleware
from tests.testapp.views import tokens_held

WAIT_S = 10  # a bound on failure, not a speed target

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id")


class Upstream:
    """An async generator's life, seen from outside: what it produced, where, how it ended."""

    def __init__(self) -> None:
        self.produced = 0
        self.on_shared_loop: list[bool] = []
        self.ended_by: str | None = None
        self.finally_ran = threading.Event()
        self.finally_thread: str | None = None

    async def items(self, count: int | None = None, delay: float = 0) -> AsyncIterator[int]:
        try:
            while count is None or self.produced < count:
                await asyncio.sleep(delay)
                self.on_shared_loop.append(asyncio.get_running_loop() is looptoken.get_loop())
                self.produced += 1
                yield self.produced
            self.ended_by = "exhausted"
        except GeneratorExit:
            self.ended_by = "closed"
            raise
        except asyncio.CancelledError:
            self.ended_by = "cancelled"
            raise
        finally:
            self.finally_thread = threading.current_thread().name
            self.finally_ran.set()


@pytest.fixture
def upstream() -> Upstream:
    return Upstream()


# -- iterate ----------------------------------------------------------------------------


def test_iterate_fetches_each_item_on_the_shared_loop_holding_a_token(upstream: Upstream) -> None:
    seen = []
    for item in looptoken.iterate(upstream.items(3)):
        seen.append((item, tokens_held()))
    assert seen == [(1, 1), (2, 1), (3, 1)]  # the loop ran for the stream's token alone
    assert upstream.on_shared_loop == [True] * 3
    assert upstream.ended_by == "exhausted"
    assert runtime().state is State.STOPPED  # the token went with the end


def test_iterate_fetches_nothing_ahead_of_the_caller(upstream: Upstream) -> None:
    with looptoken.iterate(upstream.items()) as items:
        for expected in range(1, 6):
            assert next(items) == expected
            assert upstream.produced == expected  # suspended at its yield meanwhile


def test_closing_early_closes_the_async_generator_on_the_loop(upstream: Upstream) -> None:
    with looptoken.start_loop():  # so that only the close can close it, not a shutdown
        with looptoken.iterate(upstream.items()) as items:
            for item in items:
                if item == 3:
                    break
            assert not upstream.finally_ran.is_set()  # a break alone leaves it open
        assert upstream.ended_by == "closed"
        assert upstream.finally_thread == "looptoken-loop"
        assert tokens_held() == 1  # the stream's token went with it


def test_an_exception_in_the_caller_closes_the_stream(upstream: Upstream) -> None:
    def consume() -> None:
        with looptoken.iterate(upstream.items()) as items:
            for item in items:
                if item == 2:
                    raise KeyError(item)

    with looptoken.start_loop():
        with pytest.raises(KeyError):
            consume()
        assert upstream.ended_by == "closed"
        assert tokens_held() == 1


def test_a_stream_dropped_unclosed_is_closed_on_the_loop(upstream: Upstream) -> None:
    with looptoken.start_loop():
        items = looptoken.iterate(upstream.items())
        assert next(items) == 1
        assert tokens_held() == 2
        del items
        gc.collect()
        assert upstream.finally_ran.wait(WAIT_S)
        assert upstream.ended_by == "closed"
        assert upstream.finally_thread == "looptoken-loop"
    assert runtime().state is State.STOPPED  # its token went too


def test_an_exception_from_the_stream_is_raised_at_its_item() -> None:
    finally_ran = []

    async def failing() -> AsyncIterator[str]:
        try:
            yield "a"
            yield "b"
            raise PermissionError("upstream said no")
        finally:
            finally_ran.append(True)

    items = looptoken.iterate(failing())
    assert next(items) == "a"
    assert next(items) == "b"
    with pytest.raises(PermissionError, match="upstream said no") as raised:
        next(items)
    assert any(entry.name == "failing" for entry in raised.traceback)  # its traceback kept
    assert finally_ran == [True]
    assert list(items) == []  # finished, as a generator that raised is
    assert runtime().state is State.STOPPED


def test_the_timeout_bounds_each_item_not_the_stream(upstream: Upstream) -> None:
    # Six items 0.05 s apart take longer than the timeout in all, each one less.
    assert list(looptoken.iterate(upstream.items(6, delay=0.05), timeout=0.25)) == [
        1,
        2,
        3,
        4,
        5,
        6,
    ]

    slow = Upstream()
    items = looptoken.iterate(slow.items(delay=3600), timeout=0.1)
    with pytest.raises(TimeoutError, match=r"did not finish within 0\.1 s"):
        next(items)
    assert slow.ended_by == "cancelled"  # the fetch was cancelled where it waited
    assert list(items) == []
    assert runtime().state is State.STOPPED


def test_the_stream_runs_in_the_callers_context_and_hands_back_sync_code() -> None:
    async def tagged() -> AsyncIterator[tuple[str, int]]:
        for _ in range(2):
            thread = await sync_to_async(threading.get_ident)()  # thread-sensitive
            yield request_id.get(), thread

    request_id.set("req-7")
    assert list(looptoken.iterate(tagged())) == [("req-7", threading.get_ident())] * 2


class Rows:
    """An async iterator that is not a generator, with an ``aclose``."""

    def __init__(self) -> None:
        self.closed = threading.Event()

    def __aiter__(self) -> Rows:
        return self

    async def __anext__(self) -> int:
        await asyncio.sleep(0)
        return 1

    async def aclose(self) -> None:
        self.closed.set()


def test_iterate_takes_async_iterables_and_closes_them_with_aclose() -> None:
    rows = Rows()
    with looptoken.start_loop():
        with looptoken.iterate(rows) as items:
            assert next(items) == 1
        assert rows.closed.is_set()


def test_an_async_iterator_that_raises_is_closed_with_aclose() -> None:
    class FailingRows(Rows):
        async def __anext__(self) -> int:
            raise ConnectionResetError("cursor lost")

    rows = FailingRows()
    with looptoken.start_loop():
        items = looptoken.iterate(rows)
        with pytest.raises(ConnectionResetError):
            next(items)
        assert rows.closed.is_set()  # at once, not when the iterator is dropped
        assert tokens_held() == 1


def test_a_stream_open_at_shutdown_is_closed_by_the_sequence(upstream: Upstream) -> None:
    rows = Rows()
    with looptoken.start_loop():
        items = looptoken.iterate(upstream.items())
        others = looptoken.iterate(rows)
        assert next(items) == 1
        assert next(others) == 1
        looptoken.shutdown(timeout=0.2)  # they hold tokens: the drain times out
    assert upstream.ended_by == "closed"
    assert rows.closed.is_set()
    with pytest.raises(looptoken.LoopStoppedError):
        next(items)
    items.close()  # nothing left to do, and no error
    others.close()


def test_iterate_refuses_what_is_not_an_async_iterator(upstream: Upstream) -> None:
    with pytest.raises(TypeError, match="It is a sync iterable: loop over it directly"):
        looptoken.iterate([1, 2])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"call it first, as in iterate\(Upstream.items\(...\)\)"):
        looptoken.iterate(upstream.items)  # type: ignore[arg-type]

    async def one() -> int:
        return 1

    coroutine = one()
    with pytest.raises(TypeError, match=r"not the coroutine \S*one: await it with await_"):
        looptoken.iterate(coroutine)  # type: ignore[arg-type]
    assert coroutine.cr_frame is None  # closed: no "never awaited" warning
    with pytest.raises(
        ValueError, match=r"timeout must be None or a finite number of seconds > 0"
    ):
        looptoken.iterate(upstream.items(), timeout=0)


def test_iterate_from_the_loop_thread_is_the_await_error(upstream: Upstream) -> None:
    async def nested() -> None:
        looptoken.iterate(upstream.items())

    with pytest.raises(RuntimeError, match=r"iterate\(\) was called from the shared loop's own"):
        looptoken.await_(nested())


# -- enter ------------------------------------------------------------------------------


class Scope:
    """An async context manager that notes what happened to it, and where."""

    def __init__(self, *, suppress: bool = False, fail_on_enter: bool = False) -> None:
        self.suppress = suppress
        self.fail_on_enter = fail_on_enter
        self.events: list[Any] = []

    async def __aenter__(self) -> str:
        await asyncio.sleep(0)
        self.events.append(("enter", asyncio.get_running_loop() is looptoken.get_loop()))
        if self.fail_on_enter:
            raise ConnectionRefusedError("pool exhausted")
        return "connection"

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        await asyncio.sleep(0)
        self.events.append(("exit", exc_type, tokens_held()))
        return self.suppress


def test_enter_runs_aenter_and_aexit_on_the_shared_loop() -> None:
    scope = Scope()
    with looptoken.enter(scope) as value:
        assert value == "connection"
        assert tokens_held() == 1
    assert scope.events == [("enter", True), ("exit", None, 1)]
    assert runtime().state is State.STOPPED


def test_enter_passes_the_bodys_exception_to_aexit() -> None:
    scope = Scope()
    with pytest.raises(KeyError), looptoken.enter(scope):
        raise KeyError("body")
    assert scope.events[-1] == ("exit", KeyError, 1)

    suppressing = Scope(suppress=True)
    with looptoken.enter(suppressing):
        raise KeyError("swallowed, as async with would")
    assert suppressing.events[-1] == ("exit", KeyError, 1)
    assert runtime().state is State.STOPPED


def test_an_exception_in_aenter_is_raised_and_aexit_not_run() -> None:
    scope = Scope(fail_on_enter=True)
    with pytest.raises(ConnectionRefusedError, match="pool exhausted"), looptoken.enter(scope):
        pytest.fail("the body must not run")
    assert scope.events == [("enter", True)]
    assert runtime().state is State.STOPPED


def test_enter_works_with_asynccontextmanager_generators() -> None:
    seen = []

    @contextlib.asynccontextmanager
    async def transaction() -> AsyncIterator[str]:
        seen.append("begin")
        try:
            yield "tx"
        except ValueError:
            seen.append("rollback")
            raise
        else:
            seen.append("commit")

    with looptoken.enter(transaction()) as tx:
        assert tx == "tx"
    with pytest.raises(ValueError, match="bad row"), looptoken.enter(transaction()):
        raise ValueError("bad row")
    assert seen == ["begin", "commit", "begin", "rollback"]


def test_enter_times_out_each_step() -> None:
    class Stuck:
        async def __aenter__(self) -> None:
            await asyncio.sleep(3600)

        async def __aexit__(self, *exc_info: object) -> None:
            pass

    with pytest.raises(TimeoutError), looptoken.enter(Stuck(), timeout=0.1):
        pytest.fail("the body must not run")
    assert runtime().state is State.STOPPED


def test_enter_refuses_what_is_not_an_async_context_manager() -> None:
    with pytest.raises(TypeError, match="It is a sync context manager: use a plain 'with'"):
        looptoken.enter(threading.Lock())  # type: ignore[arg-type]

    @contextlib.asynccontextmanager
    async def session() -> AsyncIterator[None]:
        yield

    with pytest.raises(TypeError, match="call it first, as in enter"):
        looptoken.enter(session)  # type: ignore[arg-type]

    async def connect() -> None:
        pass

    coroutine = connect()
    with pytest.raises(TypeError, match="not a coroutine"):
        looptoken.enter(coroutine)  # type: ignore[arg-type]
    assert coroutine.cr_frame is None


# -- streaming responses through LoopTokenMiddleware ------------------------------------


def _stream_view(upstream: Upstream, count: int | None = None) -> Any:
    async def events() -> AsyncIterator[str]:
        # aclosing: an async for alone would leave the inner generator to the collector.
        async with contextlib.aclosing(upstream.items(count)) as items:
            async for item in items:
                yield f"event {item}\n"

    def view(request: HttpRequest) -> StreamingHttpResponse:
        return StreamingHttpResponse(events(), content_type="text/event-stream")

    return view


@pytest.mark.django_db  # a request sends request_started: old connections are checked
def test_an_async_streaming_response_is_sent_chunk_by_chunk(upstream: Upstream) -> None:
    with looptoken.start_loop():
        response = LoopTokenMiddleware(_stream_view(upstream, 3))(RequestFactory().get("/sse/"))
        chunks = iter(response)  # as a WSGI server does: no warning, nothing collected
        assert upstream.produced == 0
        assert next(chunks) == b"event 1\n"
        assert upstream.produced == 1
        assert list(chunks) == [b"event 2\n", b"event 3\n"]
        assert upstream.on_shared_loop == [True] * 3
        response.close()
        assert tokens_held() == 1


@pytest.mark.django_db  # a request sends request_started: old connections are checked
def test_closing_the_response_closes_the_stream_and_releases_the_token(
    upstream: Upstream,
) -> None:
    with looptoken.start_loop():
        response = LoopTokenMiddleware(_stream_view(upstream))(RequestFactory().get("/sse/"))
        chunks = iter(response)
        assert [next(chunks) for _ in range(3)] == [b"event 1\n", b"event 2\n", b"event 3\n"]
        response.close()  # as a WSGI server does when its client has gone
        assert upstream.ended_by == "closed"
        assert tokens_held() == 1


@pytest.mark.django_db  # a request sends request_started: old connections are checked
def test_a_stream_that_fails_is_logged_with_the_request_and_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def failing() -> AsyncIterator[bytes]:
        yield b"data: 1\n\n"
        raise ConnectionResetError("upstream went away")

    def view(request: HttpRequest) -> StreamingHttpResponse:
        return StreamingHttpResponse(failing())

    with looptoken.start_loop():
        response = LoopTokenMiddleware(view)(RequestFactory().get("/relay/?q=1"))
        chunks = iter(response)
        assert next(chunks) == b"data: 1\n\n"
        with (
            caplog.at_level(logging.ERROR, "django_looptoken"),
            pytest.raises(ConnectionResetError),
        ):
            next(chunks)  # the WSGI server cuts the connection on this
        response.close()
    [record] = caplog.records
    assert record.getMessage() == (
        "The async stream of GET /relay/?q=1 failed after its response began; "
        "the connection is closed."
    )
    assert isinstance(record.exc_info and record.exc_info[1], ConnectionResetError)


@pytest.mark.django_db  # a request sends request_started: old connections are checked
def test_sync_streams_and_plain_responses_are_left_alone() -> None:
    def sync_stream(request: HttpRequest) -> StreamingHttpResponse:
        return StreamingHttpResponse(iter([b"a", b"b"]))

    with looptoken.start_loop():
        response = LoopTokenMiddleware(sync_stream)(RequestFactory().get("/"))
        assert not response.is_async  # type: ignore[attr-defined]
        assert list(response) == [b"a", b"b"]
        response.close()


@pytest.mark.django_db  # a request sends request_started: old connections are checked
def test_under_asgi_the_middleware_leaves_async_streams_alone(upstream: Upstream) -> None:
    request = AsyncRequestFactory().get("/sse/")  # an ASGIRequest: the server streams it
    with looptoken.start_loop():
        response = LoopTokenMiddleware(_stream_view(upstream, 3))(request)
        assert response.is_async  # type: ignore[attr-defined]
        response.close()
    assert upstream.produced == 0


def test_without_the_middleware_django_still_collects_the_stream(upstream: Upstream) -> None:
    response = _stream_view(upstream, 3)(RequestFactory().get("/sse/"))
    with pytest.warns(Warning, match="must consume asynchronous iterators"):
        chunks = iter(response)
    assert upstream.produced == 3  # all of it, before the first chunk
    assert list(chunks) == [b"event 1\n", b"event 2\n", b"event 3\n"]

"""Under a real gunicorn gevent worker: every request is a greenlet of one OS
thread, the loop runs in a native thread, and callers wait on the hub."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.integration.test_gunicorn_requests import checked_server
from tests.support.processes import Server

GEVENT = ("--worker-class", "gevent", "--worker-connections", "200")


# With --preload the master imports Django: it must be patched before that.
PRELOAD = ("--preload", "--config", "python:tests.integration.gevent_config")


@pytest.fixture(
    scope="module",
    params=[((), {}), (PRELOAD, {}), ((), {"LOOPTOKEN_TEST_BACKEND": "asyncio"})],
    ids=["", "preload", "asyncio-backend"],
)
def server(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Server]:
    options, env = request.param
    with checked_server(tmp_path_factory, (*GEVENT, *options), **env) as server:
        yield server


def test_pages_that_do_not_use_the_loop_and_pages_that_do(server: Server) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        assert client.get("orm/count/nothing/").json() == {"count": 0}  # a sync view
        answers = [client.get(path).json() for path in ["where/plain/", "where/decorated/"] * 3]
    assert all(answer["on_shared_loop"] for answer in answers)
    assert len({answer["loop"] for answer in answers}) == 1
    assert len({answer["pool"] for answer in answers}) == 1  # one pool, kept across requests


def test_requests_wait_for_the_loop_side_by_side(server: Server) -> None:
    # Fifty requests of one worker meet on the loop: a caller that blocked
    # the worker's OS thread while it waited would keep the others out.
    count = 50
    limits = httpx.Limits(max_connections=count)
    with (
        httpx.Client(base_url=server.url, timeout=60, limits=limits) as client,
        ThreadPoolExecutor(count) as pool,
    ):
        responses = list(pool.map(client.get, [f"together/{count}/"] * count))
    assert [r.status_code for r in responses] == [200] * count
    assert len({r.json()["pid"] for r in responses}) == 1


@pytest.mark.parametrize("style", ["decorated", "plain"])
def test_orm_calls_run_in_each_requests_own_greenlet_at_once(server: Server, style: str) -> None:
    key = uuid.uuid4().hex
    with httpx.Client(base_url=server.url, timeout=60) as client, ThreadPoolExecutor(2) as pool:
        # Each call waits at a barrier for the other's: calls serialised on
        # one greenlet, or a blocked hub, would break it.
        responses = list(pool.map(client.get, [f"orm/barrier/{style}/{key}/"] * 2))
    assert [r.status_code for r in responses] == [200, 200], responses[0].text[:2000]
    request_greenlets = {int(r.headers["X-Request-Thread"]) for r in responses}
    assert len(request_greenlets) == 2
    assert {r.json()["orm_thread"] for r in responses} == request_greenlets


def test_orm_calls_commit_with_the_requests_transaction(server: Server) -> None:
    name = uuid.uuid4().hex
    with httpx.Client(base_url=server.url, timeout=30) as client:
        created = client.get(f"orm/create/decorated/{name}/")  # atomic by its decorator
        assert created.json() == {"in_atomic_block": True, "seen": 1}
        assert client.get(f"orm/count/{name}/").json() == {"count": 1}


def test_executor_work_runs_in_native_threads(server: Server) -> None:
    # A thread the loop's thread started would be a greenlet on its hub,
    # which never runs while the loop does: the view would never answer.
    with httpx.Client(base_url=server.url, timeout=30) as client:
        threads = client.get("in-executors/").json()
    assert threads["loop"] not in threads["executors"]

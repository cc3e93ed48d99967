"""The ORM under a real gunicorn (gthread): the request's own thread and
transaction for async views' ORM calls, and none leaked by background tasks."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.integration.test_gunicorn_requests import ASYNC_ONLY_MIDDLEWARE, checked_server
from tests.support.processes import Server

STYLES = ["decorated", "plain"]  # @runs_async, ASYNC_VIEWS


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with checked_server(tmp_path_factory) as server:
        yield server


@pytest.fixture(scope="module")
def server_with_async_middleware(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with checked_server(tmp_path_factory, **ASYNC_ONLY_MIDDLEWARE) as server:
        yield server


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("middleware", ["sync middleware", "async-only middleware too"])
def test_concurrent_requests_orm_calls_run_at_once_each_in_its_request_thread(
    request: pytest.FixtureRequest, style: str, middleware: str
) -> None:
    name = "server" if middleware == "sync middleware" else "server_with_async_middleware"
    server: Server = request.getfixturevalue(name)
    key = uuid.uuid4().hex
    with (
        httpx.Client(base_url=server.url, timeout=60) as client,
        ThreadPoolExecutor(2) as pool,
    ):
        # Each call waits at a barrier for the other: calls serialised on one
        # thread would break it (and answer 500) instead of meeting there.
        responses = list(pool.map(client.get, [f"orm/barrier/{style}/{key}/"] * 2))
    assert [r.status_code for r in responses] == [200, 200], responses[0].text[:2000]
    request_threads = {int(r.headers["X-Request-Thread"]) for r in responses}
    assert len(request_threads) == 2
    assert {r.json()["orm_thread"] for r in responses} == request_threads


@pytest.mark.parametrize("style", STYLES)
def test_orm_calls_commit_with_the_requests_transaction(client: httpx.Client, style: str) -> None:
    name = uuid.uuid4().hex
    response = client.get(f"orm/create/{style}/{name}/", headers=_atomic(style))
    assert response.json() == {"in_atomic_block": True, "seen": 1}
    assert client.get(f"orm/count/{name}/").json() == {"count": 1}


@pytest.mark.parametrize("style", STYLES)
def test_orm_calls_roll_back_with_the_requests_transaction(
    client: httpx.Client, style: str
) -> None:
    name = uuid.uuid4().hex
    response = client.get(f"orm/create/{style}/{name}/?fail", headers=_atomic(style))
    assert response.status_code == 500
    assert f"failed after creating {name}" in response.text
    assert client.get(f"orm/count/{name}/").json() == {"count": 0}


def test_without_a_transaction_the_plain_views_write_stays(client: httpx.Client) -> None:
    """The control for the rollback: the row is not undone by anything else."""
    name = uuid.uuid4().hex
    response = client.get(f"orm/create/plain/{name}/?fail")
    assert response.status_code == 500
    assert client.get(f"orm/count/{name}/").json() == {"count": 1}


def _atomic(style: str) -> dict[str, str]:
    # The @runs_async view is decorated with transaction.atomic; the plain
    # async view's transaction is the middleware's, asked for by a header.
    return {} if style == "decorated" else {"X-Atomic": "1"}


def test_spawned_tasks_orm_calls_leak_no_connection(client: httpx.Client) -> None:
    report = client.get("orm/spawn/200/").json()
    assert report["calls"] == 200
    assert report["threads"] == ["looptoken-sync_0"]
    # One real connection during each call (the background thread's), none after.
    assert report["during"] == [report["before"] + 1]
    assert report["after"] == report["before"]

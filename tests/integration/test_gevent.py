"""Under a real gunicorn gevent worker, and eventlet's WSGI server: every
request is a greenlet of one OS thread. Under gevent the loop runs in a
native thread and callers wait on the hub; under eventlet the loop is a
green thread that waits in the hub."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.integration.test_gunicorn_requests import EVENTLET, REQUESTS, checked_server
from tests.support.processes import ROOT, Server

GEVENT = ("--worker-class", "gevent", "--worker-connections", "200")


# With --preload the master imports Django: it must be patched before that.
PRELOAD = ("--preload", "--config", "python:tests.integration.gevent_config")


@pytest.fixture(
    scope="module",
    params=[((), {}), (PRELOAD, {}), ((), {"LOOPTOKEN_TEST_BACKEND": "asyncio"}), (None, {})],
    ids=["", "preload", "asyncio-backend", "eventlet"],
)
def server(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Server]:
    options, env = request.param
    worker = EVENTLET if options is None else (*GEVENT, *options)
    with checked_server(tmp_path_factory, worker, **env) as server:
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


def test_the_server_closes_each_response_and_no_other_is_taken_for_it(server: Server) -> None:
    # A connection each, so a greenlet each: under eventlet a new greenlet
    # often has the id (its threading ident) of one that just ended, whose
    # end must not give up the new one's open response as its own.
    for _ in range(5):
        with httpx.Client(base_url=server.url, timeout=30) as client:
            assert client.get("where/plain/").json()["on_shared_loop"]
    assert "was never closed" not in server.stderr()


def test_a_child_process_a_request_runs_starts_no_loop_and_the_request_goes_on(
    server: Server,
) -> None:
    # Forked (by the patched subprocess, which runs the after-fork hooks) from
    # a worker whose app holds a token, the child would start a loop, and its
    # status socket, before its exec: a socket nothing removes, a "running"
    # process in loopstatus until a listing finds it stale.
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for _ in range(3):
            answer = client.get("run-a-child/").json()
            assert answer["child"] == "child"
            assert answer["found"]
            assert answer["sockets_left"] == []
        assert client.get("where/decorated/").json()["on_shared_loop"]  # the worker's own loop


def test_spawned_tasks_orm_calls_run_in_one_background_thread_and_leak_no_connection(
    server: Server,
) -> None:
    with httpx.Client(base_url=server.url, timeout=60) as client:
        report = client.get("orm/spawn/50/").json()
    assert report["calls"] == 50
    assert len(report["threads"]) == 1
    # One real connection during each call (the background thread's), none after.
    assert report["during"] == [report["before"] + 1]
    assert report["after"] == report["before"]


def test_executor_work_runs_off_the_loops_thread(server: Server) -> None:
    # Under gevent, a thread the loop's thread started would be a greenlet on
    # its hub, which never runs while the loop does: the view would never
    # answer. Under eventlet, executor threads are green threads of the hub.
    with httpx.Client(base_url=server.url, timeout=30) as client:
        threads = client.get("in-executors/").json()
    assert threads["loop_thread"] not in threads["executor_threads"]
    if not under_eventlet(server):  # gevent's: OS threads
        assert threads["loop"] not in threads["executors"]


def under_eventlet(server: Server) -> bool:
    """Whether ``server`` is eventlet's WSGI server (the rest are gevent's)."""
    return "tests.integration.eventlet_server" in server.process.args


def test_under_eventlet_async_views_off_is_named_at_start_and_by_the_checks(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    # asgiref would run each async view on a loop of its own, in a green
    # thread next to the shared loop: each takes the other for the running one.
    off = {"LOOPTOKEN_TEST_ASYNC_VIEWS": "off"}
    warning = "looptoken.W008: ASYNC_VIEWS is off under eventlet"
    with checked_server(tmp_path_factory, EVENTLET, **off) as server:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            assert client.get("where/decorated/").json()["on_shared_loop"]  # await_ works
        assert warning in server.stderr()
    patched = _check("import eventlet; eventlet.monkey_patch(); ", **off)
    assert "(looptoken.W008) ASYNC_VIEWS is off under eventlet" in patched
    assert "looptoken.W008" not in _check("", **off)


def _check(prelude: str, **env: str) -> str:
    """``manage.py check`` with the request tests' settings (and ``env``),
    after ``prelude``; what it wrote to stderr."""
    environment = {**os.environ, "DJANGO_SETTINGS_MODULE": REQUESTS, **env}
    environment["PYTHONWARNINGS"] = "ignore"
    command = [sys.executable, "-c", prelude + CHECK]
    done = subprocess.run(
        command, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stderr


CHECK = "from django.core.management import execute_from_command_line as run; run(['', 'check'])"

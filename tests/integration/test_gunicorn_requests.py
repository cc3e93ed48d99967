"""Requests on the shared loop under a real gunicorn with gthread workers."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.integration.conftest import NOISE, Server, stop


def test_views_run_on_each_workers_shared_loop_with_one_pool_per_loop(
    gunicorn: Callable[..., Server],
) -> None:
    server = gunicorn("--worker-class", "gthread", "--workers", "2", "--threads", "4")
    with httpx.Client(base_url=server.url, timeout=10) as client, ThreadPoolExecutor(8) as pool:
        paths = ["where/plain/", "where/decorated/"] * 20
        answers = list(pool.map(lambda path: client.get(path).json(), paths))
    assert all(answer["on_shared_loop"] for answer in answers)
    by_pid: dict[int, set[tuple[int, int]]] = {}
    for answer in answers:
        by_pid.setdefault(answer["pid"], set()).add((answer["loop"], answer["pool"]))
    # One loop and one pool per worker process, shared by all its requests.
    assert all(len(loops_and_pools) == 1 for loops_and_pools in by_pid.values())
    assert stop(server) == 0
    for noise in NOISE:
        assert noise not in server.stderr()


def test_a_request_holds_a_token_beside_the_apps(gunicorn: Callable[..., Server]) -> None:
    server = gunicorn("--worker-class", "gthread", "--workers", "1", "--threads", "2")
    with httpx.Client(base_url=server.url, timeout=10) as client:
        assert client.get("tokens/").json() == {"held": True, "tokens": 2}
        body = client.get("streaming/").text
    assert body == "2\n2\n2\n"  # the app's token and the streaming request's
    assert stop(server) == 0

"""loop_resource: one lazily made object per life of the shared loop."""

from __future__ import annotations

import asyncio
import logging
from typing import ClassVar

import httpx
import pytest

import django_looptoken as looptoken
from tests.support.services import upstream


class Pool:
    """Stands for a connection pool bound to the loop it was made on."""

    made: ClassVar[list[Pool]] = []

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.closed = False
        Pool.made.append(self)

    async def aclose(self) -> None:
        assert asyncio.get_running_loop() is self.loop
        self.closed = True


@pytest.fixture(autouse=True)
def fresh_pools() -> None:
    Pool.made.clear()


def test_one_instance_per_loop_reused_across_calls_and_closed_at_shutdown() -> None:
    pool = looptoken.loop_resource(Pool, close="aclose")

    async def use() -> Pool:
        return pool.get()

    with looptoken.start_loop():
        first = looptoken.await_(use())
        assert looptoken.await_(use()) is first
        assert first.loop is looptoken.get_loop()
        assert not first.closed
    assert first.closed
    assert Pool.made == [first]


def test_a_fresh_instance_after_a_loop_restart() -> None:
    pool = looptoken.loop_resource(Pool, close="aclose")

    async def use() -> Pool:
        return pool.get()

    with looptoken.start_loop():
        first = looptoken.await_(use())
    with looptoken.start_loop():
        second = looptoken.await_(use())
        assert second is not first
        assert second.loop is not first.loop
    assert second.closed


def test_close_can_be_a_callable_sync_or_async() -> None:
    closed: list[str] = []

    def close_sync(instance: Pool) -> None:
        closed.append("sync")

    async def close_async(instance: Pool) -> None:
        await asyncio.sleep(0)
        closed.append("async")

    sync_resource = looptoken.loop_resource(Pool, close=close_sync)
    async_resource = looptoken.loop_resource(Pool, close=close_async)

    async def use() -> None:
        sync_resource.get()
        async_resource.get()

    with looptoken.start_loop():
        looptoken.await_(use())
    assert closed == ["async", "sync"]  # newest first


def test_a_failing_close_is_logged_and_the_others_still_close(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(instance: Pool) -> None:
        raise OSError("close failed")

    good = looptoken.loop_resource(Pool, close="aclose")
    bad = looptoken.loop_resource(Pool, close=broken)

    async def use() -> Pool:
        bad.get()
        return good.get()

    with caplog.at_level(logging.ERROR, logger="django_looptoken"), looptoken.start_loop():
        instance = looptoken.await_(use())
    assert instance.closed
    assert any("Closing <LoopResource of Pool> failed" in r.getMessage() for r in caplog.records)


def test_get_outside_any_loop_is_a_clear_error() -> None:
    pool = looptoken.loop_resource(Pool)
    with pytest.raises(RuntimeError, match=r"inside a coroutine running on an event loop"):
        pool.get()


def test_on_another_loop_one_instance_per_loop_closed_when_that_loop_ends() -> None:
    """An ASGI server's loop (here asyncio.run's) gets its own instance, reused on
    that loop and closed, on that loop, when it shuts down its async generators."""
    pool = looptoken.loop_resource(Pool, close="aclose")

    async def use_twice() -> Pool:
        first = pool.get()
        await asyncio.sleep(0)
        assert pool.get() is first
        assert not first.closed
        return first

    one, two = asyncio.run(use_twice()), asyncio.run(use_twice())
    assert one is not two
    assert one.closed
    assert two.closed
    assert Pool.made == [one, two]
    with looptoken.start_loop():  # the shared loop's instance is apart from those
        shared = looptoken.await_(use_twice())
    assert shared not in (one, two)
    assert shared.closed


def test_bad_arguments() -> None:
    with pytest.raises(TypeError, match="callable factory"):
        looptoken.loop_resource(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="method name"):
        looptoken.loop_resource(Pool, close=42)  # type: ignore[arg-type]


def test_a_shared_httpx_client_reuses_its_connection_across_calls() -> None:
    http = looptoken.loop_resource(httpx.AsyncClient, close="aclose")

    async def peer(url: str) -> str:
        response = await http.get().get(f"{url}/peer")
        return str(response.json()["peer"])

    with upstream() as url, looptoken.start_loop():
        peers = [looptoken.await_(peer(url)) for _ in range(5)]
    assert len(set(peers)) == 1, peers  # one TCP connection for all five calls

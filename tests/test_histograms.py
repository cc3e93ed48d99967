"""The status's histograms: await_ durations and the loop's lag, since the loop started."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import django_looptoken as looptoken
from django_looptoken._histogram import BUCKETS, Histogram
from tests.support.processes import wait_until


def count_at(histogram: dict[str, Any], bound: float | str) -> int:
    """The cumulative count at ``bound``."""
    (count,) = [count for at, count in histogram["buckets"] if at == bound]
    return int(count)


def test_buckets_are_cumulative_and_end_with_every_observation() -> None:
    histogram = Histogram()
    for seconds in (0.0005, 0.003, 0.003, 0.2, 60.0):
        histogram.observe(seconds)
    figures = histogram.snapshot()
    assert [bound for bound, _ in figures["buckets"]] == [*BUCKETS, "+Inf"]
    assert count_at(figures, 0.001) == 1
    assert count_at(figures, 0.005) == 3
    assert count_at(figures, 0.25) == 4
    assert count_at(figures, 10.0) == 4
    assert count_at(figures, "+Inf") == figures["count"] == 5
    assert figures["sum"] == round(0.0005 + 0.003 + 0.003 + 0.2 + 60.0, 6)


def test_an_await_lands_in_the_bucket_of_its_duration(token: looptoken.LoopToken) -> None:
    before = looptoken.status()["await_seconds"]
    looptoken.await_(asyncio.sleep(0.15))
    after = looptoken.status()["await_seconds"]
    assert after["count"] == before["count"] + 1
    assert count_at(after, 0.1) == count_at(before, 0.1)  # not at or under 100 ms
    assert count_at(after, 0.25) == count_at(before, 0.25) + 1
    assert after["sum"] - before["sum"] >= 0.14  # loop timers may fire a hair early


def test_await_multiple_is_one_observation(token: looptoken.LoopToken) -> None:
    before = looptoken.status()["await_seconds"]["count"]
    looptoken.await_multiple([asyncio.sleep(0), asyncio.sleep(0), asyncio.sleep(0)])
    assert looptoken.status()["await_seconds"]["count"] == before + 1


def _late(status: dict[str, Any]) -> int:
    """Ticks more than 100 ms late so far."""
    lag = status["lag_seconds"]
    return int(lag["count"]) - count_at(lag, 0.1)


async def _block(seconds: float) -> None:
    time.sleep(seconds)  # noqa: ASYNC251 - holds the loop, as the test needs


def test_a_blocked_loop_shows_in_the_lag_histogram_and_the_loop_cpu_time(
    looptoken_settings: Any,
) -> None:
    looptoken_settings(SLOW_CALLBACK_DURATION=0.1)
    with looptoken.start_loop():
        wait_until(lambda: looptoken.status()["lag_seconds"]["count"] > 0, "a first tick")
        before = looptoken.status()
        looptoken.await_(_block(0.3))
        # The tick that was due during the block runs late by most of it.
        wait_until(lambda: _late(looptoken.status()) > _late(before), "a tick later than 100 ms")
        after = looptoken.status()
    assert after["lag_seconds"]["sum"] - before["lag_seconds"]["sum"] >= 0.15
    assert after["loop_cpu_s"] > before["loop_cpu_s"]  # time.sleep is off the CPU; the rest is not

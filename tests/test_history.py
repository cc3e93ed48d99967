"""A loop's last ten minutes: the points the loop records, and the staff
page's charts of them."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

import django_looptoken as looptoken
from django_looptoken import _history
from django_looptoken._sparkline import HEIGHT, WIDTH, sparklines
from tests.support.processes import wait_until

STEP = 0.1  # seconds per point here, instead of ten


@pytest.fixture
def short_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    """A point every ``STEP`` for the loops these tests start."""
    monkeypatch.setattr(_history, "STEP_SECONDS", STEP)


def test_a_point_per_step_with_the_await_rate_and_the_tasks(
    short_steps: None, looptoken_settings: Any
) -> None:
    looptoken_settings(STATUS_DIR=None)
    with looptoken.start_loop():
        wait_until(lambda: len(looptoken.status()["history"]) >= 1, "a first point")
        first = len(looptoken.status()["history"])
        for _ in range(20):
            looptoken.await_(asyncio.sleep(0))
        wait_until(lambda: len(looptoken.status()["history"]) >= first + 2, "two more points")
        points = looptoken.status()["history"]
    assert set(points[-1]) == {"at", "lag_p99_ms", "awaits_per_s", "tasks"}
    assert [p["at"] for p in points] == sorted(p["at"] for p in points)
    # The twenty calls fall in one or two of the points after the first.
    assert sum(p["awaits_per_s"] * STEP for p in points[first:]) == pytest.approx(20, rel=0.3)
    assert all(p["tasks"] >= 0 for p in points)


def test_the_history_keeps_ten_minutes_of_points() -> None:
    assert _history.POINTS * _history.STEP_SECONDS == 600


def test_a_sparkline_spans_the_chart_from_zero_to_the_peak() -> None:
    history = [{"lag_p99_ms": v, "awaits_per_s": 0.0, "tasks": 1} for v in (0.0, 5.0, 10.0)]
    lag, awaits, tasks = sparklines(history)
    coords = [tuple(map(float, pair.split(","))) for pair in lag.points.split()]
    assert coords[-1][0] == WIDTH  # the latest point at the right edge
    assert [y for _, y in coords] == [HEIGHT - 1, HEIGHT / 2, 1]  # 0, half the peak, the peak
    assert (lag.latest, lag.peak) == ("10.0 ms", "10.0 ms")
    assert awaits.points  # all zeros: a flat line at the bottom, not a division by zero
    assert tasks.latest == "1"


def test_fewer_than_two_values_draw_nothing_yet() -> None:
    (lag, _, _) = sparklines([{"lag_p99_ms": None, "awaits_per_s": 1.0, "tasks": 0}])
    assert lag.points == ""
    assert lag.latest == "-"


@pytest.mark.django_db
def test_the_staff_page_draws_each_processs_charts(
    short_steps: None, looptoken_settings: Any, settings: Any, tmp_path: Path, client: Client
) -> None:
    settings.TEMPLATES = [
        {"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True}
    ]
    settings.ROOT_URLCONF = "tests.integration.urls"
    looptoken_settings(STATUS_DIR=str(tmp_path / "status"))
    client.force_login(User.objects.create_user("staff", is_staff=True))
    with looptoken.start_loop():
        # A pending task keeps the lag probe at its fast interval: ticks in every step.
        looptoken.spawn(asyncio.sleep(30))
        wait_until(
            lambda: sum(p["lag_p99_ms"] is not None for p in looptoken.status()["history"]) >= 2,
            "two points with a lag",
        )
        page = client.get("/looptoken/").content.decode()
    figure = re.search(r'<figure data-pid="(\d+)">(.*?)</figure>', page, re.S)
    assert figure is not None, page
    assert int(figure.group(1)) == looptoken.status()["pid"]
    assert figure.group(2).count("<polyline points=") == 3  # lag, await_ rate, tasks

"""The Prometheus metrics URL: who may read it, and what a scrape reports,
parsed with prometheus_client's own text parser."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from django_looptoken.checks import check_looptoken_settings
from tests.status_worker import Worker, running_worker

pytestmark = pytest.mark.one_backend  # the worker process picks its own loop

TOKEN = "a-token-long-enough-to-count-0123456789"
METRICS = "/looptoken/metrics"


@pytest.fixture(autouse=True)
def metrics_settings(settings: Any, tmp_path: Path) -> Path:
    """The URLs that include ``django_looptoken.urls``, our own status dir, a token."""
    settings.ROOT_URLCONF = "tests.integration.urls"
    status_dir = tmp_path / "status"
    settings.LOOPTOKEN = {
        **settings.LOOPTOKEN,
        "STATUS_DIR": str(status_dir),
        "METRICS_TOKEN": TOKEN,
    }
    return status_dir


@pytest.fixture
def worker(metrics_settings: Path) -> Iterator[Worker]:
    with running_worker(metrics_settings) as worker:
        yield worker


def samples(text: str) -> dict[str, list[Any]]:
    """Each metric family's samples, by family name."""
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def test_without_credentials_the_answer_is_401_and_no_data(client: Client) -> None:
    response = client.get(METRICS)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="looptoken metrics"'
    assert b"METRICS_TOKEN" in response.content
    assert b"looptoken_" not in response.content


@pytest.mark.django_db
def test_a_wrong_token_or_a_user_who_is_not_staff_gets_403(client: Client) -> None:
    assert client.get(METRICS, HTTP_AUTHORIZATION="Bearer not-the-token").status_code == 403
    client.force_login(User.objects.create_user("visitor"))
    assert client.get(METRICS).status_code == 403


def test_with_no_token_configured_a_bearer_token_opens_nothing(
    client: Client, settings: Any
) -> None:
    settings.LOOPTOKEN = {**settings.LOOPTOKEN, "METRICS_TOKEN": None}
    assert client.get(METRICS, HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 401


def test_the_token_reads_every_process_of_the_project(client: Client, worker: Worker) -> None:
    response = client.get(METRICS, HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=")
    assert "no-store" in response["Cache-Control"]
    found = samples(response.content.decode())
    (up,) = [s for s in found["looptoken_process_up"] if s.labels["pid"] == str(worker.pid)]
    assert up.value == 1
    labels = {"pid": str(worker.pid), "role": "worker", "project": "tests.settings"}
    running = {s.name: s for s in found["looptoken_loop_running"] if s.labels == labels}
    assert running["looptoken_loop_running"].value == 1
    for family in (
        "looptoken_loop_tokens",
        "looptoken_loop_tasks",
        "looptoken_loop_blocked_seconds",
        "looptoken_loop_uptime_seconds",
    ):
        assert [s for s in found[family] if s.labels == labels], family
    for counter in ("looptoken_await_calls", "looptoken_await_errors", "looptoken_slow_callbacks"):
        (sample,) = [s for s in found[counter] if s.labels == labels]
        assert sample.name == f"{counter}_total"  # a counter, named as Prometheus expects
    (cpu,) = [s for s in found["looptoken_loop_cpu_seconds"] if s.labels == labels]
    assert cpu.name == "looptoken_loop_cpu_seconds_total"
    for histogram in ("looptoken_await_duration_seconds", "looptoken_loop_lag_seconds"):
        mine = [s for s in found[histogram] if s.labels.get("pid") == str(worker.pid)]
        bounds = [s.labels["le"] for s in mine if s.name == f"{histogram}_bucket"]
        assert bounds[0] == "0.001"
        assert bounds[-1] == "+Inf"
        assert {s.name for s in mine} == {
            f"{histogram}_{part}" for part in ("bucket", "sum", "count")
        }


@pytest.mark.django_db
def test_staff_read_the_metrics_without_a_token(client: Client, worker: Worker) -> None:
    client.force_login(User.objects.create_user("staff", is_staff=True))
    response = client.get(METRICS)
    assert response.status_code == 200
    assert f'looptoken_process_up{{pid="{worker.pid}"'.encode() in response.content


@pytest.mark.parametrize("token", ["short", 12345])
def test_e013_a_token_that_is_not_a_long_string(settings: Any, token: object) -> None:
    settings.LOOPTOKEN = {"METRICS_TOKEN": token}
    (message,) = check_looptoken_settings(None)
    assert message.id == "looptoken.E013"
    assert "short" not in message.msg  # the value is a secret: never in a message

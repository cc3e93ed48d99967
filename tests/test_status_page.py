"""The staff-only status page: access rules, the table, JSON, nothing running."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from tests.status_worker import Worker, running_worker

pytestmark = pytest.mark.django_db

URL = "/looptoken/"


@pytest.fixture(autouse=True)
def page_settings(settings: Any, tmp_path: Path) -> Path:
    """Templates, the URLs that include ``django_looptoken.urls``, our own status dir."""
    settings.TEMPLATES = [
        {"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True}
    ]
    settings.ROOT_URLCONF = "tests.integration.urls"
    status_dir = tmp_path / "status"
    settings.LOOPTOKEN = {**settings.LOOPTOKEN, "STATUS_DIR": str(status_dir)}
    return status_dir


@pytest.fixture
def staff(client: Client) -> Client:
    client.force_login(User.objects.create_user("staff", is_staff=True))
    return client


@pytest.fixture
def worker(page_settings: Path) -> Iterator[Worker]:
    with running_worker(page_settings) as worker:
        yield worker


def test_anonymous_users_get_the_login_redirect(client: Client) -> None:
    response = client.get(URL)
    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/?next=/looptoken/"


def test_json_for_anonymous_users_is_a_redirect_too(client: Client) -> None:
    response = client.get(URL, {"format": "json"})
    assert response.status_code == 302


def test_logged_in_users_who_are_not_staff_get_403(client: Client) -> None:
    client.force_login(User.objects.create_user("member"))
    assert client.get(URL).status_code == 403
    assert client.get(URL, {"format": "json"}).status_code == 403


def test_inactive_staff_are_anonymous_again(client: Client) -> None:
    user = User.objects.create_user("gone", is_staff=True)
    client.force_login(user)
    user.is_active = False
    user.save()
    # ModelBackend no longer returns an inactive user: the session is anonymous.
    assert client.get(URL).status_code == 302


def test_staff_see_every_process_in_a_self_refreshing_table(staff: Client, worker: Worker) -> None:
    response = staff.get(URL)
    assert response.status_code == 200
    html = response.content.decode()
    assert '<meta http-equiv="refresh" content="5">' in html
    header = re.findall(r"<th>([^<]*)</th>", html)
    assert header[:3] == ["PID", "STATE", "BACKEND"]
    rows = [
        re.findall(r"<td>([^<]*)</td>", row)
        for row in re.findall(r'<tr class="running">(.*?)</tr>', html)
    ]
    by_pid = {int(cells[0]): cells for cells in rows}
    # The worker, and this process: the request's middleware started its loop.
    assert set(by_pid) == {worker.pid, os.getpid()}
    assert by_pid[worker.pid][1:3] == ["running", "uvloop.Loop"]
    assert by_pid[worker.pid][header.index("TOKENS")] == "1"
    # Plain HTML: no script, nothing loaded from elsewhere.
    assert "<script" not in html
    assert not re.search(r'(src|href)="(https?:)?//', html)


def test_staff_get_json(staff: Client, worker: Worker, page_settings: Path) -> None:
    worker.tell("hold 2", "held")
    data = staff.get(URL, {"format": "json"}).json()
    worker.tell("release", "released")
    assert data["status_dir"] == str(page_settings)
    assert data["project"] == "tests.settings"
    assert data["error"] is None
    (process,) = [p for p in data["processes"] if p["pid"] == worker.pid]
    assert process["tasks"] == 2


def test_with_nothing_running_the_page_says_what_would_start(staff: Client, settings: Any) -> None:
    # Without the middleware (and AUTOSTART off) not even this process runs a loop.
    settings.MIDDLEWARE = [m for m in settings.MIDDLEWARE if "looptoken" not in m]
    html = staff.get(URL).content.decode()
    assert "No live process of this project serves a status." in html
    assert "<code>uvloop.Loop</code> (uvloop installed)" in html
    assert "BACKEND = &#x27;auto&#x27;" in html


def test_an_unsafe_status_dir_is_shown(staff: Client, page_settings: Path) -> None:
    page_settings.mkdir(mode=0o777)
    page_settings.chmod(0o777)
    response = staff.get(URL)
    assert response.status_code == 200
    assert "has mode 0777; it must be 0700" in response.content.decode()
    assert (
        staff.get(URL, {"format": "json"})
        .json()["error"]
        .endswith(f"(chmod 700 {page_settings}).")
    )

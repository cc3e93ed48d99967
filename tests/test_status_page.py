"""The staff-only status page: access rules, the table, JSON, nothing running."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.http import HttpResponse
from django.test import Client

from django_looptoken import _status_socket
from tests.status_worker import Worker, running_worker, silent_processes

pytestmark = pytest.mark.django_db

URL = "/looptoken/"
# More silent processes than a pool of threads would ask at once.
SILENT = 48


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


def assert_own_headers(response: HttpResponse) -> None:
    """The page's answers say it themselves: never framed, never stored."""
    assert response["X-Frame-Options"] == "DENY"
    assert "no-store" in cache_directives(response)


def cache_directives(response: HttpResponse) -> set[str]:
    return {part.strip() for part in response["Cache-Control"].split(",")}


def test_without_a_login_page_anonymous_users_get_403_saying_how_to_log_in(
    client: Client,
) -> None:
    # A project without LOGIN_URL or the admin: Django's default login URL is a 404.
    assert client.get("/accounts/login/").status_code == 404
    response = client.get(URL)
    assert response.status_code == 403
    reason = re.search(r'<p id="reason">([^<]*)</p>', response.content.decode())
    assert reason is not None
    assert reason.group(1) == (
        "The loop status page is for staff users only. Log in as a staff user on this "
        "site&#x27;s login page, then open this page again (set LOGIN_URL, or route "
        "django.contrib.admin, to be sent to a login page from here)."
    )
    assert_own_headers(response)


def test_anonymous_users_are_sent_to_the_projects_login_url(client: Client, settings: Any) -> None:
    settings.LOGIN_URL = "/log-in/"
    response = client.get(URL)
    assert response.status_code == 302
    assert response["Location"] == "/log-in/?next=/looptoken/"
    assert_own_headers(response)


@pytest.mark.parametrize("login_url", [None, "/log-in/"])
def test_json_for_anonymous_users_is_a_json_403(
    client: Client, settings: Any, login_url: str | None
) -> None:
    if login_url is not None:
        settings.LOGIN_URL = login_url  # a JSON client is never sent to an HTML form
    response = client.get(URL, {"format": "json"})
    assert response.status_code == 403
    assert response["Content-Type"] == "application/json"
    assert response.json()["error"].startswith(
        "The loop status page is for staff users only. Log in as a staff user"
    )
    assert_own_headers(response)


def test_logged_in_users_who_are_not_staff_get_403_in_html_and_json(client: Client) -> None:
    client.force_login(User.objects.create_user("member"))
    page = client.get(URL)
    assert page.status_code == 403
    assert page["Content-Type"] == "text/html; charset=utf-8"
    reason = "The loop status page is for staff users only. You are logged in as member."
    assert f'<p id="reason">{reason}</p>' in page.content.decode()
    assert_own_headers(page)
    data = client.get(URL, {"format": "json"})
    assert data.status_code == 403
    assert data["Content-Type"] == "application/json"
    assert data.json() == {"error": reason}
    assert_own_headers(data)


def test_inactive_staff_are_anonymous_again(client: Client) -> None:
    user = User.objects.create_user("gone", is_staff=True)
    client.force_login(user)
    user.is_active = False
    user.save()
    # ModelBackend no longer returns an inactive user: the session is anonymous.
    response = client.get(URL)
    assert response.status_code == 403
    assert "Log in as a staff user" in response.content.decode()


def test_staff_answers_carry_the_pages_own_headers_whatever_the_middleware(
    staff: Client, settings: Any
) -> None:
    # A project that lets its pages be framed by its own origin, and caches them.
    settings.MIDDLEWARE = [
        *settings.MIDDLEWARE,
        "django.middleware.clickjacking.XFrameOptionsMiddleware",
    ]
    settings.X_FRAME_OPTIONS = "SAMEORIGIN"
    for response in (staff.get(URL), staff.get(URL, {"format": "json"})):
        assert response.status_code == 200
        assert_own_headers(response)


def test_staff_see_every_process_in_a_self_refreshing_table(staff: Client, worker: Worker) -> None:
    response = staff.get(URL)
    assert response.status_code == 200
    html = response.content.decode()
    assert '<meta http-equiv="refresh" content="5">' in html
    header = re.findall(r"<th>([^<]*)</th>", html)
    assert header[:4] == ["PID", "ROLE", "STATE", "BACKEND"]
    rows = [
        re.findall(r"<td>(?:<a [^>]*>)?([^<]*)(?:</a>)?</td>", row)
        for row in re.findall(r'<tr class="running">(.*?)</tr>', html)
    ]
    by_pid = {int(cells[0]): cells for cells in rows}
    assert f'<a href="tasks/{worker.pid}/" title="its pending tasks">' in html
    # The worker, and this process: the request's middleware started its loop.
    assert set(by_pid) == {worker.pid, os.getpid()}
    assert by_pid[worker.pid][1:4] == ["worker", "running", "uvloop.Loop"]
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


@pytest.mark.one_backend  # it shows the project's default settings
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


def test_silent_processes_cost_the_page_one_time_limit_in_all(
    staff: Client, page_settings: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    limit = 1.0
    monkeypatch.setattr(_status_socket, "CLIENT_SECONDS", limit)
    with silent_processes(page_settings, SILENT, "tests.settings") as pids:
        started = time.monotonic()
        response = staff.get(URL)
        elapsed = time.monotonic() - started
    assert response.status_code == 200
    html = response.content.decode()
    silent = re.findall(r'<tr class="silent"><td>(\d+)</td>.*?</tr>', html)
    assert sorted(map(int, silent)) == sorted(pids)
    assert html.count(f"no answer within {limit:g} s (is the process stopped or hung?)") == SILENT
    # Each was given the whole limit, and all of them the same one.
    assert limit <= elapsed < limit + 1.0


def test_the_page_shows_no_process_of_another_project(staff: Client, page_settings: Path) -> None:
    with (
        silent_processes(page_settings, 1, "tests.settings") as (ours,),
        silent_processes(page_settings, 3, "another.project.settings") as theirs,
    ):
        html = staff.get(URL).content.decode()
        data = staff.get(URL, {"format": "json"}).json()
    assert re.findall(r'<tr class="silent"><td>(\d+)</td>', html) == [str(ours)]
    for pid in theirs:
        assert str(pid) not in html
    assert [silent["pid"] for silent in data["silent"]] == [ours]


def test_staff_see_a_processs_tasks_escaped_on_a_page_of_their_own(
    staff: Client, worker: Worker
) -> None:
    worker.tell("nest", "nested")
    response = staff.get(f"{URL}tasks/{worker.pid}/")
    assert response.status_code == 200
    assert_own_headers(response)
    html = response.content.decode()
    assert f"Pending tasks of process {worker.pid} (worker)" in html
    # Coroutine names hold "<locals>": shown, never taken for markup.
    assert "<code>serve.&lt;locals&gt;.outer</code>" in html
    assert "<locals>" not in html
    assert "<li>serve.&lt;locals&gt;.middle (" in html
    assert "<li>awaits a Future</li>" in html
    assert "<form" not in html  # read-only: cancelling is for loopstatus
    assert "<script" not in html
    listed = staff.get(f"{URL}tasks/{worker.pid}/?format=json").json()
    (answer,) = listed["processes"]
    assert [task["coroutine"] for task in answer["tasks"]] == ["serve.<locals>.outer"]
    worker.tell("release", "released")


def test_the_tasks_page_of_a_pid_that_is_not_a_process_of_the_project(
    staff: Client, worker: Worker
) -> None:
    response = staff.get(f"{URL}tasks/{os.getppid()}/")
    assert response.status_code == 404
    assert f"Process {os.getppid()} is not a live process of this project" in (
        response.content.decode()
    )
    assert staff.get(f"{URL}tasks/{os.getppid()}/?format=json").status_code == 404


def test_the_tasks_page_is_for_staff_only(client: Client, worker: Worker) -> None:
    assert client.get(f"{URL}tasks/{worker.pid}/").status_code == 403
    assert client.get(f"{URL}tasks/{worker.pid}/?format=json").status_code == 403

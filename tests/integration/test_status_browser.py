"""The status page in a real browser: headless Debian Chromium against gunicorn.

Needs Debian's ``chromium`` and ``chromium-driver`` (``make test`` installs
them when run as root, as CI does). Without them this test fails and says how
to install them. The screenshot goes to the test's tmp dir; with
``LOOPTOKEN_UPDATE_SCREENSHOT=1`` it also replaces ``docs/status-page.png``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.integration.status_servers import StatusServer, held_requests, settings_env
from tests.integration.status_servers import status_gunicorn as status_gunicorn  # the fixture
from tests.support.processes import DEADLINE_S, ROOT, stop

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SCREENSHOT = ROOT / "docs" / "status-page.png"
WORKERS = ("--worker-class", "gthread", "--workers", "2", "--threads", "4")

PASSWORD = "a password for this test only"
REASON = "The loop status page is for staff users only."

# Run in `manage.py shell`: a staff user with a password, and a logged-in
# session of a user who is not staff; prints the session's key.
CREATE_USERS = f"""
from django.contrib.auth.models import User
from django.test import Client
User.objects.create_user("operator", password={PASSWORD!r}, is_staff=True)
client = Client()
client.force_login(User.objects.create_user("member"))
print(client.cookies["sessionid"].value)
"""


def require_browser() -> None:
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not os.access(path, os.X_OK)]
    if missing:
        pytest.fail(
            f"{' and '.join(missing)} not found: the status page's browser test needs "
            "Debian's Chromium and ChromeDriver. `make test` installs them when run as "
            "root; otherwise run: sudo apt-get update && sudo apt-get install chromium "
            "chromium-driver",
            pytrace=False,
        )


def django_admin(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "django", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def _drawn(driver: Any, by: Any) -> int:
    """How many charts the page shows drawn (a polyline each)."""
    return len(driver.find_elements(by.CSS_SELECTOR, "#charts polyline"))


def test_anonymous_then_not_staff_then_staff_in_headless_chromium(
    status_gunicorn: Callable[..., StatusServer], tmp_path: Path
) -> None:
    require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.wait import WebDriverWait

    database = tmp_path / "db.sqlite3"
    setup_env = settings_env(tmp_path / "setup-status", database)
    django_admin(setup_env, "migrate", "--noinput")
    # The last line: Django 5.2's shell first says what it imported.
    member_session = django_admin(setup_env, "shell", "-c", CREATE_USERS).splitlines()[-1]

    # --preload: the master loads the app (its loop idles) before forking the two.
    server = status_gunicorn("--preload", *WORKERS, database=database)
    master = server.server.process.pid
    processes = {p["pid"] for p in server.wait_for_workers(3)}
    workers = processes - {master}

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,760",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(argument)
    service = Service(CHROMEDRIVER, log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(options=options, service=service)
    try:
        driver.set_page_load_timeout(DEADLINE_S)
        page = server.server.url + "looptoken/"

        # Anonymous: the admin's login page, which a default project has.
        driver.get(page)
        assert driver.current_url == server.server.url + "admin/login/?next=/looptoken/"
        assert driver.find_element(By.ID, "id_username").is_displayed()

        # Logged in, not staff: a 403 page saying why, and a JSON 403.
        driver.add_cookie({"name": "sessionid", "value": member_session, "path": "/"})
        driver.get(page)
        assert driver.find_element(By.TAG_NAME, "h1").text == "403 Forbidden"
        assert driver.find_element(By.ID, "reason").text == (
            f"{REASON} You are logged in as member."
        )
        driver.get(page + "?format=json")
        answer = json.loads(driver.find_element(By.TAG_NAME, "pre").text)
        assert answer == {"error": f"{REASON} You are logged in as member."}

        # Staff: log in on the admin's form, which sends them back to the page.
        driver.delete_all_cookies()
        driver.get(page)
        driver.find_element(By.ID, "id_username").send_keys("operator")
        driver.find_element(By.ID, "id_password").send_keys(PASSWORD)
        driver.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
        WebDriverWait(driver, DEADLINE_S).until(expected_conditions.url_to_be(page))

        with held_requests(server, tmp_path, 3) as per_worker:
            driver.get(page)
            heading = driver.find_element(By.TAG_NAME, "h1").text
            assert heading == "Shared event loops of tests.integration.status_settings"
            header = [th.text for th in driver.find_elements(By.CSS_SELECTOR, "#processes th")]
            rows = driver.find_elements(By.CSS_SELECTOR, "#processes tbody tr")
            cells = {
                int(row.find_element(By.TAG_NAME, "td").text): [
                    td.text for td in row.find_elements(By.TAG_NAME, "td")
                ]
                for row in rows
            }
            assert set(cells) == processes
            for pid, row in cells.items():
                assert row[header.index("ROLE")] == ("master" if pid == master else "worker")
                assert row[header.index("STATE")] == "running"
                assert row[header.index("BACKEND")] == "uvloop.Loop"
                assert int(row[header.index("TASKS")]) >= per_worker[pid]
            assert set(per_worker) <= workers
            # The app's token per process, two per held request, and the page's own.
            tokens = sum(int(row[header.index("TOKENS")]) for row in cells.values())
            assert tokens == len(processes) + 2 * sum(per_worker.values()) + 1
            state = rows[0].find_elements(By.TAG_NAME, "td")[header.index("STATE")]
            assert state.value_of_css_property("color") == "rgba(23, 111, 44, 1)"  # green
            # Each process's three charts, once two points of each are in
            # (a point every 0.5 s here; the page reloads to show them).
            WebDriverWait(driver, DEADLINE_S).until(
                lambda d: d.get(page) or _drawn(d, By) == 3 * len(processes)
            )
            figures = driver.find_elements(By.CSS_SELECTOR, "#charts figure")
            assert {int(f.get_attribute("data-pid")) for f in figures} == processes
            rows = driver.find_elements(By.CSS_SELECTOR, "#processes tbody tr")
            shot = tmp_path / "status-page.png"
            assert driver.save_screenshot(str(shot))
        # The page reloads itself (meta refresh): the old table goes stale.
        WebDriverWait(driver, 30).until(expected_conditions.staleness_of(rows[0]))
        assert len(driver.find_elements(By.CSS_SELECTOR, "#processes tbody tr")) == 3
    finally:
        driver.quit()
    assert shot.stat().st_size > 10_000
    if os.environ.get("LOOPTOKEN_UPDATE_SCREENSHOT") == "1":
        shutil.copyfile(shot, SCREENSHOT)
    assert stop(server.server) == 0

"""The example project's streaming page under gunicorn gthread, as ``make demo`` serves it:
the upstream's ticker relayed as server-sent events, each arriving on its own,
in a plain HTTP client and in headless Chromium."""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.integration.test_status_browser import CHROMEDRIVER, CHROMIUM, require_browser
from tests.support.processes import ROOT, Launcher, Server, free_port
from tests.test_example_project import EXAMPLE, example_env
from tests.test_example_project import migrated_db as migrated_db  # the fixtures
from tests.test_example_project import upstream_url as upstream_url

TICK_S = 0.5  # example_project/upstream.py's /ticker


@pytest.fixture
def example_site(
    launcher: Launcher, tmp_path: Path, migrated_db: Path, upstream_url: str
) -> Server:
    database = tmp_path / "db.sqlite3"
    shutil.copyfile(migrated_db, database)
    env = example_env(database, upstream_url, tmp_path / "status")
    env["PYTHONPATH"] = os.pathsep.join([str(EXAMPLE), str(ROOT)])
    port = free_port()
    command = [
        *(sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}"),
        *("--chdir", str(EXAMPLE)),
        *("--worker-class", "gthread", "--workers", "1", "--threads", "4"),
        "example.wsgi:application",
    ]
    settings = "example.settings"
    return launcher.launch("example", command, port=port, settings=settings, extra_env=env)


def test_the_ticker_events_arrive_one_by_one(example_site: Server) -> None:
    with httpx.Client(base_url=example_site.url, timeout=30) as client:
        page = client.get("stream/?count=4")
        assert page.status_code == 200
        assert 'new EventSource("/stream/events/?count=4")' in page.text
        arrivals: list[tuple[float, str]] = []
        with client.stream("GET", "stream/events/?count=4") as response:
            assert response.headers["content-type"] == "text/event-stream"
            for line in response.iter_lines():
                if line.startswith("event: "):
                    arrivals.append((time.monotonic(), line.removeprefix("event: ")))
    assert [name for _, name in arrivals] == ["tick"] * 4 + ["done"]
    # Four ticks, 0.5 s apart upstream: relayed as they come, the first is
    # here about 1.5 s before the last; collected whole, all at once.
    assert arrivals[3][0] - arrivals[0][0] > 2 * TICK_S


def test_the_page_shows_each_event_as_it_arrives_in_chromium(
    example_site: Server, tmp_path: Path
) -> None:
    require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.wait import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(argument)
    service = Service(CHROMEDRIVER, log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(options=options, service=service)
    try:
        driver.set_page_load_timeout(60)
        driver.get(example_site.url + "stream/?count=6")

        def rows() -> int:
            return len(driver.find_elements(By.CSS_SELECTOR, "#ticks tbody tr"))

        def state() -> str:
            return str(driver.find_element(By.ID, "stream-state").text)

        # The first event shows while the stream still runs: the page is live.
        WebDriverWait(driver, 30, poll_frequency=0.05).until(lambda _: rows() >= 1)
        assert state() == "Streaming…"
        assert rows() < 6
        WebDriverWait(driver, 30).until(lambda _: state().startswith("Done"))
        assert state() == "Done: 6 events, each shown as it arrived."
        arrived = [
            float(row.find_elements(By.TAG_NAME, "td")[3].text.removesuffix(" s"))
            for row in driver.find_elements(By.CSS_SELECTOR, "#ticks tbody tr")
        ]
    finally:
        driver.quit()
    assert arrived == sorted(arrived)
    assert arrived[-1] - arrived[0] > 3 * TICK_S  # six ticks, spread over about 2.5 s

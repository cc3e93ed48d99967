"""The example project ``make demo`` serves: its pages show what they claim.

Each test drives the example through Django's test client in a subprocess of
its own (the example has its own settings and apps), on its own copy of a
database ``manage.py setupdemo`` migrated and seeded, against the real
aiohttp upstream server of ``example_project/upstream.py`` on a free port.
"""

from __future__ import annotations

import html
import importlib.util
import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.processes import free_port

# One run: the example project runs in servers of its own, with its own settings.
pytestmark = pytest.mark.one_backend

EXAMPLE = Path(__file__).resolve().parent.parent / "example_project"
NOISE = ("Traceback", "ResourceWarning", "was never awaited", "Task was destroyed")
USERNAME, PASSWORD = "demo", "looptoken"

_spec = importlib.util.spec_from_file_location("example_upstream", EXAMPLE / "upstream.py")
assert _spec is not None
assert _spec.loader is not None
upstream_module = sys.modules[_spec.name] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(upstream_module)
# Each panel's upstream delay, in seconds, as upstream.py answers.
DELAYS = {path.strip("/"): delay for path, (delay, _) in upstream_module.ROUTES.items()}

# What each script the example runs starts with: Django set up with the
# example's settings, a test client, and a way to hand results back as JSON.
PRELUDE = """
import json, os
import django
django.setup()
from django.test import Client
import django_looptoken as looptoken
client = Client()
def page(response):
    return {
        "status": response.status_code,
        "location": response.get("Location"),
        "html": response.content.decode(),
    }
def emit(**values):
    print(json.dumps(values, default=str))
"""


@dataclass
class Example:
    """The example project with its own database, next to an upstream server."""

    env: dict[str, str]

    def manage(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``manage.py ARGS`` in the example."""
        return self._run("manage.py", *args)

    def run(self, script: str, *, logged: tuple[str, str] | None = None) -> dict[str, Any]:
        """Run ``script`` after ``PRELUDE`` in the example; what it ``emit``-ted.

        Its stderr must be quiet, or be the one log entry with a traceback
        that ``logged`` expects: its first and last lines.
        """
        result = self._run("-c", PRELUDE + script)
        assert result.returncode == 0, result.stderr
        lines = result.stderr.strip().splitlines()
        if logged:
            assert (lines[0], lines[-1]) == logged, result.stderr
            assert result.stderr.count("Traceback") == 1, result.stderr
        else:
            for noise in NOISE:
                assert noise not in result.stderr, result.stderr
        values: dict[str, Any] = json.loads(result.stdout.splitlines()[-1])
        return values

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, *args],
            cwd=EXAMPLE,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )


@pytest.fixture(scope="module")
def upstream_url() -> Iterator[str]:
    """The example's upstream server on a free port, stopped by its pid afterwards."""
    with socket.create_server(("127.0.0.1", 0)) as sock:
        port = sock.getsockname()[1]
        process = subprocess.Popen(
            [sys.executable, "upstream.py", "--fd", str(sock.fileno())],
            cwd=EXAMPLE,
            pass_fds=[sock.fileno()],
            stderr=subprocess.PIPE,
        )
    # The socket listens already: requests wait in its backlog until the server runs.
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            _, stderr = process.communicate(timeout=20)
        finally:
            process.kill()  # a no-op once it has exited
        assert process.returncode == 0, stderr.decode()


def example_env(database: Path, upstream: str, status_dir: Path) -> dict[str, str]:
    """The environment of the example's processes in these tests."""
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "example.settings",
        "PYTHONDEVMODE": "1",
        "EXAMPLE_DB": str(database),
        "EXAMPLE_UPSTREAM": upstream,
        "EXAMPLE_STATUS_DIR": str(status_dir),
    }


@pytest.fixture(scope="module")
def migrated_db(tmp_path_factory: pytest.TempPathFactory, upstream_url: str) -> Path:
    """A database ``manage.py setupdemo`` has migrated, seeded and given the staff user."""
    where = tmp_path_factory.mktemp("example-db")
    env = example_env(where / "db.sqlite3", upstream_url, where / "status")
    result = Example(env).manage("setupdemo", "--username", USERNAME, "--password", PASSWORD)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"Staff user {USERNAME!r} created."
    return where / "db.sqlite3"


@pytest.fixture
def example(tmp_path: Path, migrated_db: Path, upstream_url: str) -> Example:
    """The example on a fresh copy of the migrated database."""
    database = tmp_path / "db.sqlite3"
    shutil.copyfile(migrated_db, database)
    return Example(example_env(database, upstream_url, tmp_path / "status"))


def text(page: str, element_id: str) -> str:
    """The text of the element with ``id="element_id"`` (tags dropped, unescaped)."""
    match = re.search(rf'id="{element_id}"[^>]*>(.*?)</', page, re.DOTALL)
    assert match, f"no element with id {element_id!r} in the page"
    return html.unescape(re.sub(r"<[^>]+>", "", match.group(1))).strip()


def seconds_of(page: str) -> float:
    """The time a dashboard page says it took."""
    return float(text(page, "elapsed").removesuffix(" s"))


def panels(page: str) -> dict[str, str]:
    """Each panel's slug and the HTML of its card."""
    cards = re.findall(r'<section class="card" id="panel-(\w+)">(.*?)</section>', page, re.DOTALL)
    return dict(cards)


def took(card: str) -> tuple[float, float]:
    """When a panel's upstream was asked (seconds into the page) and how long
    it took to answer, as its card says."""
    started = re.search(r'<span class="started-s">([\d.]+)</span>', card)
    seconds = re.search(r'<span class="took-s">([\d.]+)</span>', card)
    assert started, card
    assert seconds, card
    return float(started.group(1)), float(seconds.group(1))


def test_example_passes_its_checks_and_has_every_migration(example: Example) -> None:
    check = example.manage("check", "--fail-level", "WARNING")
    assert check.returncode == 0, check.stderr
    assert "no issues" in check.stdout
    migrations = example.manage("makemigrations", "--check", "--dry-run")
    assert migrations.returncode == 0, migrations.stdout + migrations.stderr


def test_dashboard_shows_every_upstream_fetched_at_once(example: Example) -> None:
    result = example.run('emit(page=page(client.get("/")))')
    assert result["page"]["status"] == 200
    page = result["page"]["html"]
    cards = panels(page)
    assert list(cards) == ["weather", "news", "stocks", "traffic"]  # the seeded panels, in order
    for card in cards.values():
        assert 'class="error"' not in card, card
        assert 'class="headline"' in card
    assert "°C" in cards["weather"]
    assert "ACME" in cards["stocks"]
    timings = {slug: took(card) for slug, card in cards.items()}
    for slug, (_, seconds) in timings.items():
        assert seconds >= DELAYS[slug] - 0.01  # each waited for its upstream's delay
    # At once: every upstream was asked before the first one answered.
    assert max(started for started, _ in timings.values()) < min(DELAYS.values())
    assert seconds_of(page) >= max(DELAYS.values())
    assert text(page, "loop") == "uvloop.Loop"


def test_sequential_page_is_slower_by_the_upstreams_it_waits_for_in_turn(
    example: Example,
) -> None:
    result = example.run(
        """
client.get("/async/")  # the process's first upstream call makes the pooled client
emit(concurrent=page(client.get("/")), sequential=page(client.get("/sequential/")))
"""
    )
    concurrent, sequential = result["concurrent"]["html"], result["sequential"]["html"]
    assert result["sequential"]["status"] == 200
    assert "<h1>Sequential dashboard: one upstream after another</h1>" in sequential
    cards = panels(sequential)
    assert list(cards) == list(DELAYS)
    assert all('class="error"' not in card for card in cards.values())
    # In turn: each upstream was asked once the one before had answered.
    timings = [took(card) for card in cards.values()]
    for (started, seconds), (next_started, _) in itertools.pairwise(timings):
        assert next_started >= started + seconds - 0.02  # each rounded to hundredths
    assert seconds_of(sequential) >= sum(DELAYS.values())
    # The gain the two pages show side by side: the sum minus the slowest, give or take.
    gain = sum(DELAYS.values()) - max(DELAYS.values())
    assert seconds_of(sequential) - seconds_of(concurrent) > gain / 2


def test_the_pooled_client_serves_every_request_of_the_process(example: Example) -> None:
    result = example.run(
        """
pages = [page(client.get(path)) for path in ("/", "/", "/sequential/", "/async/")]
emit(pages=pages, pid=os.getpid())
"""
    )
    first, second, sequential, async_view = (p["html"] for p in result["pages"])
    clients = {text(p, "client") for p in (first, second, sequential, async_view)}
    assert len(clients) == 1  # one httpx.AsyncClient for the shared loop, reused
    calls = len(DELAYS)
    assert int(text(first, "client-requests")) == calls
    assert int(text(second, "client-requests")) == 2 * calls
    assert int(text(sequential, "client-requests")) == 3 * calls
    assert int(text(async_view, "client-requests")) == 3 * calls + 1
    assert int(text(first, "pid")) == result["pid"]
    # The second page reused the first page's keep-alive connections.
    requests, connections = (
        [int(text(p, f"upstream-{counter}")) for p in (first, second)]
        for counter in ("requests", "connections")
    )
    assert requests[1] - requests[0] == calls
    assert connections[1] == connections[0]


def test_audit_rows_are_written_after_the_response_and_shown_by_the_orm_page(
    example: Example,
) -> None:
    before = example.run('emit(page=page(client.get("/activity/")))')["page"]["html"]
    assert text(before, "total") == "0"
    assert "no-audit" in before
    for title, path in [("Weather", "/weather"), ("News", "/news"), ("Traffic", "/traffic")]:
        assert f"<td>{title}</td><td><code>{path}</code></td>" in before  # the seed rows

    served = example.run(
        """
pages = [page(client.get("/")), page(client.get("/sequential/"))]
# Stopping waits for the writes: they run under shutdown_waits_for.
looptoken.shutdown()
from dashboard.models import AuditEntry
fields = ("page", "elapsed_ms", "upstream_calls", "pid")
rows = list(AuditEntry.objects.order_by("id").values(*fields))
emit(pages=pages, rows=rows, pid=os.getpid())
"""
    )
    concurrent, sequential = (p["html"] for p in served["pages"])
    rows = served["rows"]
    assert [(r["page"], r["upstream_calls"], r["pid"]) for r in rows] == [
        ("concurrent", len(DELAYS), served["pid"]),
        ("sequential", len(DELAYS), served["pid"]),
    ]
    for row, page in zip(rows, (concurrent, sequential), strict=True):
        assert abs(row["elapsed_ms"] / 1000 - seconds_of(page)) < 0.01  # the time the page showed

    after = example.run('emit(page=page(client.get("/activity/")))')["page"]["html"]
    assert text(after, "total") == "2"
    assert after.count('class="audit-row"') == 2
    for name, row in zip(("concurrent", "sequential"), rows, strict=True):
        assert text(after, f"count-{name}") == "1"
        assert text(after, f"average-{name}") == f"{row['elapsed_ms']} ms"


def test_plain_async_view_runs_on_the_shared_loop(example: Example) -> None:
    result = example.run('emit(page=page(client.get("/async/")))')
    assert result["page"]["status"] == 200
    page = result["page"]["html"]
    assert text(page, "on-shared-loop") == "yes"
    assert text(page, "thread") == "looptoken-loop"
    card = panels(page)["weather"]
    assert 'class="error"' not in card
    assert "°C" in card


def test_status_page_is_for_staff_only(example: Example) -> None:
    result = example.run(
        """
from django.contrib.auth.models import User
anonymous = page(client.get("/looptoken/"))
User.objects.create_user("visitor", password="visitor-password")
visitor = Client()
assert visitor.login(username="visitor", password="visitor-password")
not_staff = page(visitor.get("/looptoken/"))
assert client.login(username="demo", password="looptoken")
staff = page(client.get("/looptoken/"))
listing = client.get("/looptoken/", {"format": "json"}).json()
emit(anonymous=anonymous, not_staff=not_staff, staff=staff, listing=listing, pid=os.getpid())
""",
    )  # non-staff users get the page's own 403: one "Forbidden" line, no traceback
    assert result["anonymous"]["status"] == 302
    assert result["anonymous"]["location"] == "/admin/login/?next=/looptoken/"
    assert result["not_staff"]["status"] == 403
    assert result["staff"]["status"] == 200
    (process,) = result["listing"]["processes"]  # this process, the only one in its status dir
    assert process["pid"] == result["pid"]
    assert process["backend"] == "uvloop.Loop"
    assert process["project"] == "example.settings"
    assert (
        f'<a href="tasks/{result["pid"]}/" title="its pending tasks">{result["pid"]}</a>'
        in (result["staff"]["html"])
    )


def test_setupdemo_runs_again_without_harm(example: Example) -> None:
    again = example.manage("setupdemo", "--username", USERNAME, "--password", PASSWORD)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == f"Staff user {USERNAME!r} updated."
    result = example.run(
        """
from django.contrib.auth.models import User
from dashboard.models import Panel

emit(users=list(User.objects.values_list("username", "is_staff")), panels=Panel.objects.count(),
     login=client.login(username="demo", password="looptoken"))
"""
    )
    assert result == {"users": [[USERNAME, True]], "panels": len(DELAYS), "login": True}


def test_dashboard_says_what_to_do_when_the_upstream_is_down(example: Example) -> None:
    example.env["EXAMPLE_UPSTREAM"] = f"http://127.0.0.1:{free_port()}"
    result = example.run('emit(page=page(client.get("/")))')
    assert result["page"]["status"] == 200
    cards = panels(result["page"]["html"])
    assert len(cards) == len(DELAYS)
    for card in cards.values():
        assert "ConnectError" in card
        assert "Is the upstream server running? make demo starts it." in card

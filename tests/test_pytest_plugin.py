"""The pytest plugin, run as users run it: pytest in a subprocess (pytester)
against a small project (tests/plugin_project), on SQLite and on PostgreSQL.

The plugin comes in through its ``pytest11`` entry point, so the package
must be installed (``pip install -e .``) for these tests, as for users.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from tests.support.doc_blocks import blocks
from tests.support.services import postgres_server

# One run: pytester runs projects of their own, each with its own settings.
pytestmark = pytest.mark.one_backend

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parent.parent
PROJECT = ROOT / "tests" / "plugin_project"
RUN_TIMEOUT_S = 300  # a bound on failure on a busy 2-core machine, not a speed target
INI = """\
[pytest]
DJANGO_SETTINGS_MODULE = plugin_site.settings
pythonpath = .
filterwarnings = error
"""


def test_the_plugin_is_installed_as_a_pytest11_entry_point() -> None:
    plugins = {ep.name: ep.value for ep in entry_points(group="pytest11")}
    assert plugins.get("django_looptoken") == "django_looptoken.pytest_plugin", (
        "the package's pytest11 entry point is not installed: run 'pip install -e .' "
        "(make .venv/.installed does)"
    )


@pytest.fixture(autouse=True)
def _no_settings_from_this_suite(monkeypatch: pytest.MonkeyPatch) -> None:
    # pytest-django exported this suite's settings; the runs choose their own.
    monkeypatch.delenv("DJANGO_SETTINGS_MODULE", raising=False)


@pytest.fixture(scope="module")
def postgres_dsn() -> Iterator[str]:
    with postgres_server() as dsn:
        yield dsn


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the project's tests once on SQLite and once on PostgreSQL."""
    if request.param == "postgres":
        monkeypatch.setenv("POSTGRES_DSN", request.getfixturevalue("postgres_dsn"))
    else:
        monkeypatch.delenv("POSTGRES_DSN", raising=False)
    return str(request.param)


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    """The test project in pytester's directory, with pytest-django pointed at it."""
    shutil.copytree(PROJECT / "plugin_site", pytester.path / "plugin_site")
    pytester.makefile(".ini", pytest=INI)
    return pytester


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", *args, timeout=RUN_TIMEOUT_S)
    output = result.stdout.str() + result.stderr.str()
    # The project logs at INFO with docs/observability.md's LOGGING: the exit
    # hook runs after pytest closed its capture files, and must stay quiet.
    assert "Logging error" not in output, output
    assert "Traceback" not in result.stderr.str(), output
    return result


WRITES = """
import asyncio

import pytest

import django_looptoken as looptoken
from plugin_site.models import AuditRow


async def write_audit_row(event):
    await AuditRow.objects.acreate(event=event)


@pytest.mark.django_db
def test_a_spawned_write_is_seen_after_wait(spawned_work):
    looptoken.spawn(write_audit_row("viewed"))
    spawned_work.wait()
    assert list(AuditRow.objects.values_list("event", flat=True)) == ["viewed"]


def test_b_it_was_rolled_back(db):
    assert AuditRow.objects.count() == 0


def test_c_a_write_left_to_the_end_of_the_test(db, spawned_work):
    looptoken.spawn(write_audit_row("at the end"))


def test_d_was_done_in_the_test_and_rolled_back(db):
    assert AuditRow.objects.count() == 0


async def finished(future):
    return await asyncio.wrap_future(future)


def test_e_awaiting_spawned_work_runs_it_meanwhile(db, spawned_work):
    future = looptoken.spawn(write_audit_row("awaited"))
    looptoken.await_(finished(future), timeout=5)
    assert AuditRow.objects.count() == 1


def test_f_and_rolls_it_back(db):
    assert AuditRow.objects.count() == 0
"""


def test_spawned_orm_writes_roll_back_with_the_test(
    project: pytest.Pytester, database: str
) -> None:
    project.makepyfile(test_writes=WRITES)
    result = run(project, "-v")
    result.assert_outcomes(passed=6)


LEFTOVER = """
import asyncio

import django_looptoken as looptoken


async def poll_forever():
    while True:
        await asyncio.sleep(3600)


async def fail():
    raise ValueError("the upstream said no")


def test_leaves_a_task(spawned_work):
    spawned_work.timeout = 0.2
    looptoken.spawn(poll_forever())


def test_spawns_a_task_that_fails(spawned_work):
    looptoken.spawn(fail())


def test_next_finds_no_task_left(loop_status):
    assert loop_status.pending_tasks() == []


async def write():
    from plugin_site.models import AuditRow

    await AuditRow.objects.acreate(event="no database here")


def test_writes_without_database_access(spawned_work):
    looptoken.spawn(write())
"""


def test_a_leftover_task_fails_the_test_that_left_it(project: pytest.Pytester) -> None:
    project.makepyfile(test_leftover=LEFTOVER)
    result = run(project)
    result.assert_outcomes(passed=1, failed=3)
    result.stdout.fnmatch_lines(
        [
            "*1 spawned task(s) still running at the end of the test (waited 0.2 s), cancelled:",
            "*poll_forever(), spawned at *test_leftover.py:17 in test_leaves_a_task,"
            " waiting at *test_leftover.py:8 in poll_forever",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "*The spawned task fail(), spawned at *test_leftover.py:21 in "
            "test_spawns_a_task_that_fails, raised ValueError: the upstream said no"
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "*The spawned task write(), spawned at *test_leftover.py:35 in "
            "test_writes_without_database_access, raised RuntimeError: Database access not "
            'allowed, use the "django_db" mark, or the "db" or "transactional_db" '
            "fixtures to enable it."
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "FAILED test_leftover.py::test_leaves_a_task - *",
            "FAILED test_leftover.py::test_spawns_a_task_that_fails - *",
        ]
    )


SETTINGS = """
import asyncio

import uvloop

import django_looptoken as looptoken


def test_runs_on_asyncio(loop_settings, loop_status):
    loop_settings(BACKEND="asyncio", DEFAULT_TIMEOUT=0.1)
    assert type(looptoken.get_loop()) is not uvloop.Loop
    assert loop_status()["backend"].startswith("asyncio.")
    try:
        looptoken.await_(asyncio.sleep(5))
    except TimeoutError:
        pass
    else:
        raise AssertionError("DEFAULT_TIMEOUT=0.1 did not apply")


def test_next_has_the_project_loop_back(loop_status):
    status = loop_status()
    assert status["backend"] == "uvloop.Loop"
    assert status["state"] == "running"
    assert status["tokens"] == 1  # the app's (AUTOSTART)
    assert looptoken.await_(asyncio.sleep(0.2, "no timeout")) == "no timeout"


def test_counters_since_the_start_of_the_test(loop_status):
    looptoken.await_(asyncio.sleep(0))
    looptoken.await_multiple([asyncio.sleep(0), asyncio.sleep(0)])
    assert loop_status.since_start() == {"await_calls": 2, "await_errors": 0, "await_timeouts": 0}
"""


def test_the_settings_fixture_restores_the_loop(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOOPTOKEN_BACKEND", "uvloop")
    project.makepyfile(test_settings=SETTINGS)
    result = run(project)
    result.assert_outcomes(passed=3)


MIXIN = """
from django.test import TestCase

import django_looptoken as looptoken
from django_looptoken.testing import SpawnedWorkMixin
from plugin_site.models import AuditRow


async def write_audit_row(event):
    await AuditRow.objects.acreate(event=event)


class AuditTests(SpawnedWorkMixin, TestCase):
    def test_a_spawned_write(self):
        looptoken.spawn(write_audit_row("viewed"))
        self.spawned_work.wait()
        self.assertEqual(AuditRow.objects.count(), 1)

    def test_b_rolled_back(self):
        self.assertEqual(AuditRow.objects.count(), 0)
"""


def test_the_mixin_under_djangos_own_runner(project: pytest.Pytester, database: str) -> None:
    project.makepyfile(tests_mixin=MIXIN)
    result = project.run(
        sys.executable, "-m", "django", "test", "tests_mixin", "-v", "2",
        "--settings", "plugin_site.settings", "--pythonpath", ".",
        timeout=RUN_TIMEOUT_S,
    )  # fmt: skip
    output = result.stdout.str() + result.stderr.str()
    assert result.ret == 0, output
    assert "Ran 2 tests" in output, output
    assert "Logging error" not in output, output


PLAIN = """
import threading

import pytest


def test_one():
    assert not [t for t in threading.enumerate() if t.name.startswith("looptoken")]


@pytest.mark.parametrize("n", [1, 2])
def test_two(n):
    assert n


def test_uses_the_fixture(spawned_work):
    pass
"""


def test_a_project_without_pytest_django_sees_no_change(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_plain=PLAIN)
    with_plugin = run(pytester, "-p", "no:django", "-rA")
    without = run(pytester, "-p", "no:django", "-p", "no:django_looptoken", "-rA")
    with_plugin.assert_outcomes(passed=3, errors=1)
    without.assert_outcomes(passed=3, errors=1)  # fixture 'spawned_work' not found
    # Same outcome for every test that does not ask for the plugin's fixtures.
    for line in ("PASSED test_plain.py::test_one", "PASSED test_plain.py::test_two[[]1[]]"):
        with_plugin.stdout.fnmatch_lines([line])
        without.stdout.fnmatch_lines([line])
    # One that does is told what is missing.
    with_plugin.stdout.fnmatch_lines(
        ["*The spawned_work fixture needs pytest-django: pip install pytest-django*"]
    )


def test_a_fixture_without_django_settings_says_so(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_plain=PLAIN)
    result = run(pytester, "-rA")
    result.stdout.fnmatch_lines(
        ["*The spawned_work fixture needs Django settings: give pytest-django the settings*"]
    )


# -- docs/testing.md: its blocks are the files of a project, whose tests run here ----

POSTGRES_SETTINGS = """\
from urllib.parse import urlsplit

from shop.settings import *  # noqa: F403


_url = urlsplit({dsn!r})
DATABASES = {{
    "default": {{
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _url.path.lstrip("/"),
        "USER": _url.username,
        "HOST": _url.hostname,
        "PORT": _url.port,
    }}
}}
"""


def write_guide_project(where: Path) -> dict[str, str]:
    """The files docs/testing.md shows (blocks of one title joined), written out."""
    files: dict[str, str] = {}
    for block in blocks(ROOT, "docs/testing.md"):
        if block.file is not None:
            files[block.file] = files.get(block.file, "") + block.code + "\n"
    for name, code in files.items():
        path = where / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(code)
        if path.suffix == ".py" and path.parent.name != "tests" and path.parent != where:
            (path.parent / "__init__.py").touch()  # shop/ is a package
    return files


def test_the_testing_guide_runs(pytester: pytest.Pytester, database: str) -> None:
    files = write_guide_project(pytester.path)
    settings = "shop.settings"
    if database == "postgres":
        dsn = os.environ["POSTGRES_DSN"]
        (pytester.path / "shop" / "settings_postgres.py").write_text(
            POSTGRES_SETTINGS.format(dsn=dsn)
        )
        settings = "shop.settings_postgres"
    # Every test the page shows: functions, the two backends, TestCase methods.
    shown = sum(code.count("def test_") for code in files.values()) + 1
    assert shown >= 15, "docs/testing.md lost its tests"

    result = run(pytester, "--ds", settings, "-v")
    result.assert_outcomes(passed=shown)

    django = pytester.run(
        sys.executable, "-m", "django", "test", "-v", "2", "--settings", settings,
        "--pythonpath", ".", timeout=RUN_TIMEOUT_S,
    )  # fmt: skip
    output = django.stdout.str() + django.stderr.str()
    assert django.ret == 0, output
    assert "Ran 1 test" in output, output
    assert "Logging error" not in output, output

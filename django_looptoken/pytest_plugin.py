"""django-looptoken's pytest plugin: the ``pytest11`` entry point ``django_looptoken``.

Fixtures (see docs/testing.md):

* ``spawned_work``: every task ``spawn()`` starts during the test is part of
  it: its ORM calls run in the test's thread and transaction, and the test
  fails if one is still running (or failed) at its end.
* ``loop_status``: the shared loop's status, and its counters since the test began.
* ``loop_settings``: ``loop_settings(BACKEND="asyncio")`` runs the test on a
  loop started from other ``LOOPTOKEN`` keys; the loop is restored after.

Inert unless a test asks for one of them: nothing here imports Django or
starts anything at collection, so projects without pytest-django or without
the app see no change. A fixture used without them fails with what is missing.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from django_looptoken.testing import LoopStatus, SpawnedWork

# The fixtures of pytest-django that give a test its database.
_DATABASE_FIXTURES = (
    "db",
    "transactional_db",
    "live_server",
    "django_db_reset_sequences",
    "django_db_serialized_rollback",
)


def _require_django(request: pytest.FixtureRequest) -> None:
    """Fail the test with what is missing for django-looptoken's fixtures."""
    name = request.fixturename
    if not request.config.pluginmanager.hasplugin("django"):
        pytest.fail(
            f"The {name} fixture needs pytest-django: pip install pytest-django "
            "(and do not disable it with -p no:django).",
            pytrace=False,
        )
    from django.conf import settings

    if not settings.configured:
        pytest.fail(
            f"The {name} fixture needs Django settings: give pytest-django the settings "
            "module (DJANGO_SETTINGS_MODULE, or --ds).",
            pytrace=False,
        )
    from django.apps import apps

    if not apps.is_installed("django_looptoken"):
        pytest.fail(
            f"The {name} fixture needs the app: add 'django_looptoken' to INSTALLED_APPS.",
            pytrace=False,
        )


def _uses_database(request: pytest.FixtureRequest) -> bool:
    return request.node.get_closest_marker("django_db") is not None or any(
        name in request.fixturenames for name in _DATABASE_FIXTURES
    )


@pytest.fixture
def spawned_work(request: pytest.FixtureRequest) -> Iterator[SpawnedWork]:
    """Make every task ``spawn()`` starts during the test part of the test.

    The tasks' thread-sensitive calls (the ORM) run in the test's thread, in
    its transaction, when the test calls ``spawned_work.wait()`` and at its
    end; their writes roll back with the test. At the end every spawned task
    is waited for (up to ``spawned_work.timeout`` seconds, 5 by default); one
    still running is cancelled and fails the test with its name and where it
    was spawned, and so does one that raised.
    """
    _require_django(request)
    if _uses_database(request):
        # Set up before this fixture, so torn down (rolled back) after it.
        request.getfixturevalue("db")
    from django_looptoken.testing import SpawnedWork

    work = SpawnedWork()
    work.start()
    yield work
    work.discard()  # after the test's own check (pytest_runtest_call): nothing left to do


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, object, object]:
    """After a test that passed, check its spawned work: a failure there fails the test."""
    result = yield
    if "spawned_work" in getattr(item, "fixturenames", ()):
        from django_looptoken.testing import SpawnedWork

        work = getattr(item, "funcargs", {}).get("spawned_work")
        if isinstance(work, SpawnedWork):
            work.finish()
    return result


@pytest.fixture
def loop_status(request: pytest.FixtureRequest) -> LoopStatus:
    """The shared loop's status: ``loop_status()`` is ``django_looptoken.status()``,
    ``loop_status.since_start()`` the counters' growth during the test,
    ``loop_status.pending_tasks()`` the coroutines of the tasks on the loop."""
    _require_django(request)
    from django_looptoken.testing import LoopStatus

    return LoopStatus()


class LoopSettings:
    """``loop_settings(**keys)``: the rest of the test runs on a loop started
    from ``LOOPTOKEN`` with these keys changed; each call adds to the last."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self._active: Any = None

    def __call__(self, **values: Any) -> None:
        from django_looptoken.testing import override_looptoken

        self.restore()
        self.values = {**self.values, **values}
        override = override_looptoken(**self.values)
        override.__enter__()
        self._active = override

    def restore(self) -> None:
        """Shut the test's loop down and bring back the settings and loop of before."""
        active, self._active = self._active, None
        if active is not None:
            active.__exit__(None, None, None)


@pytest.fixture
def loop_settings(request: pytest.FixtureRequest) -> Iterator[LoopSettings]:
    """Run the test with other ``LOOPTOKEN`` keys: ``loop_settings(BACKEND="asyncio")``.

    The loop running is shut down and a fresh one started from the new keys
    (the app's token held if ``AUTOSTART`` says so); after the test that loop
    is shut down, the settings restored and the app's loop started again.
    """
    _require_django(request)
    changer = LoopSettings()
    try:
        yield changer
    finally:
        changer.restore()

"""A typo in LOOPTOKEN under real servers, which run no checks: the site stays up.

Pages that do not use the loop (the admin's login page, plain and async
views) answer 200; a view that uses the loop gets ImproperlyConfigured with
the text each worker logged once at startup; the workers exit cleanly.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys

import httpx
import pytest

from tests.support.processes import ROOT, Launcher, Server, free_port, stop

SETTINGS = "tests.integration.broken_settings"

CASES = [
    pytest.param("gunicorn", {"SHUTDOWN_TIMOUT": 5}, "mean 'SHUTDOWN_TIMEOUT'?", id="typo"),
    pytest.param("waitress", {"BACKEND": "nonsense"}, "'nonsense'", id="unknown-backend"),
    pytest.param("gunicorn", {"BACKEND": "os.getcwd"}, "not an event loop", id="not-a-factory"),
    pytest.param("waitress", {"SHUTDOWN_TIMEOUT": "x"}, "SHUTDOWN_TIMEOUT", id="bad-value"),
]
WORKERS = {"gunicorn": 2, "waitress": 1}


def _start(launcher: Launcher, server: str, setting: dict[str, object]) -> Server:
    env = {"LOOPTOKEN_TEST_SETTING": json.dumps(setting)}
    if server == "gunicorn":
        return launcher.gunicorn("-w", "2", settings=SETTINGS, extra_env=env)
    port = free_port()
    command = [sys.executable, "-m", "waitress", f"--listen=127.0.0.1:{port}"]
    return launcher.launch(
        "waitress",
        [*command, "tests.wsgi:application"],
        port=port,
        settings=SETTINGS,
        extra_env=env,
    )


@pytest.mark.parametrize(("server", "setting", "named"), CASES)
def test_broken_looptoken_setting_keeps_the_site_up(
    launcher: Launcher, server: str, setting: dict[str, object], named: str
) -> None:
    running = _start(launcher, server, setting)
    with httpx.Client(base_url=running.url, timeout=10) as client:
        for _ in range(3):  # every worker, likely, and more than once each
            login = client.get("admin/login/")
            assert login.status_code == 200, login.text
            assert 'name="username"' in login.text
            assert client.get("plain/").text == "plain"
            assert client.get("plain-async/").text == "async"
        error = client.get("uses-the-loop/")
    assert error.status_code == 500
    assert error.text.startswith("The shared loop cannot start: the LOOPTOKEN setting is invalid")
    assert named in error.text
    assert "Fix: " in error.text

    stop(running)
    stderr = running.stderr()
    # Logged once per worker process, at startup, with the very text raised.
    logged = re.findall(r"ERROR pid=(\d+) The shared loop cannot start", stderr)
    assert len(logged) == WORKERS[server], stderr
    assert len(set(logged)) == len(logged), stderr
    assert error.text in stderr
    assert "Shared loop started" not in stderr
    assert "Traceback" not in stderr, stderr
    assert "Worker failed to boot" not in stderr


# uWSGI before 2.0.27 runs Python threads only while it serves a request,
# unless --enable-threads is given: `make test` installs one (2.0.26) there.
OLD_UWSGI = ROOT / ".uwsgi-2.0.26" / "bin" / "uwsgi"


def _start_old_uwsgi(launcher: Launcher, *options: str) -> Server:
    if not OLD_UWSGI.exists():
        pytest.fail(f"{OLD_UWSGI} is missing: `make test` installs it (uwsgi==2.0.26)")
    port = free_port()
    command = [
        str(OLD_UWSGI),
        *("--http-socket", f"127.0.0.1:{port}", "--module", "tests.wsgi:application"),
        *("--master", "--processes", "2", "--die-on-term", "--need-app", "--home", sys.prefix),
        *options,
    ]
    env = {"LOOPTOKEN_TEST_SETTING": "{}", "PYTHONPATH": str(ROOT)}
    return launcher.launch("uwsgi", command, port=port, settings=SETTINGS, extra_env=env)


def test_a_uwsgi_without_threads_keeps_the_site_up_and_names_the_option_to_add(
    launcher: Launcher,
) -> None:
    running = _start_old_uwsgi(launcher)
    with httpx.Client(base_url=running.url, timeout=10) as client:
        for _ in range(3):
            assert client.get("admin/login/").status_code == 200
            assert client.get("plain/").text == "plain"
        error = client.get("uses-the-loop/")
    assert error.status_code == 500
    assert error.text.startswith("The shared loop cannot start: this server runs no threads")
    assert "looptoken.E011" in error.text
    assert "Add --enable-threads" in error.text
    assert stop(running) == 0
    stderr = running.stderr()
    assert error.text in stderr  # logged at startup, with the very text raised
    assert "Shared loop started" not in stderr
    assert "Traceback" not in stderr, stderr


def test_the_same_uwsgi_with_enable_threads_runs_the_loop(launcher: Launcher) -> None:
    running = _start_old_uwsgi(launcher, "--enable-threads")
    with httpx.Client(base_url=running.url, timeout=10) as client:
        assert client.get("uses-the-loop/").text == "the loop ran"
    assert stop(running) == 0
    assert "Shared loop started" in running.stderr()


def test_eventlet_locks_cannot_wake_a_native_thread_so_there_the_loop_is_green() -> None:
    # Why, under eventlet, the loop is a green thread rather than an OS
    # thread as under gevent (and why looptoken.E012 refuses a process that
    # eventlet patched after the app took its threads), with eventlet alone:
    # if eventlet ever wakes a native thread waiting for one of its locks,
    # this fails, and the choice is to be revisited.
    done = subprocess.run(
        [sys.executable, "-m", "tests.integration.eventlet_locks"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"waiting": True, "acquired": False}
    assert "greenlet.error: Cannot switch to a different thread" in done.stderr


def _eventlet(launcher: Launcher, module: str, setting: str) -> Server:
    port = free_port()
    command = [sys.executable, "-m", module, str(port)]
    env = {"LOOPTOKEN_TEST_SETTING": setting}
    return launcher.launch("eventlet", command, port=port, settings=SETTINGS, extra_env=env)


@pytest.mark.parametrize(
    ("module", "setting", "problem", "fix"),
    [
        (
            "tests.integration.eventlet_late",
            "{}",
            "eventlet patched this process too late (pages that do not use the loop are "
            "served as usual).\n  looptoken.E012: eventlet monkey-patched this process after "
            "django_looptoken",
            "Call eventlet.monkey_patch() first thing",
        ),
        (
            "tests.integration.eventlet_server",
            '{"BACKEND": "uvloop"}',
            """looptoken.E004: LOOPTOKEN["BACKEND"] is 'uvloop', but eventlet""",
            'Use "auto" or "asyncio"',
        ),
    ],
    ids=["patched-too-late", "uvloop"],
)
def test_eventlet_set_up_wrong_keeps_the_site_up_and_says_what_to_change(
    launcher: Launcher, module: str, setting: str, problem: str, fix: str
) -> None:
    running = _eventlet(launcher, module, setting)
    with httpx.Client(base_url=running.url, timeout=10) as client:
        for _ in range(3):
            assert client.get("admin/login/").status_code == 200
            assert client.get("plain/").text == "plain"
            assert client.get("plain-async/").text == "async"
        error = client.get("uses-the-loop/")
    assert error.status_code == 500
    assert error.text.startswith("The shared loop cannot start")
    assert problem in error.text
    assert fix in error.text
    assert stop(running) == -signal.SIGTERM  # no loop, no exit drain: as without the app
    stderr = running.stderr()
    assert "Traceback" not in stderr, stderr
    assert "Shared loop started" not in stderr, stderr

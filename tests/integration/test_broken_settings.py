"""A typo in LOOPTOKEN under real servers, which run no checks: the site stays up.

Pages that do not use the loop (the admin's login page, plain and async
views) answer 200; a view that uses the loop gets ImproperlyConfigured with
the text each worker logged once at startup; the workers exit cleanly.
"""

from __future__ import annotations

import json
import re
import sys

import httpx
import pytest

from tests.support.processes import Launcher, Server, free_port, stop

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

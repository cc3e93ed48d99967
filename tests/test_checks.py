"""System checks for the LOOPTOKEN setting, and the runtime refusing bad settings."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import stat
import sys
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import AsyncToSync
from django.core.checks import CheckMessage, Error
from django.core.checks import Warning as CheckWarning
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.middleware.common import CommonMiddleware
from django.test import Client

import django_looptoken as looptoken
from django_looptoken import _async_views, _status_socket
from django_looptoken._runtime import State, runtime
from django_looptoken._status import project
from django_looptoken.checks import check_looptoken_settings, check_middleware
from django_looptoken.conf import looptoken_settings
from django_looptoken.signals import loop_started

# One run: checks validate settings and start no loop; the backend is a setting they check.
pytestmark = pytest.mark.one_backend


def run_checks() -> list[CheckMessage]:
    """The messages the registered LOOPTOKEN check gives for the current settings."""
    return list(check_looptoken_settings(None))


def only(messages: list[CheckMessage], check_id: str) -> CheckMessage:
    """Assert ``messages`` is exactly one message with ``check_id`` and a hint; return it."""
    assert [m.id for m in messages] == [check_id], messages
    message = messages[0]
    assert message.hint, f"{check_id} has no hint"
    assert message.msg
    return message


# -- valid settings ------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        {},
        {"AUTOSTART": False},
        {
            "BACKEND": "auto",
            "AUTOSTART": True,
            "ASYNC_VIEWS": True,
            "DEFAULT_TIMEOUT": None,
            "SHUTDOWN_TIMEOUT": 30.0,
            "EXECUTOR_MAX_WORKERS": None,
            "DEBUG": False,
            "SLOW_CALLBACK_DURATION": 0.1,
            "STATUS_DIR": None,
            "WATCHDOG_SECONDS": 5.0,
        },
        {"BACKEND": "asyncio", "DEFAULT_TIMEOUT": 2, "EXECUTOR_MAX_WORKERS": 4},
        {"BACKEND": "uvloop", "STATUS_DIR": "/tmp/looptoken-tests", "WATCHDOG_SECONDS": None},
        {"BACKEND": "tests.loop_factories.counting_loop_factory", "SHUTDOWN_TIMEOUT": 0},
    ],
)
def test_valid_settings_give_no_messages(settings: Any, value: dict[str, Any]) -> None:
    """The defaults, and valid non-default values, pass the check silently."""
    settings.LOOPTOKEN = value
    assert run_checks() == []


def test_missing_setting_gives_no_messages(settings: Any) -> None:
    del settings.LOOPTOKEN
    assert run_checks() == []


# -- errors ----------------------------------------------------------------------


@pytest.mark.parametrize("value", [["BACKEND", "auto"], "auto", None, 42])
def test_e001_looptoken_not_a_dict(settings: Any, value: object) -> None:
    settings.LOOPTOKEN = value
    message = only(run_checks(), "looptoken.E001")
    assert isinstance(message, Error)


def test_e002_unknown_key_suggests_the_close_one(settings: Any) -> None:
    settings.LOOPTOKEN = {"BACKEN": "auto"}
    message = only(run_checks(), "looptoken.E002")
    assert "BACKEN" in message.msg
    assert "BACKEND" in str(message.hint)
    assert "mean" in str(message.hint).lower()


def test_e002_unknown_key_without_close_match_lists_known_keys(settings: Any) -> None:
    settings.LOOPTOKEN = {"COMPLETELY_DIFFERENT": 1}
    message = only(run_checks(), "looptoken.E002")
    assert "SHUTDOWN_TIMEOUT" in str(message.hint)


@pytest.mark.parametrize("value", [42, None, ["uvloop"], b"asyncio"])
def test_e003_backend_not_a_string(settings: Any, value: object) -> None:
    settings.LOOPTOKEN = {"BACKEND": value}
    only(run_checks(), "looptoken.E003")


@pytest.mark.parametrize(
    "backend",
    [
        "tokio",
        "tests.no_such_module.loop_factory",
        "tests.loop_factories.no_such_factory",
        "tests.loop_factories.NOT_CALLABLE",
    ],
    ids=["unknown-word", "unimportable-module", "missing-attribute", "not-callable"],
)
def test_e004_backend_unusable(settings: Any, backend: str) -> None:
    settings.LOOPTOKEN = {"BACKEND": backend}
    message = only(run_checks(), "looptoken.E004")
    assert backend in message.msg


def test_e004_uvloop_backend_without_uvloop(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Asking for uvloop where it cannot be imported is an error; "auto" is not."""
    monkeypatch.setitem(sys.modules, "uvloop", None)
    settings.LOOPTOKEN = {"BACKEND": "uvloop"}
    message = only(run_checks(), "looptoken.E004")
    assert "uvloop" in message.msg
    settings.LOOPTOKEN = {"BACKEND": "auto"}
    assert run_checks() == []


@pytest.mark.parametrize(
    ("key", "value"),
    [("AUTOSTART", 1), ("ASYNC_VIEWS", None), ("DEBUG", "yes"), ("DEBUG", 0)],
)
def test_e005_bool_key_not_a_bool(settings: Any, key: str, value: object) -> None:
    settings.LOOPTOKEN = {key: value}
    message = only(run_checks(), "looptoken.E005")
    assert key in message.msg


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("DEFAULT_TIMEOUT", 0),
        ("DEFAULT_TIMEOUT", -1),
        ("DEFAULT_TIMEOUT", "5"),
        ("DEFAULT_TIMEOUT", True),
        ("SHUTDOWN_TIMEOUT", -0.5),
        ("SHUTDOWN_TIMEOUT", None),
        ("SHUTDOWN_TIMEOUT", True),
        ("SLOW_CALLBACK_DURATION", 0),
        ("SLOW_CALLBACK_DURATION", "0.1"),
        ("SLOW_CALLBACK_DURATION", None),
        ("WATCHDOG_SECONDS", 0),
        ("WATCHDOG_SECONDS", -5.0),
        ("WATCHDOG_SECONDS", [5]),
    ],
)
def test_e006_seconds_wrong_type_or_range(settings: Any, key: str, value: object) -> None:
    """Wrong types, negatives, zero where it makes no sense, and bools are errors."""
    settings.LOOPTOKEN = {key: value}
    message = only(run_checks(), "looptoken.E006")
    assert key in message.msg


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("SHUTDOWN_TIMEOUT", 0),
        ("SHUTDOWN_TIMEOUT", 0.0),
        ("DEFAULT_TIMEOUT", None),
        ("DEFAULT_TIMEOUT", 0.5),
        ("WATCHDOG_SECONDS", None),
    ],
)
def test_e006_allowed_seconds_values(settings: Any, key: str, value: object) -> None:
    """SHUTDOWN_TIMEOUT=0 (no grace) and None where it turns a feature off are fine."""
    settings.LOOPTOKEN = {key: value}
    assert run_checks() == []


@pytest.mark.parametrize("value", [0, -1, 2.0, "4", True])
def test_e007_executor_max_workers(settings: Any, value: object) -> None:
    settings.LOOPTOKEN = {"EXECUTOR_MAX_WORKERS": value}
    message = only(run_checks(), "looptoken.E007")
    assert "EXECUTOR_MAX_WORKERS" in message.msg


@pytest.mark.parametrize("value", [42, ["/tmp"], b"/tmp", "", Path(""), "status", "./status"])
def test_e008_status_dir(settings: Any, value: object) -> None:
    settings.LOOPTOKEN = {"STATUS_DIR": value}
    message = only(run_checks(), "looptoken.E008")
    assert "STATUS_DIR" in message.msg


@pytest.mark.parametrize(
    ("backend", "what"),
    [
        ("tests.loop_factories.failing_loop_factory", "RuntimeError: no loop today"),
        ("uvloop.EventLoopPolicy", "not an event loop"),
        ("os.getcwd", "not an event loop"),
        ("tests.loop_factories.closed_loop_factory", "a closed event loop"),
    ],
    ids=["raises", "policy-class", "returns-a-str", "closed-loop"],
)
def test_e009_backend_does_not_build_a_loop(settings: Any, backend: str, what: str) -> None:
    """A factory that imports but builds no usable loop is reported by the check,
    and start_loop() raises the same as ImproperlyConfigured (no bare crash)."""
    settings.LOOPTOKEN = {"AUTOSTART": False, "BACKEND": backend}
    message = only(run_checks(), "looptoken.E009")
    assert backend in message.msg
    assert what in message.msg
    with pytest.raises(ImproperlyConfigured, match=r"looptoken\.E009") as excinfo:
        looptoken.start_loop()
    assert what in str(excinfo.value)
    assert runtime().state is State.STOPPED


def test_every_error_is_reported_at_once(settings: Any) -> None:
    """One pass over bad settings names every problem, not just the first."""
    settings.LOOPTOKEN = {"BACKEND": 1, "DEBUG": "no", "EXECUTOR_MAX_WORKERS": 0, "TYPO": 1}
    ids = sorted(m.id for m in run_checks())
    assert ids == ["looptoken.E002", "looptoken.E003", "looptoken.E005", "looptoken.E007"]


# -- warnings --------------------------------------------------------------------


def test_w001_loop_debug_without_django_debug(settings: Any) -> None:
    settings.DEBUG = False
    settings.LOOPTOKEN = {"DEBUG": True}
    message = only(run_checks(), "looptoken.W001")
    assert isinstance(message, CheckWarning)
    assert not isinstance(message, Error)


def test_w001_not_raised_with_django_debug(settings: Any) -> None:
    settings.DEBUG = True
    settings.LOOPTOKEN = {"DEBUG": True}
    assert run_checks() == []


@pytest.mark.parametrize(
    "value",
    [
        {"WATCHDOG_SECONDS": 0.1},
        {"WATCHDOG_SECONDS": 0.05},
        {"WATCHDOG_SECONDS": 1, "SLOW_CALLBACK_DURATION": 2},
    ],
)
def test_w002_watchdog_not_above_slow_callback_duration(
    settings: Any, value: dict[str, Any]
) -> None:
    settings.LOOPTOKEN = value
    message = only(run_checks(), "looptoken.W002")
    assert isinstance(message, CheckWarning)
    assert not isinstance(message, Error)


def test_w002_not_raised_when_watchdog_above(settings: Any) -> None:
    settings.LOOPTOKEN = {"WATCHDOG_SECONDS": 0.2, "SLOW_CALLBACK_DURATION": 0.1}
    assert run_checks() == []


def test_w003_judged_from_asgiref_code_without_starting_a_loop(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No check starts a loop: W003 reads asgiref's code (the live probe waits
    for the first request), and reports an asgiref that no longer reads its
    threadlocal's loop."""
    settings.LOOPTOKEN = {"AUTOSTART": False, "ASYNC_VIEWS": True}
    _async_views.hook_works.cache_clear()  # as in a fresh process
    started: list[object] = []

    def on_started(sender: object, **kwargs: object) -> None:
        started.append(sender)

    loop_started.connect(on_started)
    try:
        call_command("check", stdout=io.StringIO(), stderr=io.StringIO())
        assert run_checks() == []
    finally:
        loop_started.disconnect(on_started)
    assert started == []
    assert runtime().state is State.STOPPED

    def call_without_the_hook(self: AsyncToSync, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError  # an asgiref that never looks at main_event_loop

    monkeypatch.setattr(AsyncToSync, "__call__", call_without_the_hook)
    message = only(run_checks(), "looptoken.W003")
    assert "ASYNC_VIEWS" in message.msg
    settings.LOOPTOKEN = {"AUTOSTART": False, "ASYNC_VIEWS": False}
    assert run_checks() == []


def _link_as(uid: int, target: Path, link: Path) -> None:
    link.symlink_to(target)
    os.lchown(link, uid, -1)


NOBODY = 65534


@pytest.mark.skipif(os.getuid() != 0, reason="making a file of another user needs root")
def test_w004_status_dir_through_another_users_symlink(settings: Any, tmp_path: Path) -> None:
    """A STATUS_DIR reached through a symlink another user owns, in a sticky
    world-writable directory like /tmp, is unsafe along its path."""
    public = tmp_path / "public"
    public.mkdir()
    public.chmod(0o1777)
    mine = tmp_path / "mine"
    mine.mkdir(mode=0o700)
    _link_as(NOBODY, mine, public / "theirs")
    settings.LOOPTOKEN = {"STATUS_DIR": str(public / "theirs" / "status")}
    message = only(run_checks(), "looptoken.W004")
    assert f"owned by uid {NOBODY}" in message.msg
    assert not isinstance(message, Error)
    # The same link owned by this user is fine: in a sticky directory only
    # its owner may replace it.
    _link_as(os.getuid(), mine, public / "ours")
    settings.LOOPTOKEN = {"STATUS_DIR": str(public / "ours" / "status")}
    assert run_checks() == []


def test_w004_status_dir_through_a_world_writable_directory(settings: Any, tmp_path: Path) -> None:
    """Any user may replace an entry of a world-writable directory without the
    sticky bit, so a path through one is unsafe, link or not."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    (tmp_path / "real").mkdir(mode=0o700)
    (shared / "link").symlink_to(tmp_path / "real")
    settings.LOOPTOKEN = {"STATUS_DIR": str(shared / "link" / "status")}
    message = only(run_checks(), "looptoken.W004")
    assert f"{shared} is writable by other users" in message.msg


def test_w004_status_socket_refuses_an_unsafe_path(
    settings: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The runtime refuses the same path: the loop runs, its status socket is off."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    (tmp_path / "real").mkdir(mode=0o700)
    (shared / "link").symlink_to(tmp_path / "real")
    settings.LOOPTOKEN = {"AUTOSTART": False, "STATUS_DIR": str(shared / "link" / "status")}
    with caplog.at_level(logging.ERROR, logger="django_looptoken"), looptoken.start_loop():
        assert looptoken.await_(asyncio.sleep(0, result=1)) == 1
    assert not (tmp_path / "real" / "status").exists()
    assert any("writable by other users" in r.getMessage() for r in caplog.records)


def test_status_dir_is_made_0700_under_umask_277(settings: Any, tmp_path: Path) -> None:
    """A strict umask does not leave the created directory 0500 and then refused."""
    directory = tmp_path / "a" / "status"
    settings.LOOPTOKEN = {"AUTOSTART": False, "STATUS_DIR": str(directory)}
    previous = os.umask(0o277)
    try:
        with looptoken.start_loop():
            socket_path = Path(_status_socket.socket_path(str(directory), os.getpid(), project()))
            assert socket_path.exists()
    finally:
        os.umask(previous)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700


# -- the middleware -----------------------------------------------------------------

MIDDLEWARE = "django_looptoken.middleware.LoopTokenMiddleware"


def middleware_checks() -> list[CheckMessage]:
    return list(check_middleware(None))


def test_e010_middleware_without_the_app(settings: Any) -> None:
    settings.INSTALLED_APPS = [a for a in settings.INSTALLED_APPS if a != "django_looptoken"]
    settings.MIDDLEWARE = [MIDDLEWARE]
    message = only(middleware_checks(), "looptoken.E010")
    assert isinstance(message, Error)
    assert "INSTALLED_APPS" in str(message.hint)


def test_w005_middleware_listed_twice(settings: Any) -> None:
    settings.MIDDLEWARE = [MIDDLEWARE, "django.middleware.csrf.CsrfViewMiddleware", MIDDLEWARE]
    message = only(middleware_checks(), "looptoken.W005")
    assert "2 times" in message.msg


@pytest.mark.parametrize(
    "above",
    [
        "django.middleware.common.CommonMiddleware",
        "django.middleware.locale.LocaleMiddleware",
        "django.middleware.http.ConditionalGetMiddleware",
        "tests.test_checks.MyCommonMiddleware",
    ],
)
def test_w006_middleware_that_replaces_responses_above_it(settings: Any, above: str) -> None:
    settings.MIDDLEWARE = ["django.middleware.security.SecurityMiddleware", above, MIDDLEWARE]
    message = only(middleware_checks(), "looptoken.W006")
    assert above in message.msg
    settings.MIDDLEWARE = [MIDDLEWARE, "django.middleware.security.SecurityMiddleware", above]
    assert middleware_checks() == []


class MyCommonMiddleware(CommonMiddleware):
    """A project's own CommonMiddleware: it replaces responses just the same."""


# Closing a response closes old database connections: a test before this one may have left one.
@pytest.mark.django_db
def test_w006_is_real_common_middleware_above_leaves_the_token_held(settings: Any) -> None:
    """What W006 warns of: CommonMiddleware above turns the 404 that carries
    the token's release into a redirect, and nobody closes the 404."""
    settings.MIDDLEWARE = ["django.middleware.common.CommonMiddleware", MIDDLEWARE]
    settings.APPEND_SLASH = True
    try:
        response = Client().get("/tokens")
        response.close()
        assert response.status_code == 301
        assert looptoken.status()["tokens"] == 1  # the 404's token, never released
    finally:
        runtime().shutdown(timeout=1)
    settings.MIDDLEWARE = [MIDDLEWARE, "django.middleware.common.CommonMiddleware"]
    response = Client().get("/tokens")
    response.close()
    assert response.status_code == 301
    assert looptoken.status()["state"] == "stopped"


# -- registration and the runtime ---------------------------------------------


def test_check_command_fails_on_invalid_settings(settings: Any) -> None:
    """The check is registered: ``manage.py check`` reports the error id."""
    settings.LOOPTOKEN = {"BACKEND": 42}
    with pytest.raises(SystemCheckError, match=r"looptoken\.E003"):
        call_command("check", stdout=io.StringIO(), stderr=io.StringIO())


def test_check_command_passes_valid_settings_and_shows_warnings(settings: Any) -> None:
    settings.LOOPTOKEN = {"AUTOSTART": False, "WATCHDOG_SECONDS": 0.05}
    out, err = io.StringIO(), io.StringIO()
    call_command("check", stdout=out, stderr=err)
    assert "looptoken.W002" in out.getvalue() + err.getvalue()


def test_start_loop_refuses_invalid_settings(settings: Any) -> None:
    """start_loop() names the error, starts nothing, and works once settings are fixed."""
    settings.LOOPTOKEN = {"AUTOSTART": False, "BACKEND": 42, "DEBUG": "yes"}
    with pytest.raises(ImproperlyConfigured, match=r"looptoken\.E003") as excinfo:
        looptoken.start_loop()
    assert "looptoken.E005" in str(excinfo.value)
    assert runtime().state is State.STOPPED
    assert runtime().current_run is None

    settings.LOOPTOKEN = {"AUTOSTART": False, "BACKEND": "asyncio"}
    token = looptoken.start_loop()
    try:
        assert token.held
        assert looptoken.get_loop().is_running()
    finally:
        token.release()
    assert runtime().state is State.STOPPED


def test_start_loop_refuses_invalid_settings_after_get_loop(settings: Any) -> None:
    """Settings made invalid after get_loop() built the next loop still stop start_loop().

    get_loop() on a stopped runtime builds the loop the next start will run;
    that loop must not let a start bypass the settings check.
    """
    settings.LOOPTOKEN = {"AUTOSTART": False, "BACKEND": "asyncio"}
    assert not looptoken.get_loop().is_running()
    settings.LOOPTOKEN = {"AUTOSTART": False, "BACKEND": "asyncio", "DEBUG": "yes"}
    token: looptoken.LoopToken | None = None
    try:
        with pytest.raises(ImproperlyConfigured, match=r"looptoken\.E005"):
            token = looptoken.start_loop()
    finally:
        if token is not None:
            token.release()
    assert runtime().state is State.STOPPED


def test_invalid_settings_serve_pages_that_do_not_use_the_loop(settings: Any) -> None:
    """The middleware takes no token and routes nothing while the settings are
    invalid; a view that uses the loop gets ImproperlyConfigured naming the fix."""
    settings.LOOPTOKEN = {"AUTOSTART": False, "SHUTDOWN_TIMOUT": 5}
    response = Client().get("/tokens/")
    assert response.status_code == 200
    assert response.json() == {"held": False, "tokens": 0}
    assert runtime().state is State.STOPPED
    with pytest.raises(ImproperlyConfigured, match="Did you mean 'SHUTDOWN_TIMEOUT'"):
        Client().get("/async-function/")
    with pytest.raises(ImproperlyConfigured, match=r"looptoken\.E002"):
        looptoken.spawn(asyncio.sleep(0))
    assert runtime().state is State.STOPPED


def test_invalid_values_read_as_defaults(settings: Any) -> None:
    """Reading a key never raises (nothing fails at import or at exit): an
    invalid value reads as its default, while the check keeps the loop off."""
    settings.LOOPTOKEN = {
        "AUTOSTART": False,
        "SHUTDOWN_TIMEOUT": "x",
        "DEFAULT_TIMEOUT": float("nan"),
        "WATCHDOG_SECONDS": "5",
        "EXECUTOR_MAX_WORKERS": 0,
        "STATUS_DIR": "",
        "BACKEND": 3,
    }
    conf = looptoken_settings
    assert conf.SHUTDOWN_TIMEOUT == 30.0
    assert conf.DEFAULT_TIMEOUT is None
    assert conf.WATCHDOG_SECONDS == 5.0
    assert conf.EXECUTOR_MAX_WORKERS is None
    assert conf.STATUS_DIR is None
    assert conf.BACKEND == "auto"
    looptoken.shutdown()  # reads SHUTDOWN_TIMEOUT, as the exit hook does
    settings.LOOPTOKEN = {"SHUTDOWN_TIMEOUT": None}
    assert looptoken_settings.SHUTDOWN_TIMEOUT == 30.0
    assert [p.id for p in looptoken_settings.problems()] == ["looptoken.E006"]


# -- W007: SHUTDOWN_TIMEOUT against gunicorn's graceful_timeout ----------------------


def test_w007_a_gunicorn_conf_whose_grace_is_shorter_than_the_drain(
    settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.LOOPTOKEN = {"SHUTDOWN_TIMEOUT": 30}
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GUNICORN_CMD_ARGS", raising=False)
    assert run_checks() == []  # no gunicorn configuration: nothing to compare with
    (tmp_path / "gunicorn.conf.py").write_text("workers = 4\ngraceful_timeout = 20\n")
    message = only(run_checks(), "looptoken.W007")
    assert "graceful_timeout (20 s, from " in message.msg
    assert "gunicorn.conf.py" in message.msg
    (tmp_path / "gunicorn.conf.py").write_text("graceful_timeout = 45\n")
    assert run_checks() == []  # room for the drain


def test_w007_from_gunicorn_cmd_args(
    settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.LOOPTOKEN = {"SHUTDOWN_TIMEOUT": 10}
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GUNICORN_CMD_ARGS", "--workers 2 --graceful-timeout=10")
    assert "from GUNICORN_CMD_ARGS" in only(run_checks(), "looptoken.W007").msg
    monkeypatch.setenv("GUNICORN_CMD_ARGS", "--graceful-timeout 60")
    assert run_checks() == []

"""System checks for the LOOPTOKEN setting, and the runtime refusing bad settings."""

from __future__ import annotations

import io
import sys
from typing import Any

import pytest
from django.core.checks import CheckMessage, Error
from django.core.checks import Warning as CheckWarning
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.core.management.base import SystemCheckError

import django_looptoken as looptoken
from django_looptoken._runtime import State, runtime
from django_looptoken.checks import check_looptoken_settings


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


@pytest.mark.parametrize("value", [42, ["/tmp"], b"/tmp"])
def test_e008_status_dir(settings: Any, value: object) -> None:
    settings.LOOPTOKEN = {"STATUS_DIR": value}
    message = only(run_checks(), "looptoken.E008")
    assert "STATUS_DIR" in message.msg


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

"""The ``LOOPTOKEN`` setting: read in one place, and validated here.

Values are read live from ``django.conf.settings`` (so ``override_settings``
works) and cached until Django's ``setting_changed`` signal says otherwise.
Without configured Django settings (a plain script) the defaults apply.

Validation is plain functions returning :class:`Problem` objects:
``checks.py`` wraps them as system checks, the runtime refuses to start a
loop while :meth:`LoopTokenSettings.problems` is not empty, and the
middleware then serves requests without the loop. Reading a key never
raises: an invalid value reads as its default (so nothing fails at import
or at exit), while the problems keep the loop off.
"""

from __future__ import annotations

import difflib
import math
import numbers
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed

from django_looptoken import _backends, _greenlets, _status_socket, _uwsgi

DEFAULTS: dict[str, Any] = {
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
    "METRICS_TOKEN": None,
}


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the settings: a stable check id, what, and the fix."""

    id: str
    msg: str
    hint: str

    def __str__(self) -> str:
        return f"{self.id}: {self.msg} Fix: {self.hint}"


# -- values ---------------------------------------------------------------------------


def is_seconds(value: object) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def validate_timeout(timeout: object, name: str, *, zero_ok: bool = False) -> float | None:
    """``timeout`` as a float, or None; the one check every API timeout goes through.

    TypeError for anything that is not a number (a bool, a string), ValueError
    for a number that is not finite or not above 0 (``zero_ok``: at least 0).
    """
    if timeout is None:
        return None
    bound = ">= 0" if zero_ok else "> 0"
    wanted = f"None or a finite number of seconds {bound}"
    if isinstance(timeout, bool) or not isinstance(timeout, numbers.Real):
        raise TypeError(f"{name}() timeout must be {wanted}, not {timeout!r}.")
    if not math.isfinite(timeout) or timeout < 0 or (timeout == 0 and not zero_ok):
        raise ValueError(f"{name}() timeout must be {wanted}, not {timeout!r}.")
    return float(timeout)


def _bool_problems(key: str, value: object) -> list[Problem]:
    if isinstance(value, bool):
        return []
    return [
        Problem(
            "looptoken.E005",
            f'LOOPTOKEN["{key}"] must be True or False, not {value!r}.',
            f"Default: {DEFAULTS[key]!r}.",
        )
    ]


def _seconds_checker(*, nullable: bool, zero_ok: bool) -> Callable[[str, object], list[Problem]]:
    def problems(key: str, value: object) -> list[Problem]:
        if value is None and nullable:
            return []
        if is_seconds(value) and (value > 0 or (zero_ok and value == 0)):  # type: ignore[operator]
            return []
        bound = ">= 0" if zero_ok else "> 0"
        wanted = f"{'None or ' if nullable else ''}a number of seconds {bound}"
        return [
            Problem(
                "looptoken.E006",
                f'LOOPTOKEN["{key}"] must be {wanted}, not {value!r}.',
                f"Default: {DEFAULTS[key]!r}.",
            )
        ]

    return problems


def _executor_problems(key: str, value: object) -> list[Problem]:
    if value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        return []
    return [
        Problem(
            "looptoken.E007",
            f'LOOPTOKEN["{key}"] must be None or a positive int, not {value!r}.',
            "None keeps Python's default executor size.",
        )
    ]


# Long enough that guessing it is out of reach (a secrets.token_urlsafe() is 43).
METRICS_TOKEN_MIN_LENGTH = 16


def _metrics_token_problems(key: str, value: object) -> list[Problem]:
    if value is None or (isinstance(value, str) and len(value) >= METRICS_TOKEN_MIN_LENGTH):
        return []
    # Never the value itself: it is a secret, and messages end up in logs.
    what = f"a string of {len(value)}" if isinstance(value, str) else type(value).__name__
    return [
        Problem(
            "looptoken.E013",
            f'LOOPTOKEN["{key}"] must be None or a string of at least '
            f"{METRICS_TOKEN_MIN_LENGTH} characters, not {what}.",
            "Make one with python -c 'import secrets; print(secrets.token_urlsafe())', "
            "and read it from the environment rather than writing it in settings.",
        )
    ]


def _status_dir_problems(key: str, value: object) -> list[Problem]:
    if value is None:
        return []
    path = os.fspath(value) if isinstance(value, (str, os.PathLike)) else None
    if isinstance(path, str) and os.path.isabs(path):
        return []
    return [
        Problem(
            "looptoken.E008",
            f'LOOPTOKEN["{key}"] must be None or an absolute path (str or Path), not {value!r}.',
            "None puts the sockets in a per-user directory in the temp dir. A relative "
            'path ("" included) would depend on each process\'s current directory.',
        )
    ]


def backend_problems(key: str, value: object) -> list[Problem]:
    """``BACKEND``: a string naming a loop factory that builds an unstarted loop.

    A dotted-path factory is called once here and its loop closed unstarted:
    a factory that raises or returns something else is reported, not found
    later by a crashing worker.
    """
    if not isinstance(value, str):
        return [
            Problem(
                "looptoken.E003",
                f'LOOPTOKEN["{key}"] must be a string, not {value!r}.',
                'Use "auto", "asyncio", "uvloop" or a dotted path to a loop factory.',
            )
        ]
    try:
        factory = _backends.resolve_loop_factory(value)
    except ImproperlyConfigured as exc:
        return [
            Problem(
                "looptoken.E004",
                str(exc),
                '"auto" picks uvloop when it is installed and asyncio otherwise.',
            )
        ]
    if value in _backends.BUILTIN:
        return []  # loops of their own classes, known to build
    try:
        _backends.build_loop(value, factory).close()
    except ImproperlyConfigured as exc:
        return [
            Problem(
                "looptoken.E009",
                str(exc),
                "Name a zero-argument callable that returns a new, unstarted event loop "
                '(such as "uvloop.new_event_loop" or "asyncio.SelectorEventLoop"), '
                'or use "auto".',
            )
        ]
    return []


_KEY_CHECKS: dict[str, Callable[[str, object], list[Problem]]] = {
    "BACKEND": backend_problems,
    "AUTOSTART": _bool_problems,
    "ASYNC_VIEWS": _bool_problems,
    "DEFAULT_TIMEOUT": _seconds_checker(nullable=True, zero_ok=False),
    "SHUTDOWN_TIMEOUT": _seconds_checker(nullable=False, zero_ok=True),
    "EXECUTOR_MAX_WORKERS": _executor_problems,
    "DEBUG": _bool_problems,
    "SLOW_CALLBACK_DURATION": _seconds_checker(nullable=False, zero_ok=False),
    "STATUS_DIR": _status_dir_problems,
    "WATCHDOG_SECONDS": _seconds_checker(nullable=True, zero_ok=False),
    "METRICS_TOKEN": _metrics_token_problems,
}


def setting_problems(user: object) -> list[Problem]:
    """Every error in the ``LOOPTOKEN`` value ``user``, all at once."""
    if not isinstance(user, dict):
        return [
            Problem(
                "looptoken.E001",
                f"LOOPTOKEN must be a dict, not {type(user).__name__}.",
                'Write it as LOOPTOKEN = {"BACKEND": "auto", ...} or remove it.',
            )
        ]
    problems: list[Problem] = []
    for key in user:
        if key not in DEFAULTS:
            close = difflib.get_close_matches(str(key), DEFAULTS, n=1)
            hint = (
                f"Did you mean {close[0]!r}?" if close else f"Known keys: {', '.join(DEFAULTS)}."
            )
            problems.append(
                Problem("looptoken.E002", f"LOOPTOKEN has an unknown key {key!r}.", hint)
            )
    for key, check in _KEY_CHECKS.items():
        if key in user:
            problems += check(key, user[key])
    return problems


def status_dir_problems(configured: str | None) -> list[Problem]:
    """The status directory as it is on disk now: unsafe along its path, or
    unusable (the loop runs, but its status socket would be off)."""
    directory = _status_socket.status_dir(configured)
    try:
        _status_socket.check_path(directory)
        if os.path.lexists(directory):
            _status_socket.check_dir(directory)
    except _status_socket.StatusDirError as exc:
        return [
            Problem(
                "looptoken.W004",
                f"The status socket would be off: {exc}",
                'Set LOOPTOKEN["STATUS_DIR"] to a directory of your own, on a path '
                "only you and root can change (such as one in your home directory).",
            )
        ]
    return []


def server_problems() -> list[Problem]:
    """What in the server this process runs in keeps the loop from working."""
    if _greenlets.patched_too_late():
        return [
            Problem(
                "looptoken.E012",
                "eventlet monkey-patched this process after django_looptoken was "
                "imported: the loop would be an OS thread, and eventlet's locks "
                "cannot be woken from one.",
                "Call eventlet.monkey_patch() first thing in the program, before "
                "Django or this app is imported (Celery -P eventlet does).",
            )
        ]
    if _uwsgi.threads_off():
        return [
            Problem(
                "looptoken.E011",
                "uWSGI runs Python threads only while it serves a request (before "
                "uWSGI 2.0.27 threads are off by default): the loop's thread would stall.",
                "Add --enable-threads to uWSGI's options (enable-threads = true in its "
                "ini file), or upgrade uWSGI to 2.0.27 or later.",
            )
        ]
    return []


def eventlet_async_views_problem() -> Problem | None:
    """Under eventlet with ``ASYNC_VIEWS`` off, what becomes of async views."""
    if _greenlets.monkey_patched() != "eventlet" or looptoken_settings.ASYNC_VIEWS:
        return None
    return Problem(
        "looptoken.W008",
        "ASYNC_VIEWS is off under eventlet: Django runs each async view on an event "
        "loop of its own, in a green thread on the shared loop's OS thread, where each "
        "loop takes the other for the running one and the view fails.",
        'Set LOOPTOKEN["ASYNC_VIEWS"] = True (the default): async views then run on '
        "the shared loop.",
    )


# The problems of the server rather than of the setting.
SERVER_PROBLEMS = {
    "looptoken.E011": "this server runs no threads",
    "looptoken.E012": "eventlet patched this process too late",
}


def problems_text(problems: list[Problem]) -> str:
    """The one message for invalid settings: logged once at startup, raised at each use."""
    causes = {SERVER_PROBLEMS.get(problem.id) for problem in problems}
    cause = causes.pop() if len(causes) == 1 else None
    cause = cause or "the LOOPTOKEN setting is invalid"
    return (
        f"The shared loop cannot start: {cause} "
        "(pages that do not use the loop are served as usual).\n"
        + "\n".join(f"  {problem}" for problem in problems)
    )


# -- reading --------------------------------------------------------------------------


class LoopTokenSettings:
    """Typed access to ``settings.LOOPTOKEN`` merged over :data:`DEFAULTS`.

    It never raises for bad values: an invalid key reads as its default,
    :meth:`problems` lists what is wrong, and the runtime refuses to start a
    loop while it lists anything.
    """

    def __init__(self) -> None:
        self._cache: dict[str, Any] | None = None
        self._valid: dict[str, Any] = {}
        self._problems: list[Problem] | None = None
        self._invalid_text: str | None = None

    def user_settings(self) -> object:
        """The raw ``LOOPTOKEN`` value as the user wrote it (``{}`` if unset)."""
        if not settings.configured:
            return {}
        return getattr(settings, "LOOPTOKEN", {})

    def merged(self) -> dict[str, Any]:
        """Every key, with the user's values over the defaults (as written, maybe invalid)."""
        if self._cache is None:
            user = self.user_settings()
            self._cache = {**DEFAULTS, **(user if isinstance(user, dict) else {})}
        return self._cache

    def problems(self) -> list[Problem]:
        """Every error in the setting and in the server this process runs in
        (cached until the setting changes); empty when the loop can start."""
        if self._problems is None:
            problems = setting_problems(self.user_settings()) + server_problems()
            self._invalid_text = problems_text(problems) if problems else None
            self._problems = problems
        return self._problems

    def invalid_text(self) -> str | None:
        """The error message while the setting is invalid, else None (cheap: per request)."""
        if self._problems is None:
            self.problems()
        return self._invalid_text

    def raise_if_invalid(self) -> None:
        """ImproperlyConfigured, naming every problem and its fix, if the setting is invalid."""
        text = self.invalid_text()
        if text is not None:
            raise ImproperlyConfigured(text)

    def clear_cache(self) -> None:
        """Forget the cached values (called when Django settings change)."""
        self._cache = None
        self._valid = {}
        self._problems = None
        self._invalid_text = None

    def _value(self, key: str) -> Any:
        # The user's value if it passes its key's check, else the default.
        try:
            return self._valid[key]
        except KeyError:
            pass
        value = self.merged()[key]
        if key != "BACKEND" and _KEY_CHECKS[key](key, value):
            value = DEFAULTS[key]
        elif key == "BACKEND" and not isinstance(value, str):
            value = DEFAULTS[key]  # the runtime checks the rest before building a loop
        self._valid[key] = value
        return value

    @property
    def BACKEND(self) -> str:
        """Which event loop implementation to run."""
        return str(self._value("BACKEND"))

    @property
    def AUTOSTART(self) -> bool:
        """Start the loop when the app loads and hold the app's token."""
        return bool(self._value("AUTOSTART"))

    @property
    def ASYNC_VIEWS(self) -> bool:
        """Run Django's own async views under WSGI on the shared loop."""
        return bool(self._value("ASYNC_VIEWS"))

    @property
    def DEFAULT_TIMEOUT(self) -> float | None:
        """Seconds for ``await_``-style calls that give no timeout."""
        value = self._value("DEFAULT_TIMEOUT")
        return None if value is None else float(value)

    @property
    def SHUTDOWN_TIMEOUT(self) -> float:
        """Seconds the shutdown sequence waits for protected tasks."""
        return float(self._value("SHUTDOWN_TIMEOUT"))

    @property
    def EXECUTOR_MAX_WORKERS(self) -> int | None:
        """Size of the loop's default executor (``None``: Python's default)."""
        value = self._value("EXECUTOR_MAX_WORKERS")
        return None if value is None else int(value)

    @property
    def DEBUG(self) -> bool:
        """asyncio debug mode on the shared loop."""
        return bool(self._value("DEBUG"))

    @property
    def SLOW_CALLBACK_DURATION(self) -> float:
        """Seconds after which a callback counts as slow."""
        return float(self._value("SLOW_CALLBACK_DURATION"))

    @property
    def STATUS_DIR(self) -> str | None:
        """Directory of the per-process status sockets (``None``: automatic)."""
        value = self._value("STATUS_DIR")
        return None if value is None else os.fspath(value)

    @property
    def WATCHDOG_SECONDS(self) -> float | None:
        """Seconds of loop stall before its stack is logged (``None``: off)."""
        value = self._value("WATCHDOG_SECONDS")
        return None if value is None else float(value)

    @property
    def METRICS_TOKEN(self) -> str | None:
        """The bearer token that may read the metrics (``None``: staff only)."""
        value = self._value("METRICS_TOKEN")
        return None if value is None else str(value)


looptoken_settings = LoopTokenSettings()


def _on_setting_changed(*, setting: str, **kwargs: object) -> None:
    if setting == "LOOPTOKEN":
        looptoken_settings.clear_cache()


setting_changed.connect(_on_setting_changed)

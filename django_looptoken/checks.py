"""System checks for the ``LOOPTOKEN`` setting (``manage.py check``).

Errors (``looptoken.E0xx``) are settings the loop cannot start from;
warnings (``looptoken.W0xx``) are setups that work but are probably not meant.
"""

from __future__ import annotations

import difflib
import math
import numbers
import os
from collections.abc import Sequence
from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register
from django.core.exceptions import ImproperlyConfigured

from django_looptoken._backends import resolve_loop_factory
from django_looptoken.conf import DEFAULTS, looptoken_settings

_BOOL_KEYS = ("AUTOSTART", "ASYNC_VIEWS", "DEBUG")
# key -> (may be None, zero allowed)
_SECONDS_KEYS = {
    "DEFAULT_TIMEOUT": (True, False),
    "SHUTDOWN_TIMEOUT": (False, True),
    "SLOW_CALLBACK_DURATION": (False, False),
    "WATCHDOG_SECONDS": (True, False),
}


def _is_number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def settings_errors() -> list[CheckMessage]:
    """Every error in ``LOOPTOKEN``; the runtime refuses to start while any exist."""
    user = looptoken_settings.user_settings()
    if not isinstance(user, dict):
        return [
            Error(
                f"LOOPTOKEN must be a dict, not {type(user).__name__}.",
                hint='Write it as LOOPTOKEN = {"BACKEND": "auto", ...} or remove it.',
                id="looptoken.E001",
            )
        ]
    errors: list[CheckMessage] = []
    for key in user:
        if key not in DEFAULTS:
            close = difflib.get_close_matches(str(key), DEFAULTS, n=1)
            hint = (
                f"Did you mean {close[0]!r}?" if close else f"Known keys: {', '.join(DEFAULTS)}."
            )
            errors.append(
                Error(f"LOOPTOKEN has an unknown key {key!r}.", hint=hint, id="looptoken.E002")
            )
    merged = looptoken_settings.merged()
    errors += _backend_errors(merged["BACKEND"])
    for key in _BOOL_KEYS:
        if not isinstance(merged[key], bool):
            errors.append(
                Error(
                    f'LOOPTOKEN["{key}"] must be True or False, not {merged[key]!r}.',
                    hint=f"Default: {DEFAULTS[key]!r}.",
                    id="looptoken.E005",
                )
            )
    for key, (nullable, zero_ok) in _SECONDS_KEYS.items():
        errors += _seconds_errors(key, merged[key], nullable=nullable, zero_ok=zero_ok)
    workers = merged["EXECUTOR_MAX_WORKERS"]
    if workers is not None and (
        not isinstance(workers, int) or isinstance(workers, bool) or workers < 1
    ):
        errors.append(
            Error(
                'LOOPTOKEN["EXECUTOR_MAX_WORKERS"] must be None or a positive int, '
                f"not {workers!r}.",
                hint="None keeps Python's default executor size.",
                id="looptoken.E007",
            )
        )
    status_dir = merged["STATUS_DIR"]
    if status_dir is not None and not isinstance(status_dir, (str, os.PathLike)):
        errors.append(
            Error(
                'LOOPTOKEN["STATUS_DIR"] must be None or a path (str or Path), '
                f"not {status_dir!r}.",
                hint="None puts the sockets in a per-user directory in the temp dir.",
                id="looptoken.E008",
            )
        )
    return errors


def _backend_errors(backend: Any) -> list[CheckMessage]:
    if not isinstance(backend, str):
        return [
            Error(
                f'LOOPTOKEN["BACKEND"] must be a string, not {backend!r}.',
                hint='Use "auto", "asyncio", "uvloop" or a dotted path to a loop factory.',
                id="looptoken.E003",
            )
        ]
    try:
        resolve_loop_factory(backend)
    except ImproperlyConfigured as exc:
        return [
            Error(
                str(exc),
                hint='"auto" picks uvloop when it is installed and asyncio otherwise.',
                id="looptoken.E004",
            )
        ]
    return []


def _seconds_errors(key: str, value: Any, *, nullable: bool, zero_ok: bool) -> list[CheckMessage]:
    if value is None and nullable:
        return []
    bound = ">= 0" if zero_ok else "> 0"
    wanted = f"{'None or ' if nullable else ''}a number of seconds {bound}"
    if not _is_number(value):
        return [
            Error(
                f'LOOPTOKEN["{key}"] must be {wanted}, not {value!r}.',
                hint=f"Default: {DEFAULTS[key]!r}.",
                id="looptoken.E006",
            )
        ]
    if value < 0 or (value == 0 and not zero_ok):
        return [
            Error(
                f'LOOPTOKEN["{key}"] must be {wanted}, not {value!r}.',
                hint=f"Default: {DEFAULTS[key]!r}.",
                id="looptoken.E006",
            )
        ]
    return []


def settings_warnings() -> list[CheckMessage]:
    """Setups that work but are probably a mistake (only for valid settings)."""
    conf = looptoken_settings
    warnings: list[CheckMessage] = []
    if conf.DEBUG and not settings.DEBUG:
        warnings.append(
            Warning(
                'LOOPTOKEN["DEBUG"] is on while Django\'s DEBUG is off.',
                hint="asyncio debug mode slows every callback; turn it off in production.",
                id="looptoken.W001",
            )
        )
    watchdog = conf.WATCHDOG_SECONDS
    if watchdog is not None and watchdog <= conf.SLOW_CALLBACK_DURATION:
        warnings.append(
            Warning(
                f'LOOPTOKEN["WATCHDOG_SECONDS"] ({watchdog}) is not above '
                f"SLOW_CALLBACK_DURATION ({conf.SLOW_CALLBACK_DURATION}).",
                hint="The watchdog would report every slow callback as a stall; raise it.",
                id="looptoken.W002",
            )
        )
    if conf.ASYNC_VIEWS:
        from django_looptoken._async_views import hook_works

        if not hook_works():
            warnings.append(
                Warning(
                    "ASYNC_VIEWS is on, but this asgiref version does not let async views "
                    "run on the shared loop; they run on a new loop per request.",
                    hint="Pin asgiref to a version django-looptoken supports, or set "
                    'LOOPTOKEN["ASYNC_VIEWS"] = False to silence this.',
                    id="looptoken.W003",
                )
            )
    return warnings


@register(Tags.compatibility)
def check_looptoken_settings(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: object
) -> list[CheckMessage]:
    """The ``manage.py check`` entry point."""
    errors = settings_errors()
    return errors if errors else settings_warnings()

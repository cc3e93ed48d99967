"""System checks (``manage.py check``): the ``LOOPTOKEN`` setting and the middleware.

The validation itself lives in ``conf.py``; this module only turns its
problems into check messages and adds the checks of how the app is wired in.
Errors (``looptoken.E0xx``) are setups the loop cannot run from; warnings
(``looptoken.W0xx``) are setups that work but are probably not meant. Every
message has a hint, and ids never change meaning (troubleshooting.md lists them).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from django.apps import AppConfig, apps
from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register
from django.middleware.common import CommonMiddleware
from django.middleware.http import ConditionalGetMiddleware
from django.middleware.locale import LocaleMiddleware
from django.utils.module_loading import import_string

from django_looptoken._server_deadline import configured_gunicorn_grace
from django_looptoken.conf import (
    Problem,
    eventlet_async_views_problem,
    looptoken_settings,
    status_dir_problems,
)

MIDDLEWARE_PATH = "django_looptoken.middleware.LoopTokenMiddleware"

# Middleware that may return a new response instead of the one it was given
# (APPEND_SLASH and language redirects after a 404, 304 Not Modified, flat
# pages and redirects after a 404). Above LoopTokenMiddleware, the response
# it was given, whose close releases the request's token, is never closed.
REPLACES_RESPONSES = (
    "django.middleware.common.CommonMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.http.ConditionalGetMiddleware",
    "django.contrib.flatpages.middleware.FlatpageFallbackMiddleware",
    "django.contrib.redirects.middleware.RedirectFallbackMiddleware",
)


def _error(problem: Problem) -> Error:
    return Error(problem.msg, hint=problem.hint, id=problem.id)


def settings_errors() -> list[CheckMessage]:
    """Every error in ``LOOPTOKEN``; the runtime refuses to start while any exist."""
    return [_error(problem) for problem in looptoken_settings.problems()]


def settings_warnings() -> list[CheckMessage]:
    """Setups that work but are probably a mistake (only for valid settings).

    None of them starts a loop: the asgiref hook (W003) is judged from
    asgiref's code here, and probed live at the first request.
    """
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
        from django_looptoken._async_views import hook_probed_broken, hook_supported

        if not hook_supported() or hook_probed_broken():
            warnings.append(
                Warning(
                    "ASYNC_VIEWS is on, but this asgiref version does not let async views "
                    "run on the shared loop; they run on a new loop per request.",
                    hint="Pin asgiref to a version django-looptoken supports, or set "
                    'LOOPTOKEN["ASYNC_VIEWS"] = False to silence this.',
                    id="looptoken.W003",
                )
            )
    grace = configured_gunicorn_grace(Path.cwd())
    if grace is not None and grace[1] <= conf.SHUTDOWN_TIMEOUT:
        source, seconds = grace
        warnings.append(
            Warning(
                f'LOOPTOKEN["SHUTDOWN_TIMEOUT"] ({conf.SHUTDOWN_TIMEOUT:g} s) does not fit in '
                f"gunicorn's graceful_timeout ({seconds:g} s, from {source}): in-flight "
                "requests finish first, and the drain is cut to what is left of it.",
                hint="Make graceful_timeout longer than your longest request plus "
                "SHUTDOWN_TIMEOUT, or lower SHUTDOWN_TIMEOUT.",
                id="looptoken.W007",
            )
        )
    eventlet_problem = eventlet_async_views_problem()
    if eventlet_problem is not None:
        warnings.append(
            Warning(eventlet_problem.msg, hint=eventlet_problem.hint, id=eventlet_problem.id)
        )
    for problem in status_dir_problems(conf.STATUS_DIR):
        warnings.append(Warning(problem.msg, hint=problem.hint, id=problem.id))
    return warnings


@register(Tags.compatibility)
def check_looptoken_settings(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: object
) -> list[CheckMessage]:
    """The ``manage.py check`` entry point for the setting."""
    errors = settings_errors()
    return errors if errors else settings_warnings()


@register(Tags.compatibility)
def check_middleware(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: object
) -> list[CheckMessage]:
    """``LoopTokenMiddleware``: with the app, once, above what replaces responses."""
    middleware = [path for path in settings.MIDDLEWARE if isinstance(path, str)]
    if MIDDLEWARE_PATH not in middleware:
        return []
    messages: list[CheckMessage] = []
    if not apps.is_installed("django_looptoken"):
        messages.append(
            Error(
                f"{MIDDLEWARE_PATH} is in MIDDLEWARE but django_looptoken is not in "
                "INSTALLED_APPS: the loop starts and stops around every request "
                "(nothing is pooled) and SIGTERM does not drain.",
                hint='Add "django_looptoken" to INSTALLED_APPS.',
                id="looptoken.E010",
            )
        )
    if middleware.count(MIDDLEWARE_PATH) > 1:
        messages.append(
            Warning(
                f"{MIDDLEWARE_PATH} is in MIDDLEWARE {middleware.count(MIDDLEWARE_PATH)} "
                "times: each request takes a token per entry.",
                hint="List it once, near the top of MIDDLEWARE.",
                id="looptoken.W005",
            )
        )
    above = middleware[: middleware.index(MIDDLEWARE_PATH)]
    for path in above:
        if _replaces_responses(path):
            messages.append(
                Warning(
                    f"{path} comes before {MIDDLEWARE_PATH} in MIDDLEWARE and may replace "
                    "the response: the replaced one is never closed, so the request's token "
                    "stays held (and the shutdown drain waits for it) until the garbage "
                    "collector finds it.",
                    hint=f"Move {MIDDLEWARE_PATH} above {path}; first in MIDDLEWARE is safest.",
                    id="looptoken.W006",
                )
            )
    return messages


def _replaces_responses(path: str) -> bool:
    if path in REPLACES_RESPONSES:
        return True
    try:
        cls = import_string(path)
    except Exception:  # ImportError or worse: Django reports it when it loads MIDDLEWARE
        return False
    return isinstance(cls, type) and issubclass(
        cls, (CommonMiddleware, LocaleMiddleware, ConditionalGetMiddleware)
    )

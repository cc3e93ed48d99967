"""How long the exit drain may take before the server kills this process.

gunicorn SIGKILLs a worker ``graceful_timeout`` seconds (30 by default) after
it told it to stop, and uWSGI's master a worker it reloads
``worker-reload-mercy`` seconds (60 by default) after; the worker first
finishes its in-flight requests, so a drain allowed the whole
``SHUTDOWN_TIMEOUT`` could be killed half-way, its protected work lost
without a word. The drain gets what is left of the server's grace instead,
less a margin for the rest of the exit, and says so.
"""

from __future__ import annotations

import ast
import contextlib
import os
import shlex
import signal
import time
from pathlib import Path
from typing import NamedTuple

from django_looptoken import _signal_hooks, _uwsgi


class Grace(NamedTuple):
    """A server's grace period for this process: its name and its length."""

    name: str
    seconds: float


# What the exit needs after the drain: the closing steps and the
# interpreter's own teardown on a busy machine; under uWSGI also its clock,
# which counts whole seconds, and the time between the master's stop request
# (which Python never sees) and the drain.
MARGIN_SECONDS = 2.0


def server_grace() -> Grace | None:
    """The server's grace period for this process, if known."""
    # A gunicorn worker's SIGTERM handler is its own method, and the worker
    # carries the configuration: found whether the app wrapped the handler
    # (the worker loaded the app) or not (--preload: it was set after the fork).
    handler = _signal_hooks.handler_chained_to(signal.SIGTERM)
    worker = getattr(handler, "__self__", None)
    graceful_timeout = getattr(getattr(worker, "cfg", None), "graceful_timeout", None)
    if type(worker).__module__.startswith("gunicorn.workers.") and graceful_timeout is not None:
        return Grace("gunicorn's graceful_timeout", float(graceful_timeout))
    mercy = _uwsgi.worker_reload_mercy()
    if mercy is not None:
        return Grace("uWSGI's worker-reload-mercy", mercy)
    return None


def drain_budget(shutdown_timeout: float) -> tuple[float, str | None]:
    """Seconds the exit drain may take, and why it is less than
    ``shutdown_timeout`` (None when it is not)."""
    grace = server_grace()
    if grace is None:
        return shutdown_timeout, None
    asked_to_stop = _signal_hooks.stop_signal_at() or time.monotonic()
    ends_in = grace.seconds - (time.monotonic() - asked_to_stop)
    left = ends_in - MARGIN_SECONDS
    if left >= shutdown_timeout:
        return shutdown_timeout, None
    return max(left, 0.0), f"{grace.name} ({grace.seconds:g} s) ends {ends_in:.1f} s from now"


def configured_gunicorn_grace(directory: Path) -> tuple[str, float] | None:
    """gunicorn's ``graceful_timeout`` as a project configures it, read without
    running anything: from ``GUNICORN_CMD_ARGS``, or a literal assignment in
    ``gunicorn.conf.py`` in ``directory`` (gunicorn's default config file)."""
    arguments = shlex.split(os.environ.get("GUNICORN_CMD_ARGS", ""))
    for index, argument in enumerate(arguments):
        option, _, value = argument.partition("=")
        if option == "--graceful-timeout":
            value = value or (arguments[index + 1] if index + 1 < len(arguments) else "")
            with contextlib.suppress(ValueError):
                return "GUNICORN_CMD_ARGS", float(value)
    config = directory / "gunicorn.conf.py"
    try:
        tree = ast.parse(config.read_text())
    except (OSError, SyntaxError, ValueError):
        return None
    for statement in tree.body:
        if (
            isinstance(statement, ast.Assign)
            and any(
                isinstance(t, ast.Name) and t.id == "graceful_timeout" for t in statement.targets
            )
            and isinstance(statement.value, ast.Constant)
            and isinstance(statement.value.value, int | float)
        ):
            return str(config), float(statement.value.value)
    return None

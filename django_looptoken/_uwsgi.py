"""What the app reads from uWSGI when it runs inside it.

The ``uwsgi`` module exists only in a process uWSGI started; it is imported
once here (a failed import searches ``sys.path`` every time).
"""

from __future__ import annotations

import importlib
from types import ModuleType


def _import_uwsgi() -> ModuleType | None:
    try:
        return importlib.import_module("uwsgi")
    except ImportError:
        return None


uwsgi = _import_uwsgi()


# uWSGI's own default for --worker-reload-mercy.
DEFAULT_WORKER_RELOAD_MERCY = 60.0


def worker_reload_mercy() -> float | None:
    """In a uWSGI worker, the seconds its master gives it to stop before a
    SIGKILL when it reloads it (``--worker-reload-mercy``); else None."""
    if uwsgi is None or uwsgi.worker_id() == 0:
        return None
    value = uwsgi.opt.get("worker-reload-mercy")
    if isinstance(value, list):  # given more than once: the last one counts
        value = value[-1]
    try:
        return float(value.decode() if isinstance(value, bytes) else value)
    except (TypeError, ValueError):
        return DEFAULT_WORKER_RELOAD_MERCY


def threads_off() -> bool:
    """Whether this uWSGI runs Python threads only while a request holds the
    GIL (uWSGI before 2.0.27 without ``--enable-threads``): the loop's thread
    would then stall between requests."""
    return uwsgi is not None and not getattr(uwsgi, "has_threads", True)

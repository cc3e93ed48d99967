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


def threads_off() -> bool:
    """Whether this uWSGI runs Python threads only while a request holds the
    GIL (uWSGI before 2.0.27 without ``--enable-threads``): the loop's thread
    would then stall between requests."""
    return uwsgi is not None and not getattr(uwsgi, "has_threads", True)

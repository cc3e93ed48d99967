"""Counting real database connections by their open files."""

from __future__ import annotations

import contextlib
import os

from django.db import connection


def database_fds() -> int:
    """Open file descriptors of this process on the default database's file.

    With SQLite each real connection holds exactly one, so this counts real
    connections, whichever thread or wrapper made them.
    """
    path = os.path.realpath(connection.settings_dict["NAME"])
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        # A descriptor closed since the listing (such as the listing's own) is gone.
        with contextlib.suppress(OSError):
            count += os.readlink(f"/proc/self/fd/{fd}") == path
    return count

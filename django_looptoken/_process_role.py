"""The role of this process in its server, as the status shows it.

``master``: a process that forks the workers, whose loop idles and serves
no request (gunicorn's arbiter under ``--preload``, the uWSGI master); it
started its loop when it loaded the app, before forking. ``worker``: any
other process with a loop (a server worker, runserver, a command).

Told from the process itself, not from the server's name: a process becomes
a master when it forks a child with ``os.fork()`` (its after-in-parent
hook), and a child starts as a worker again. uWSGI forks from C, where
those hooks do not run; there the master is the process whose worker id
is 0.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Literal

from django_looptoken._uwsgi import uwsgi

Role = Literal["master", "worker"]

_forked_children = False


_worker_id: Callable[[], int] | None = getattr(uwsgi, "worker_id", None)
_master_pid: Callable[[], int] | None = getattr(uwsgi, "masterpid", None)


def is_uwsgi_master() -> bool:
    """Whether this is uWSGI's master process (``--master``), which loads the
    app before it forks the workers from C unless ``--lazy-apps`` is given."""
    return _master_pid is not None and _master_pid() == os.getpid()


def role() -> Role:
    """``"master"`` if this process forks the server's workers, else ``"worker"``."""
    if _worker_id is not None:
        return "master" if _worker_id() == 0 else "worker"
    return "master" if _forked_children else "worker"


def forked_a_child() -> None:
    """After ``os.fork()`` in the parent: it is a master from now on."""
    global _forked_children
    _forked_children = True


def forget_after_fork() -> None:
    """In a forked child: a worker, even if its parent had forked others before."""
    global _forked_children
    _forked_children = False

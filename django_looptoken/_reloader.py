"""runserver's autoreloader parent: let the serving child drain before leaving.

With the autoreloader, ``runserver`` is two processes: the parent only
restarts the child that serves (``RUN_MAIN=true``), waiting for it in
``subprocess.run``. Left alone, the parent ends the child's drain early:

* Ctrl-C reaches both; in the parent it interrupts that wait, and
  ``subprocess`` kills the child 0.25 s later, mid-drain;
* SIGTERM to the parent (a supervisor, an IDE's stop button) exits the
  parent through Django's handler, and ``subprocess.run`` kills the child
  on its way out.

So the parent's wait for each child runs with handlers of ours: a first
Ctrl-C keeps waiting (the terminal gave the child its own), a SIGTERM is
passed on to the child and the wait goes on; the child drains (bounded by
``SHUTDOWN_TIMEOUT``) and exits, and the parent leaves with its status, as
Django's reloader does. A second Ctrl-C typed at the terminal (a repeated
signal from a supervisor does not count), or the child still running
``SHUTDOWN_TIMEOUT`` plus a grace after the first signal, ends the wait as
Django would (the child is killed).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

from django.utils import autoreload

from django_looptoken._signal_hooks import typed_at_the_terminal
from django_looptoken.conf import looptoken_settings

logger = logging.getLogger("django_looptoken")

# How long past SHUTDOWN_TIMEOUT the parent waits for a draining child.
CHILD_GRACE_SECONDS = 5.0


def wait_for_draining_children() -> None:
    """Make this autoreloader parent wait for each child's drain (see above)."""
    restart = autoreload.restart_with_reloader
    if getattr(restart, "waits_for_draining_children", False):
        return

    @functools.wraps(restart)
    def restart_with_reloader() -> Any:
        with _signals_wait_for_the_child():
            return restart()

    restart_with_reloader.waits_for_draining_children = True  # type: ignore[attr-defined]
    autoreload.restart_with_reloader = restart_with_reloader


def _children() -> list[int]:
    """This process's children, from ``/proc`` (Linux); none elsewhere."""
    me = os.getpid()
    found = []
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                with open(os.path.join(entry.path, "stat"), "rb") as stat:
                    fields = stat.read().rpartition(b")")[2].split()
            except OSError:
                continue  # gone meanwhile
            if int(fields[1]) == me:  # after the name: state, then the parent's pid
                found.append(int(entry.name))
    return found


def _signal_children(signum: int) -> None:
    for pid in _children():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


@contextlib.contextmanager
def _signals_wait_for_the_child() -> Iterator[None]:
    signalled = threading.Event()
    deadline: list[threading.Timer] = []

    def first_signal() -> None:
        if signalled.is_set():
            return
        signalled.set()
        # The child bounds its own drain; this bounds a child that hangs anyway.
        timer = threading.Timer(
            looptoken_settings.SHUTDOWN_TIMEOUT + CHILD_GRACE_SECONDS,
            _signal_children,
            (signal.SIGKILL,),
        )
        timer.daemon = True
        timer.start()
        deadline.append(timer)

    def on_sigint(signum: int, frame: FrameType | None) -> None:
        if signalled.is_set() and typed_at_the_terminal():
            raise KeyboardInterrupt  # a second Ctrl-C: stop waiting, as Django would
        first_signal()
        logger.info("Ctrl-C: waiting for runserver's child to drain its shared loop.")

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        first_signal()
        _signal_children(signal.SIGTERM)

    previous: dict[int, Callable[..., Any] | int | None] = {
        signal.SIGINT: signal.signal(signal.SIGINT, on_sigint),
        signal.SIGTERM: signal.signal(signal.SIGTERM, on_sigterm),
    }
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for timer in deadline:
            timer.cancel()

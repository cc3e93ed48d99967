"""The process's hooks into the runtime: fork, settings change and exit.

* Fork: a forked child builds its own runtime (``os.register_at_fork``, and
  uWSGI's own post-fork hook: uWSGI forks its workers from C, where the
  former runs only with ``--py-call-osafterfork``).
* ``setting_changed`` for ``LOOPTOKEN``: the unstarted loop ``get_loop()``
  built is dropped.
* Exit: the shared loop is drained before Python joins non-daemon threads,
  and a second Ctrl-C at the terminal hurries it (``_signal_hooks``).

Imported once by the package, so the hooks are in place whatever is used.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import logging
import os
import threading

from django.core.signals import setting_changed

from django_looptoken import _runtime

logger = logging.getLogger("django_looptoken")

os.register_at_fork(after_in_child=_runtime.start_afresh_in_forked_child)


def _hook_uwsgi_fork() -> None:
    try:
        uwsgi = importlib.import_module("uwsgi")  # exists only inside uWSGI
    except ImportError:
        return
    previous = getattr(uwsgi, "post_fork_hook", None)

    def post_fork() -> None:
        _runtime.start_afresh_in_forked_child()
        if previous is not None:
            previous()

    setattr(uwsgi, "post_fork_hook", post_fork)  # noqa: B010 - a module of C origin


_hook_uwsgi_fork()


def _on_setting_changed(*, setting: str, **kwargs: object) -> None:
    if setting == "LOOPTOKEN":
        _runtime.runtime().forget_next_loop()


setting_changed.connect(_on_setting_changed)


# After a second Ctrl-C or SIGTERM, how long the exit waits for the loop to
# cut its work short before leaving it to die with the process.
HURRY_GRACE_SECONDS = 1.0


_exit_hook_ran = False


def _at_exit() -> None:
    global _exit_hook_ran
    if _exit_hook_ran:  # registered twice (see below); the first call did it all
        return
    _exit_hook_ran = True
    # A test runner may have closed the streams logging handlers write to
    # (pytest closes its capture files before the interpreter exits): such a
    # record is dropped, not reported as "--- Logging error ---" on stderr.
    raise_exceptions, logging.raiseExceptions = logging.raiseExceptions, False
    try:
        _runtime.runtime().exit()
    except (KeyboardInterrupt, SystemExit):
        # A second signal while draining: the user wants out now.
        logger.warning("Interrupted while draining: stopping the shared loop without waiting.")
        # A third signal leaves at once: the loop thread is a daemon.
        with contextlib.suppress(KeyboardInterrupt, SystemExit):
            _runtime.runtime().stop_now(HURRY_GRACE_SECONDS)
    except Exception:
        logger.exception("Shutting down the shared loop at exit failed.")
    finally:
        logging.raiseExceptions = raise_exceptions


# Before Python joins non-daemon threads, so that request threads still
# holding tokens can finish on a running loop (plain atexit runs too late).
threading._register_atexit(_at_exit)  # type: ignore[attr-defined]
# uWSGI ends a worker with exit(), which runs atexit hooks but not Python's
# thread shutdown; there this one drains (a second call returns at once).
atexit.register(_at_exit)

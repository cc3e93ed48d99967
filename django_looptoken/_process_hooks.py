"""The process's hooks into the runtime: fork, settings change and exit.

* Fork: a forked child makes every per-process piece afresh (the waker,
  the background executor, the role, the runtime) in one hook, run by
  ``os.register_at_fork``; uWSGI forks its workers from C, where that runs
  only with ``--py-call-osafterfork``, so its post-fork hook runs Python's
  after-fork work itself.
* ``setting_changed`` for ``LOOPTOKEN``: the unstarted loop ``get_loop()``
  built is dropped.
* Exit: the shared loop is drained before Python joins non-daemon threads,
  and a second Ctrl-C at the terminal hurries it (``_signal_hooks``).

Imported once by the package, so the hooks are in place whatever is used.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import logging
import os
import sys
import threading

from django.core.signals import setting_changed

from django_looptoken import (
    _handback,
    _process_role,
    _runtime,
    _server_deadline,
    _signal_hooks,
    _uwsgi,
    _waiting,
)
from django_looptoken.conf import looptoken_settings

logger = logging.getLogger("django_looptoken")

# The pid _after_fork_in_child last ran in: uWSGI with --py-call-osafterfork
# calls both hooks below in each worker.
_reset_in_pid = os.getpid()


def _after_fork_in_child() -> None:
    """Everything per process, made afresh in a forked child, however the
    fork happened: the forking thread's waker, the background executor's
    thread, the process's role, then the runtime (which may start the loop,
    and so uses the others)."""
    global _reset_in_pid
    if _reset_in_pid == os.getpid():
        return
    _reset_in_pid = os.getpid()
    _waiting.forget_waker_after_fork()
    _handback.background_executor.forget_after_fork()
    _process_role.forget_after_fork()
    _runtime.start_afresh_in_forked_child()


os.register_at_fork(
    after_in_parent=_process_role.forked_a_child, after_in_child=_after_fork_in_child
)


def _python_after_fork_in_child() -> None:
    """Run what ``os.fork()`` runs in a child: every at-fork hook (threading's,
    this app's, other libraries') and the interpreter's own reset."""
    if sys.implementation.name == "cpython":
        # What uWSGI's --py-call-osafterfork does. Without it, the master's
        # threads stay "alive" in the worker and its exit waits on them forever.
        ctypes.pythonapi.PyOS_AfterFork_Child()
    else:  # pragma: no cover - no other interpreter runs uWSGI's Python plugin
        _after_fork_in_child()


def _hook_uwsgi_fork() -> None:
    uwsgi = _uwsgi.uwsgi
    if uwsgi is None:
        return
    previous = getattr(uwsgi, "post_fork_hook", None)

    def post_fork() -> None:
        # uWSGI forks its workers from C: unless --py-call-osafterfork made it
        # run them already, Python's after-fork hooks have not run. Not in a
        # process that was not forked (uWSGI without a master serves in the
        # process that loaded the app): its threads are real.
        if _reset_in_pid != os.getpid():
            _python_after_fork_in_child()
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


def drain_at_exit() -> None:
    """Drain the shared loop before the process exits (once; later calls return)."""
    global _exit_hook_ran
    if _exit_hook_ran:  # registered twice (see below); the first call did it all
        return
    _exit_hook_ran = True
    # A test runner may have closed the streams logging handlers write to
    # (pytest closes its capture files before the interpreter exits): such a
    # record is dropped, not reported as "--- Logging error ---" on stderr.
    raise_exceptions, logging.raiseExceptions = logging.raiseExceptions, False
    try:
        timeout, why = _server_deadline.drain_budget(looptoken_settings.SHUTDOWN_TIMEOUT)
        if _runtime.runtime().current_run is not None:
            _signal_hooks.hold_during_the_exit_drain()
        _runtime.runtime().exit(timeout, why)
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
threading._register_atexit(drain_at_exit)  # type: ignore[attr-defined]
# uWSGI ends a worker with exit(), which runs atexit hooks but not Python's
# thread shutdown; there this one drains (a second call returns at once).
atexit.register(drain_at_exit)

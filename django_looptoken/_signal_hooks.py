"""SIGTERM and SIGINT lead to a drained exit, chained to the handlers already there.

A process stopped by a signal must run the exit hook that drains the shared
loop. Python does that for SIGINT (``KeyboardInterrupt``) and servers do it
for their own signals (gunicorn workers call ``sys.exit``), but a default
SIGTERM kills the process on the spot. So each handler found at install time
is wrapped, never replaced: a Python handler is called as before, and the
default action becomes ``SystemExit(128 + signum)`` so the interpreter exits
normally.

While the exit hook drains, only a Ctrl-C typed at the process's terminal
raises (which the hook takes as "stop waiting"): supervisors repeat SIGTERM
(and some send SIGINT), and a repeat must not lose the protected work the
drain is finishing. ``SHUTDOWN_TIMEOUT`` still bounds the drain.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import time
from types import FrameType
from typing import Any

from django_looptoken import _greenlets
from django_looptoken._runtime import runtime
from django_looptoken._uvicorn import forget_captured_signal

logger = logging.getLogger("django_looptoken")

HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT)

_previous: dict[int, Any] = {}
_stop_signal_at: float | None = None
_exit_drain_begun = False


def handler_chained_to(signum: int) -> Any:
    """The handler a ``signum`` runs: the one the app wrapped, or, if the app
    did not wrap it, the one installed now."""
    current = signal.getsignal(signum)
    return _previous.get(signum, current) if current is _on_signal else current


def stop_signal_at() -> float | None:
    """When (``time.monotonic()``) the first SIGTERM or SIGINT arrived, if one did."""
    return _stop_signal_at


def install() -> None:
    """Wrap this process's SIGTERM and SIGINT handlers; only from the main thread.

    Ignored signals stay ignored, and handlers set from C (``None``) are left
    alone, since they cannot be chained from Python.
    """
    for signum in HANDLED_SIGNALS:
        current = signal.getsignal(signum)
        if current is _on_signal or current is None or current == signal.SIG_IGN:
            continue
        _previous[signum] = current  # first: the signal may come right after
        try:
            signal.signal(signum, _on_signal)
        except ValueError:
            # Not the main OS thread, the only one that may set handlers (a
            # test of threading.main_thread() would miss it under eventlet,
            # whose main thread is another object).
            del _previous[signum]
            return


def hold_during_the_exit_drain() -> None:
    """At the start of the exit drain: a signal from now on must not cut it
    (see the module docstring), even where a server put back the default
    handlers when it stopped serving (uvicorn does) after the app wrapped
    its own: the wrappers go back in place."""
    global _exit_drain_begun
    _exit_drain_begun = True
    install()


def _on_signal(signum: int, frame: FrameType | None) -> None:
    global _stop_signal_at
    if _greenlets.off_eventlets_main_greenlet():
        # Under eventlet a handler runs in whichever green thread runs. Not
        # in the loop's, where its exit would end the task running (maybe
        # protected work), nor in a helper's, which would swallow it: in the
        # hub, which raises it in the main greenlet.
        _greenlets.call_in_hub(_on_signal, signum, frame)
        return
    if _stop_signal_at is None:
        _stop_signal_at = time.monotonic()
    previous = _previous.get(signum, signal.SIG_DFL)
    if _exit_drain_begun or runtime().exiting:
        # The exit hook is draining: interrupt its wait only for someone at the
        # terminal. The handler chained to still runs, but its way out (Python's
        # KeyboardInterrupt, a server's sys.exit) is the exit already under way.
        if signum == signal.SIGINT and typed_at_the_terminal():
            if callable(previous):
                previous(signum, frame)
            raise SystemExit(128 + signum)
        if callable(previous):
            with contextlib.suppress(KeyboardInterrupt, SystemExit):
                previous(signum, frame)
        _say_still_draining(signum)
        return
    if callable(previous):
        previous(signum, frame)
        forget_captured_signal(previous, signum)
        return
    logger.info("%s: exiting after the shared loop drains.", signal.Signals(signum).name)
    sys.exit(128 + signum)


def typed_at_the_terminal() -> bool:
    """Whether a SIGINT now is a Ctrl-C typed by someone: this process is in
    the foreground process group of its controlling terminal."""
    try:
        tty = os.open("/dev/tty", os.O_RDONLY | os.O_NOCTTY)
    except OSError:
        return False  # no controlling terminal: a supervisor or a script sent it
    try:
        return os.tcgetpgrp(tty) == os.getpgrp()
    except OSError:
        return False
    finally:
        os.close(tty)


_told: set[int] = set()


def _say_still_draining(signum: int) -> None:
    if signum in _told:
        return
    _told.add(signum)
    logger.warning(
        "%s again while draining: the drain goes on (it ends when the protected "
        "work is done, or at SHUTDOWN_TIMEOUT). To stop waiting, press Ctrl-C in "
        "the terminal, or send SIGKILL.",
        signal.Signals(signum).name,
    )

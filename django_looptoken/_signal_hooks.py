"""SIGTERM and SIGINT lead to a drained exit, chained to the handlers already there.

A process stopped by a signal must run the exit hook that drains the shared
loop. Python does that for SIGINT (``KeyboardInterrupt``) and servers do it
for their own signals (gunicorn workers call ``sys.exit``), but a default
SIGTERM kills the process on the spot. So each handler found at install time
is wrapped, never replaced: a Python handler is called as before, and the
default action becomes ``SystemExit(128 + signum)`` so the interpreter exits
normally. A signal that arrives while the exit hook drains also raises, which
the hook takes as "stop waiting" (a second Ctrl-C).
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from types import FrameType
from typing import Any

from django_looptoken._runtime import runtime
from django_looptoken._uvicorn import forget_captured_signal

logger = logging.getLogger("django_looptoken")

HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT)

_previous: dict[int, Any] = {}


def install() -> None:
    """Wrap this process's SIGTERM and SIGINT handlers; only from the main thread.

    Ignored signals stay ignored, and handlers set from C (``None``) are left
    alone, since they cannot be chained from Python.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in HANDLED_SIGNALS:
        current = signal.getsignal(signum)
        if current is _on_signal or current is None or current == signal.SIG_IGN:
            continue
        _previous[signum] = current
        signal.signal(signum, _on_signal)


def _on_signal(signum: int, frame: FrameType | None) -> None:
    previous = _previous.get(signum, signal.SIG_DFL)
    if runtime().exiting:
        # The exit hook is draining: chain, then interrupt its wait.
        if callable(previous):
            previous(signum, frame)
        raise SystemExit(128 + signum)
    if callable(previous):
        previous(signum, frame)
        forget_captured_signal(previous, signum)
        return
    logger.info("%s: exiting after the shared loop drains.", signal.Signals(signum).name)
    sys.exit(128 + signum)

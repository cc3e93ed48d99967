"""Blocking waits that a signal handler can always interrupt in time.

CPython runs a Python signal handler only when a blocking wait returns. A
signal that lands after the interpreter's last check but before the thread
sleeps in the kernel does not end the sleep, so a plain wait would hold a
Ctrl-C until whatever it waits for happens. Waiting in slices bounds that
delay; the slices cost nothing while the wait is short.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

# How late a signal may be noticed by a thread blocked in one of these waits.
SIGNAL_CHECK_SECONDS = 0.05


def acquire(lock: threading.Lock) -> None:
    """Block until ``lock`` is acquired."""
    while not lock.acquire(True, SIGNAL_CHECK_SECONDS):
        pass


def wait_event(event: threading.Event, timeout: float) -> bool:
    """``event.wait(timeout)``, in slices."""
    deadline = time.monotonic() + timeout
    while not event.wait(min(max(deadline - time.monotonic(), 0), SIGNAL_CHECK_SECONDS)):
        if time.monotonic() >= deadline:
            return False
    return True


def wait_for(
    condition: threading.Condition, predicate: Callable[[], bool], timeout: float
) -> bool:
    """``condition.wait_for(predicate, timeout)``, in slices; the caller holds ``condition``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        condition.wait(min(remaining, SIGNAL_CHECK_SECONDS))
    return True

"""Blocking waits that a signal handler can always interrupt in time.

CPython runs a Python signal handler only when a blocking wait returns. A
signal that lands after the interpreter's last check but before the thread
sleeps in the kernel does not end the sleep, so a plain wait would hold a
Ctrl-C until whatever it waits for happens. Waiting in slices bounds that
delay; the slices cost nothing while the wait is short. Only the main thread
runs signal handlers, so only its waits on a waker are sliced: other
threads sleep until they are woken (see ``signal_check_slice``).
"""

from __future__ import annotations

import contextlib
import os
import select
import sys
import threading
import time
from collections.abc import Callable

# How late a signal may be noticed by a thread blocked in one of these waits.
SIGNAL_CHECK_SECONDS = 0.05


def signal_check_slice() -> float:
    """How long one slice of a waker's wait may be in the calling thread:
    ``SIGNAL_CHECK_SECONDS`` in the main thread, the only one where Python
    runs signal handlers; elsewhere -1, one wait to the end. A thousand
    request threads waking every 50 ms only to check would be 20,000 GIL
    acquisitions a second, taken from the loop thread."""
    return SIGNAL_CHECK_SECONDS if threading.current_thread() is threading.main_thread() else -1


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


# -- waking a thread that waits for the loop ---------------------------------------
#
# A waiter checks what it waits for before each wait(); wake() comes after the
# waker's owner changed that state. Wake-ups may be merged or arrive late (a
# thread's descriptor waker outlives its calls: the loop may still wake it for
# a call its thread left on Ctrl-C), so wait() may return without news: the
# waiter checks again.


class LockWaker:
    """Wakes its waiter with a lock; the loop thread keeps the GIL while waking.

    The woken thread wakes while the loop thread still holds the GIL and
    sleeps again waiting for it, but the loop thread goes on with what else it
    has to do: right when other callers wait on it too.
    """

    __slots__ = ("_lock", "_pending", "_slice")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()
        self._pending = False
        self._slice = signal_check_slice()

    def wake(self) -> None:
        """Wake the waiter, or make its next ``wait()`` return at once."""
        if not self._pending:
            self._pending = True
            self._lock.release()

    def wait(self) -> None:
        """Block until woken since the last ``wait()``."""
        while not self._lock.acquire(True, self._slice):
            pass
        self._pending = False


class DescriptorWaker:
    """Wakes its waiter with a write made with the GIL released: one thread's.

    The woken thread finds the GIL free and runs at once, which saves two
    context switches per wake-up over a lock; the loop thread waits for the
    GIL afterwards, which is free when nothing else waits on the loop.
    One per thread (``thread_waker()``), kept for the thread's life.
    """

    __slots__ = ("_poll", "_read_fd", "_slice_ms", "_write_fd")

    def __init__(self) -> None:
        if USE_EVENTFD:
            self._read_fd = self._write_fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        else:
            self._read_fd, self._write_fd = os.pipe()  # close-on-exec by default
            os.set_blocking(self._read_fd, False)
            os.set_blocking(self._write_fd, False)
        self._poll = select.poll()
        self._poll.register(self._read_fd, select.POLLIN)
        # The thread that makes its waker is the one that waits on it.
        slice_seconds = signal_check_slice()
        self._slice_ms = -1 if slice_seconds < 0 else round(slice_seconds * 1000)

    def wake(self) -> None:
        """Wake the waiter, or make its next ``wait()`` return at once."""
        with contextlib.suppress(BlockingIOError):  # a full pipe: wake-ups are pending
            os.write(self._write_fd, _ONE)

    def wait(self) -> None:
        """Block until woken since the last ``wait()``."""
        while not self._poll.poll(self._slice_ms):
            pass
        # Only this thread reads, so a readable descriptor has something to
        # read; if not, there is no wake-up to take and the waiter checks again.
        with contextlib.suppress(BlockingIOError):
            os.read(self._read_fd, 4096)

    def descriptors(self) -> tuple[int, ...]:
        """The file descriptors this waker holds open."""
        return tuple({self._read_fd, self._write_fd})

    def close(self) -> None:
        """Close the descriptors (idempotent); the waker is of no use after."""
        # getattr: also called (as __del__) when __init__ failed half-way.
        for fd in {getattr(self, "_read_fd", -1), getattr(self, "_write_fd", -1)}:
            if fd >= 0:
                os.close(fd)
        self._read_fd = self._write_fd = -1

    __del__ = close


# An eventfd is one descriptor and a counter; elsewhere a pipe does the job.
USE_EVENTFD = hasattr(os, "eventfd")
# What an eventfd takes: an 8-byte count. A pipe takes any bytes.
_ONE = (1).to_bytes(8, sys.byteorder)
_local = threading.local()


def thread_waker() -> DescriptorWaker:
    """This thread's descriptor waker, made on first use."""
    try:
        return _local.waker  # type: ignore[no-any-return]
    except AttributeError:
        waker = _local.waker = DescriptorWaker()
        return waker


def forget_waker_after_fork() -> None:
    """In a forked child: the forking thread's waker shares its descriptors
    with the parent's thread; this thread makes its own on next use."""
    # Closed here, not when the last reference goes: a call the fork copied
    # may still hold the old waker.
    inherited = _local.__dict__.pop("waker", None)
    if inherited is not None:
        inherited.close()

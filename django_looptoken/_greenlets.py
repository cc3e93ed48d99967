"""Running the loop in a process whose threads are greenlets.

After gevent's ``monkey.patch_all()`` a ``threading.Thread`` is a greenlet on
the one OS thread: a loop started in one would never yield to the hub, and
every request greenlet would look like the loop's thread. So under gevent
the loop, and every thread the app starts for it, is a native thread made
with the functions gevent saved before patching, and a caller greenlet
waits on its hub, woken through the hub's async watcher (``GreenletWaker``).

eventlet's locks cannot be woken from another OS thread, and code on the
loop's thread takes them (every lock made after patching is eventlet's, a
logging handler's too), so there the loop is itself a green thread: an
asyncio loop waiting in eventlet's green ``select`` (``HubSelector``), which
yields to the hub. Everything then shares one OS thread and eventlet's own
primitives: the "native" threads, locks and selector of this module are
eventlet's, as patching left them, which is why eventlet must patch before
this module is imported.
"""

from __future__ import annotations

import _thread
import asyncio
import functools
import importlib
import posix
import selectors
import sys
import threading
from collections.abc import Callable
from typing import Any


def monkey_patched() -> str | None:
    """``"gevent"`` or ``"eventlet"`` if it patched ``threading`` here, else None."""
    gevent_monkey = sys.modules.get("gevent.monkey")
    if gevent_monkey is not None and gevent_monkey.is_module_patched("threading"):
        return "gevent"
    eventlet_patcher = sys.modules.get("eventlet.patcher")
    if eventlet_patcher is not None and eventlet_patcher.is_monkey_patched("thread"):
        return "eventlet"
    return None


def may_patch_later() -> bool:
    """Whether gevent or eventlet is imported, so this process (a server's
    worker just forked, say) may be monkey-patched before it serves."""
    return "gevent" in sys.modules or "eventlet" in sys.modules


def _original(module: str, name: str) -> Any:
    # What gevent replaced, as it saved it; unpatched, the module's own
    # attribute. Taken once, at import: a patch made later does not change
    # what was taken before it.
    gevent_monkey = sys.modules.get("gevent.monkey")
    if gevent_monkey is not None:
        return gevent_monkey.get_original(module, name)
    return getattr(importlib.import_module(module), name)


def patched_too_late() -> bool:
    """Whether eventlet patched this process after this module took its
    primitives (so they are the OS's, not eventlet's)."""
    return monkey_patched() == "eventlet" and _start_new_thread is not _thread.start_new_thread


_start_new_thread = _original("_thread", "start_new_thread")
_allocate_lock = _original("_thread", "allocate_lock")
_default_selector: type[selectors.BaseSelector] = _original("selectors", "DefaultSelector")

# The calling OS thread's identifier (as ``sys._current_frames()`` keys it),
# not its greenlet's: the function itself, since await_ asks it on every call.
native_thread_id: Callable[[], int] = _original("_thread", "get_ident")


# os.read and os.write as they were: eventlet's wait in its hub where a
# non-blocking descriptor has nothing to give (or take), instead of raising.
read_nowait: Callable[[int, int], bytes] = posix.read
write_nowait: Callable[[int, bytes], int] = posix.write


def native_selector_class() -> type[selectors.BaseSelector]:
    """``selectors.DefaultSelector`` as it was before gevent's patching; under
    eventlet's, a selector that waits in eventlet's green ``select``."""
    if monkey_patched() == "eventlet":
        return hub_selector_class()
    return _default_selector


def waiting_selector_class() -> type[selectors.BaseSelector]:
    """The selector for a wait of the calling greenlet or thread: under
    eventlet one that waits in its hub (even if ``selectors`` was imported
    before the patching), else ``selectors.DefaultSelector`` (gevent's own
    under gevent)."""
    if monkey_patched() == "eventlet":
        return hub_selector_class()
    return selectors.DefaultSelector


@functools.cache
def hub_selector_class() -> type[selectors.SelectSelector]:
    """A selector whose waits yield to eventlet's hub (eventlet's ``select``)."""
    from eventlet.green import select as green_select

    class HubSelector(selectors.SelectSelector):
        # The one call SelectSelector makes to select.select, whichever
        # select it found when it was imported.
        _select = staticmethod(green_select.select)

    return HubSelector


@functools.cache
def hub_loop_selector_class() -> type[selectors.SelectSelector]:
    """The loop's selector under eventlet: a ``hub_selector_class()`` that,
    while it waits, leaves no loop running in the OS thread, so the request
    greenlets the hub runs meanwhile are not taken for the loop's (asyncio's
    running loop is per OS thread: Django would refuse their ORM calls)."""

    class HubLoopSelector(hub_selector_class()):  # type: ignore[misc]
        def select(self, timeout: float | None = None) -> Any:
            loop = asyncio.events._get_running_loop()
            asyncio.events._set_running_loop(None)
            try:
                return super().select(timeout)
            finally:
                asyncio.events._set_running_loop(loop)

    return HubLoopSelector


def start_native_thread(target: Callable[[], object]) -> None:
    """Run ``target`` in a new OS thread, even where threads are greenlets."""
    _start_new_thread(target, ())


def native_lock() -> _thread.LockType:
    """A lock of the OS, which blocks the whole thread: for critical sections
    of a few instructions shared with native threads."""
    return _allocate_lock()  # type: ignore[no-any-return]


def start_thread(target: Callable[[], object], name: str) -> None:
    """Run ``target`` in a new daemon OS thread named ``name``; under gevent
    a native one (it has no ``threading.Thread``, so it is not joined)."""
    if monkey_patched() == "gevent":
        start_native_thread(target)
    else:
        threading.Thread(target=target, name=name, daemon=True).start()


class NativeEvent:
    """``threading.Event`` on the OS's locks, for waits in the app's own
    threads: under gevent a patched Event cannot wake one native thread
    from another."""

    def __init__(self) -> None:
        self._guard = native_lock()
        self._flag = native_lock()  # held while the event is clear
        self._flag.acquire()
        self._is_set = False

    def is_set(self) -> bool:
        """Whether the event is set."""
        return self._is_set

    def set(self) -> None:
        """Set the event, waking its waiters."""
        with self._guard:
            if not self._is_set:
                self._is_set = True
                self._flag.release()

    def clear(self) -> None:
        """Clear the event."""
        with self._guard:
            if self._is_set:
                self._is_set = False
                self._flag.acquire()

    def wait(self, timeout: float) -> bool:
        """Block until the event is set or ``timeout`` passes; whether it is set."""
        if self._flag.acquire(True, timeout):
            self._flag.release()
            return True
        return False


class GreenletWaker:
    """Wakes a waiting greenlet through its hub's async watcher, which gevent
    documents as the way to wake a hub from another thread; the greenlet's
    wait yields to the hub, so the worker's other greenlets run meanwhile.
    One per call, made in the waiting greenlet."""

    __slots__ = ("_hub", "_watcher", "_woken")

    def __init__(self) -> None:
        from gevent import get_hub

        self._hub = get_hub()
        self._watcher = self._hub.loop.async_()
        self._woken = False

    def wake(self) -> None:
        """Wake the waiter, or make its next ``wait()`` return at once."""
        self._woken = True
        self._watcher.send()

    def wait(self) -> None:
        """Yield to the hub until woken since the last ``wait()``."""
        from gevent.hub import Waiter

        waiter = Waiter(self._hub)
        # Started before the flag is read: a send() to a stopped watcher is
        # lost, so a wake() between the two would be too.
        self._watcher.start(waiter.switch, None)
        try:
            if not self._woken:
                waiter.get()
        finally:
            self._watcher.stop()
        self._woken = False


def off_eventlets_main_greenlet() -> bool:
    """Whether this runs under eventlet in a green thread other than the main
    greenlet and the hub: there, what a signal handler raises would end that
    green thread alone (the loop's, one of the app's helpers, whose
    ``threading`` swallows ``SystemExit``), not the process."""
    if monkey_patched() != "eventlet":
        return False
    from eventlet import greenthread, hubs

    current = greenthread.getcurrent()
    return current.parent is not None and current is not hubs.get_hub().greenlet


def current_greenlet() -> Any:
    """The calling green thread, under eventlet."""
    from eventlet import greenthread

    return greenthread.getcurrent()


def call_in_hub(function: Callable[..., object], *args: object) -> None:
    """Run ``function(*args)`` in eventlet's hub, soon: what it raises ends
    the hub's run and is raised in the main greenlet."""
    from eventlet import hubs

    hubs.get_hub().schedule_call_global(0, function, *args)

"""Running the loop in a process whose threads are greenlets.

After gevent's ``monkey.patch_all()`` a ``threading.Thread`` is a greenlet on
the one OS thread: a loop started in one would never yield to the hub, and
every request greenlet would look like the loop's thread. So under gevent
the loop, and every thread the app starts for it, is a native thread made
with the functions gevent saved before patching, and a caller greenlet
waits on its hub, woken through the hub's async watcher (``GreenletWaker``).
eventlet's primitives cannot be woken from another thread: there the app
refuses to start a loop (``looptoken.E012``) and keeps serving the pages
that do not use it.
"""

from __future__ import annotations

import _thread
import importlib
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


_start_new_thread = _original("_thread", "start_new_thread")
_allocate_lock = _original("_thread", "allocate_lock")
_default_selector: type[selectors.BaseSelector] = _original("selectors", "DefaultSelector")

# The calling OS thread's identifier (as ``sys._current_frames()`` keys it),
# not its greenlet's: the function itself, since await_ asks it on every call.
native_thread_id: Callable[[], int] = _original("_thread", "get_ident")


def native_selector_class() -> type[selectors.BaseSelector]:
    """``selectors.DefaultSelector`` as it was before any patching."""
    return _default_selector


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

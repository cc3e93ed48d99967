"""Why the app refuses eventlet (``looptoken.E012``), shown with eventlet
alone: a lock made after eventlet's patching (as every lock of a project's
logging handlers and of Django is), held by a greenlet, never wakes a native
thread that waits for it. Code running on the loop's native thread takes
such locks (logging does), so the loop could hang for good.

``python -m tests.integration.eventlet_locks`` prints one JSON line:
whether the native thread was seen waiting, and whether it got the lock.
"""

import eventlet

eventlet.monkey_patch()

import json  # noqa: E402
import threading  # noqa: E402

from eventlet import patcher  # noqa: E402

native_thread = patcher.original("_thread")
native_time = patcher.original("time")

WAIT_SECONDS = 5.0  # for the native thread to start waiting
ACQUIRE_SECONDS = 1.0  # for it to get the lock, which it never does


def main() -> None:
    """Hold a lock in a greenlet while a native thread waits for it, release it."""
    lock = threading.Lock()  # eventlet's, as patching makes every lock
    got_it = native_thread.allocate_lock()
    got_it.acquire()

    def native() -> None:
        with lock:
            got_it.release()

    lock.acquire()
    native_thread.start_new_thread(native, ())
    deadline = native_time.monotonic() + WAIT_SECONDS
    while lock.balance != -1 and native_time.monotonic() < deadline:
        native_time.sleep(0.001)  # the native thread has yet to wait for the lock
    waiting = lock.balance == -1
    lock.release()  # eventlet schedules the waiter's wake-up on this thread's hub
    eventlet.sleep(0)  # the hub runs it: it cannot switch to the other thread
    acquired = got_it.acquire(True, ACQUIRE_SECONDS)
    print(json.dumps({"waiting": waiting, "acquired": acquired}), flush=True)


if __name__ == "__main__":
    main()

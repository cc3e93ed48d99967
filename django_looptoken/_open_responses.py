"""Responses served but not closed yet, and the loop tokens they hold.

``LoopTokenMiddleware`` releases a request's token when its response is
closed. Whatever receives the response must close it (WSGI servers and
Django's test client do); one that never does (a client in a test suite, a
``StreamingHttpResponse`` kept but never read) would hold the token until
the garbage collector ran, and hold up the exit drain for the whole
``SHUTDOWN_TIMEOUT``. So each thread's last open response is noted here, in
a dict keyed by thread (set and popped once per request, atomic under the
GIL, no lock), and its token is released, with one warning naming the
request, when:

* the same thread starts its next request: a thread serves one request at
  a time, so its previous response is done with;
* the thread ends: under ASGI Django serves each request's sync code in a
  thread of its own, and the response of a request whose client went away
  is never sent, so never closed;
* the process begins to exit: for responses whose thread has ended, or is
  the thread that exits (a server thread still sending a body is left to
  finish, and the drain waits for it).
"""

from __future__ import annotations

import atexit
import logging
import threading

from django_looptoken.tokens import LoopToken

logger = logging.getLogger("django_looptoken")


class OpenResponse:
    """One response served with ``token`` and not closed yet."""

    __slots__ = ("method", "path", "thread", "token")

    def __init__(self, token: LoopToken, method: str | None, path: str) -> None:
        self.token = token
        self.method = method
        self.path = path
        self.thread = threading.current_thread()

    def close(self) -> None:
        """The response was closed: release the token (``response.close()`` calls this)."""
        if _open.get(self.thread.ident) is self:
            _open.pop(self.thread.ident, None)
        self.token.release()

    def give_up(self, when: str) -> None:
        """Nobody closed the response: release its token, and say so."""
        if not self.token._held:  # released already (closed from another thread)
            return
        self.token.release()
        logger.warning(
            "The response to %s was never closed; its loop token is released now, %s. "
            "Whatever received it (the WSGI server, the test client, a client such as "
            "DRF's RequestsClient, code that kept it) must call response.close().",
            f"{self.method} {self.path}",
            when,
        )


_open: dict[int | None, OpenResponse] = {}


class _ThreadEnd:
    """Kept in a thread-local: dropped, so finalized, when its thread ends."""

    __slots__ = ("ident",)

    def __init__(self) -> None:
        self.ident = threading.get_ident()

    def __del__(self) -> None:
        if _open is None:
            return  # the interpreter is tearing this module down: nothing to release
        response = _open.pop(self.ident, None)
        if response is not None:
            response.give_up("as its thread ended")


_thread_end = threading.local()


def served(token: LoopToken, method: str | None, path: str) -> OpenResponse:
    """Note this thread's response, open until its ``close()``."""
    response = OpenResponse(token, method, path)
    _open[response.thread.ident] = response
    if "end" not in _thread_end.__dict__:  # once per thread
        _thread_end.end = _ThreadEnd()
    return response


def release_previous() -> None:
    """At the start of a request: the thread's previous response is done with."""
    previous = _open.pop(threading.get_ident(), None)
    if previous is not None:
        previous.give_up("as its thread starts another request")


def release_at_exit() -> None:
    """At exit, before the drain: release what no live thread can still close."""
    exiting = threading.current_thread()
    for response in list(_open.values()):
        if response.thread is exiting or not response.thread.is_alive():
            _open.pop(response.thread.ident, None)
            response.give_up("as the process exits")


# Python calls these in reverse order of registration: this one, registered
# after the runtime's drain (the middleware imports the runtime first), runs
# before it, so the drain does not wait for these tokens.
threading._register_atexit(release_at_exit)  # type: ignore[attr-defined]
atexit.register(release_at_exit)  # uWSGI runs atexit hooks only (as for the drain)

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
import itertools
import logging
import threading
from threading import get_ident

from django_looptoken._async_views import restore_routing
from django_looptoken.tokens import LoopToken

logger = logging.getLogger("django_looptoken")


class OpenResponse:
    """One response served with ``token`` and not closed yet, by the thread
    ``ident``; ``routed``: that request pointed ``async_to_sync`` at the shared
    loop (``ASYNC_VIEWS``), which its close puts back."""

    __slots__ = ("ident", "method", "path", "routed", "thread_life", "token")

    def __init__(
        self,
        token: LoopToken,
        method: str | None,
        path: str,
        ident: int,
        routed: bool,
        thread_life: int,
    ) -> None:
        self.token = token
        self.method = method
        self.path = path
        self.ident = ident
        self.routed = routed
        # Which life of the ident: eventlet's is the id() of a greenlet, which
        # the next greenlet often reuses.
        self.thread_life = thread_life

    def close(self) -> None:
        """The response was closed (``response.close()`` calls this): release
        the token, and put back the routing of the thread that closes it."""
        if _open.get(self.ident) is self:
            del _open[self.ident]
        self.token.release()
        if self.routed:
            restore_routing()

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


# One entry per thread: its latest response, until closed or given up.
_open: dict[int, OpenResponse] = {}


class _ThreadEnd:
    """Kept in a thread-local: dropped, so finalized, when its thread ends
    (under eventlet, maybe only once the next green thread uses the local)."""

    __slots__ = ("ident", "life")

    def __init__(self) -> None:
        self.ident = threading.get_ident()
        self.life = next(_lives)

    def __del__(self) -> None:
        if _open is None:
            return  # the interpreter is tearing this module down: nothing to release
        response = _open.get(self.ident)
        # Not a response of a later thread with the same ident.
        if response is not None and response.thread_life == self.life:
            del _open[self.ident]
            response.give_up("as its thread ended")


_lives = itertools.count()


_thread_end = threading.local()


def previous_of_this_thread() -> int:
    """At a request's start: give up the thread's previous response if nobody
    closed it; return the thread's ident (for ``served``)."""
    ident = get_ident()
    previous = _open.pop(ident, None)
    if previous is not None:
        previous.give_up("as its thread starts another request")
    return ident


def served(
    token: LoopToken, method: str | None, path: str, ident: int, routed: bool
) -> OpenResponse:
    """Note the thread's response, open until its ``close()``; if the thread
    ends first (ASGI gives each request's sync code a thread of its own), the
    token goes with it."""
    end = _thread_end.__dict__.get("end")
    if end is None:  # once per thread
        end = _thread_end.end = _ThreadEnd()
    response = _open[ident] = OpenResponse(token, method, path, ident, routed, end.life)
    return response


def release_at_exit() -> None:
    """At exit, before the drain: release what no live thread can still close."""
    exiting = get_ident()
    live = {thread.ident for thread in threading.enumerate()}
    for ident, response in list(_open.items()):
        if ident == exiting or ident not in live:
            _open.pop(ident, None)
            response.give_up("as the process exits")


# Python calls these in reverse order of registration: this one, registered
# after the runtime's drain (the middleware imports the runtime first), runs
# before it, so the drain does not wait for these tokens.
threading._register_atexit(release_at_exit)  # type: ignore[attr-defined]
atexit.register(release_at_exit)  # uWSGI runs atexit hooks only (as for the drain)

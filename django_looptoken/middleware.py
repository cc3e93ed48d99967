"""``LoopTokenMiddleware``: a loop token for each request, until its response closes.

Shutdown drains tokens, so a request that holds one finishes on a running
loop. The token is released when the WSGI server closes the response: for a
``StreamingHttpResponse`` that is after the stream is exhausted or closed,
not when the view returns. A response nobody closes gives its token up when
its thread starts its next request, or at exit (``_open_responses``).
Under WSGI, a ``StreamingHttpResponse`` over an async iterator is sent
chunk by chunk through ``iterate()`` instead of being collected whole first
(``_streaming_response``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.apps import apps
from django.core.handlers.wsgi import WSGIRequest
from django.http import HttpRequest
from django.http.response import HttpResponseBase

from django_looptoken._async_views import follow_shared_loop, restore_routing
from django_looptoken._open_responses import previous_of_this_thread, served
from django_looptoken._streaming_response import is_async_stream, stream_chunk_by_chunk
from django_looptoken._tasks import request_label
from django_looptoken.conf import looptoken_settings
from django_looptoken.tokens import start_loop

logger = logging.getLogger("django_looptoken")


class LoopTokenMiddleware:
    """Holds ``request.looptoken`` from the request's start to its response's close."""

    sync_capable = True
    async_capable = False

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response
        if not apps.is_installed("django_looptoken"):
            # Servers run no checks: say it where the middleware loads (and
            # register the checks, so a check in this process reports E010).
            from django_looptoken import checks  # noqa: F401

            logger.error(
                "looptoken.E010: LoopTokenMiddleware is in MIDDLEWARE but django_looptoken "
                'is not in INSTALLED_APPS. Fix: Add "django_looptoken" to INSTALLED_APPS.'
            )

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        """Take a token, run the view, release the token when the response closes."""
        if looptoken_settings.invalid_text() is not None:
            # Invalid LOOPTOKEN (logged at startup): no token, no routing, so
            # pages that do not use the loop are served as usual.
            return self.get_response(request)
        ident = previous_of_this_thread()  # its last response, if nobody closed it
        token = start_loop()
        request.looptoken = token  # type: ignore[attr-defined]
        wsgi = isinstance(request, WSGIRequest)
        if wsgi:
            # The loop may have started just now (AUTOSTART off), after
            # request_started: point async_to_sync at it here too. Never
            # under ASGI, where async_to_sync belongs to the server's loop.
            follow_shared_loop()
        # Tasks made while the view runs are listed with the request's path.
        label = request_label.set(f"{request.method} {request.path}")
        try:
            response = self.get_response(request)
        except BaseException:
            token.release()
            if wsgi:
                restore_routing()
            raise
        finally:
            request_label.reset(label)
        if wsgi and response.streaming and is_async_stream(response):
            stream_chunk_by_chunk(response, request)  # type: ignore[arg-type]
        # Django calls each of these from response.close(), which the WSGI
        # server (and the test client) calls once the body has been sent,
        # in the thread that served the request.
        opened = served(token, request.method, request.path, ident, routed=wsgi)
        response._resource_closers.append(opened.close)  # type: ignore[attr-defined]
        return response

"""``ASYNC_VIEWS``: Django's own async views under WSGI run on the shared loop.

Under a WSGI handler Django runs async views and async-only middleware
through asgiref's ``async_to_sync``. When the calling thread has a
``main_event_loop`` noted in ``SyncToAsync.threadlocal`` (as a thread started
by ``sync_to_async`` does), asgiref runs the coroutine on that loop instead of
a new one, with its own thread-sensitive hand-back intact. At the start of
each WSGI request this module notes the shared loop there. That is asgiref
internals: a probe checks once per process that it still works, and if not,
Django's normal behaviour stays (and ``manage.py check`` says so, W003).
Under an ASGI handler nothing changes.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import threading
from typing import Any

from asgiref.sync import AsyncToSync, SyncToAsync, async_to_sync
from django.core.signals import request_started

from django_looptoken._runtime import RUNNING, runtime
from django_looptoken.conf import looptoken_settings
from django_looptoken.tokens import start_loop

logger = logging.getLogger("django_looptoken")


def route_to_shared_loop() -> None:
    """In this (request) thread, have ``async_to_sync`` use the running shared loop."""
    rt = runtime()
    run = rt.current_run
    if run is None or rt.state is not RUNNING:
        # The loop this thread noted for an earlier request may be stopping
        # now: a task asgiref put there could be cancelled, or never run.
        stop_routing()
        return
    if is_routed_to(run.loop) or not hook_works():
        return
    SyncToAsync.threadlocal.main_event_loop = run.loop
    SyncToAsync.threadlocal.main_event_loop_pid = os.getpid()


def is_routed_to(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether this thread's ``async_to_sync`` calls already go to ``loop``."""
    return getattr(SyncToAsync.threadlocal, "main_event_loop", None) is loop


def stop_routing() -> None:
    """Undo ``route_to_shared_loop`` in this thread (ASYNC_VIEWS turned off, or
    the shared loop not running).

    Only a shared loop, or a closed loop, is forgotten: a loop asgiref noted
    itself for a running ``sync_to_async`` call stays.
    """
    noted = getattr(SyncToAsync.threadlocal, "main_event_loop", None)
    if noted is None:
        return
    run = runtime().current_run
    if (run is not None and noted is run.loop) or noted.is_closed():
        del SyncToAsync.threadlocal.main_event_loop


@functools.cache
def hook_works() -> bool:
    """Whether asgiref's ``async_to_sync`` runs on a loop noted in its threadlocal."""
    with start_loop():
        shared = runtime().current_run
        assert shared is not None
        seen: list[Any] = []

        def probe() -> None:
            try:
                SyncToAsync.threadlocal.main_event_loop = shared.loop
                SyncToAsync.threadlocal.main_event_loop_pid = os.getpid()
                seen.append(async_to_sync(_running_loop)())
            except Exception as exc:  # any failure means: not usable
                seen.append(exc)

        thread = threading.Thread(target=probe, name="looptoken-probe")
        thread.start()
        thread.join(10)
    works = seen == [shared.loop] and hasattr(AsyncToSync, "executors")
    if not works:
        logger.warning(
            "ASYNC_VIEWS cannot take effect with this asgiref version (%s); Django's "
            "async views run on a new event loop per request, as without this app.",
            seen[0] if seen else "the probe did not finish",
        )
    return works


async def _running_loop() -> asyncio.AbstractEventLoop:
    return asyncio.get_running_loop()


def _on_request_started(sender: object, environ: object = None, **kwargs: object) -> None:
    if environ is None:
        return  # an ASGI request (sent with scope=): nothing changes
    if looptoken_settings.ASYNC_VIEWS:
        route_to_shared_loop()
    else:
        stop_routing()


request_started.connect(_on_request_started, dispatch_uid="django_looptoken.async_views")

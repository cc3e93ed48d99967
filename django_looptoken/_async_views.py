"""``ASYNC_VIEWS``: Django's own async views under WSGI run on the shared loop.

Under a WSGI handler Django runs async views and async-only middleware
through asgiref's ``async_to_sync``. When the calling thread has a
``main_event_loop`` noted in ``SyncToAsync.threadlocal`` (as a thread started
by ``sync_to_async`` does), asgiref runs the coroutine on that loop instead of
a new one, with its own thread-sensitive hand-back intact. At the start of
each WSGI request this module notes the shared loop there: in
``LoopTokenMiddleware`` when no async-only middleware runs before it, else in
a ``request_started`` receiver; when the response closes (the middleware's
closer, or a ``request_finished`` receiver) it puts back what the thread
had, so the routing never outlives the request. That is asgiref internals: a probe checks
once per process, at the first request on a running loop, that it still
works, and if not, Django's normal behaviour stays (``manage.py check``
judges the same from asgiref's code without starting a loop, W003). Under
an ASGI handler nothing changes.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import threading
from collections.abc import Callable
from typing import Any

from asgiref.sync import AsyncToSync, SyncToAsync, async_to_sync
from django.conf import settings
from django.core.signals import request_finished, request_started, setting_changed
from django.utils.module_loading import import_string

from django_looptoken._runtime import runtime
from django_looptoken.conf import looptoken_settings
from django_looptoken.tokens import start_loop

logger = logging.getLogger("django_looptoken")


class _Routing(threading.local):
    """What this thread's asgiref slot held before a request pointed it at the
    shared loop: ``(loop, pid)``, ``None`` for each that was not set; ``saved``
    is None while no request of ours has routed the thread."""

    saved: tuple[object, object] | None = None


_routing = _Routing()


def follow_shared_loop() -> None:
    """Point this (request) thread's ``async_to_sync`` at the running shared
    loop, or away from one that stopped or is stopping, until
    ``restore_routing()`` (the request's end) puts back what the thread had.

    Called on every WSGI request, so it costs a few dict operations: the
    slots are read through the thread's ``__dict__`` because a missing
    attribute of a ``threading.local`` costs an exception each time.
    """
    if _routing.saved is not None:
        restore_routing()  # a previous request whose response nobody closed
    target = runtime().running_loop
    # merged() rather than the ASYNC_VIEWS property: one call less per request;
    # the checks keep the value a bool (else no loop runs and target is None).
    if target is not None and not looptoken_settings.merged()["ASYNC_VIEWS"]:
        target = None
    slots = SyncToAsync.threadlocal.__dict__
    noted = slots.get("main_event_loop")
    if noted is target:
        return
    if target is not None:
        if hook_works():
            _routing.saved = (noted, slots.get("main_event_loop_pid"))
            slots["main_event_loop"] = target
            slots["main_event_loop_pid"] = os.getpid()
        return
    # A loop stopping now may cancel a task asgiref put there, or never run
    # it, so a shared loop is forgotten as soon as it stops running. A loop
    # asgiref noted itself (for a running sync_to_async call) stays.
    run = runtime().current_run
    if noted is not None and ((run is not None and noted is run.loop) or noted.is_closed()):
        del slots["main_event_loop"]


def restore_routing() -> None:
    """Put back what this thread's asgiref slot held before the request routed
    it, so that code outside requests runs ``async_to_sync`` as without the
    app. Called when the response closes, in the thread that closes it: a
    thread the request did not route is left alone."""
    saved = _routing.saved
    if saved is None:
        return
    _routing.saved = None
    slots = SyncToAsync.threadlocal.__dict__
    loop, pid = saved
    if loop is None:
        slots.pop("main_event_loop", None)
        slots.pop("main_event_loop_pid", None)
    else:
        slots["main_event_loop"] = loop
        slots["main_event_loop_pid"] = pid


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


def hook_supported() -> bool:
    """Whether asgiref's ``async_to_sync`` still reads a loop noted in its
    threadlocal, judged from its code alone: check W003 starts no loop. The
    live probe (``hook_works``) runs at the first request on a running loop."""
    code = getattr(AsyncToSync.__call__, "__code__", None)
    return (
        code is not None
        and "main_event_loop" in code.co_consts
        and "threadlocal" in code.co_names
        and hasattr(SyncToAsync, "threadlocal")
        and hasattr(AsyncToSync, "executors")
    )


def hook_probed_broken() -> bool:
    """Whether the live probe already ran in this process and failed (never runs it)."""
    return hook_works.cache_info().currsize > 0 and not hook_works()


async def _running_loop() -> asyncio.AbstractEventLoop:
    return asyncio.get_running_loop()


MIDDLEWARE_PATH = "django_looptoken.middleware.LoopTokenMiddleware"
_RECEIVER_UID = "django_looptoken.async_views"


def middleware_routes_first() -> bool:
    """Whether ``LoopTokenMiddleware`` routes each WSGI request before anything
    could call ``async_to_sync``: it is in ``MIDDLEWARE`` and every middleware
    above it runs synchronously under WSGI."""
    middleware = list(settings.MIDDLEWARE)
    if MIDDLEWARE_PATH not in middleware:
        return False
    above = middleware[: middleware.index(MIDDLEWARE_PATH)]
    try:
        return all(getattr(import_string(path), "sync_capable", True) for path in above)
    except ImportError:
        return False  # Django says which one when it loads the middleware


def _decide_at_first_request(sender: object, environ: object = None, **kwargs: object) -> None:
    """Connected until the first WSGI request (and again when MIDDLEWARE changes):
    leaves the routing to the middleware if it can, else to ``_on_request_started``."""
    if environ is None:
        return  # an ASGI request (sent with scope=): nothing changes
    # Where the middleware routes, no receiver is left: Django's dispatch to
    # one costs more than the routing check itself, on every request.
    _connect(None if middleware_routes_first() else _on_request_started)
    follow_shared_loop()


def _on_request_started(sender: object, environ: object = None, **kwargs: object) -> None:
    if environ is not None:  # None: an ASGI request (sent with scope=), nothing changes
        follow_shared_loop()


def _on_request_finished(sender: object, **kwargs: object) -> None:
    restore_routing()


def _connect(receiver: Callable[..., None] | None) -> None:
    """Make ``receiver`` this module's one ``request_started`` receiver (None:
    none). The receiver that routes also has one that restores at the end."""
    request_started.disconnect(dispatch_uid=_RECEIVER_UID)
    request_finished.disconnect(dispatch_uid=_RECEIVER_UID)
    if receiver is not None:
        request_started.connect(receiver, weak=False, dispatch_uid=_RECEIVER_UID)
    if receiver is _on_request_started:
        request_finished.connect(_on_request_finished, weak=False, dispatch_uid=_RECEIVER_UID)


def _on_setting_changed(*, setting: str, **kwargs: object) -> None:
    if setting == "MIDDLEWARE":
        _connect(_decide_at_first_request)


_connect(_decide_at_first_request)
setting_changed.connect(_on_setting_changed)

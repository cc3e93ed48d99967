"""The site ``bench/bench_gevent.py`` serves under a gunicorn gevent worker
or eventlet's WSGI server: one view that waits 200 ms on the shared loop,
one that waits 200 ms on the hub alone, one that reports the hub's longest
stall. Settings, URLs and views in one module."""

from __future__ import annotations

import asyncio
import time

from django.http import HttpRequest, JsonResponse
from django.urls import path

import django_looptoken as looptoken
from django_looptoken._greenlets import monkey_patched

if monkey_patched() == "eventlet":
    from eventlet import sleep as hub_sleep_for
    from eventlet import spawn
else:
    from gevent import sleep as hub_sleep_for
    from gevent import spawn

SECRET_KEY = "bench-only"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1"]
INSTALLED_APPS = ["django_looptoken"]
MIDDLEWARE: list[str] = []
ROOT_URLCONF = __name__
DATABASES: dict[str, object] = {}
USE_TZ = True
LOOPTOKEN = {"BACKEND": "auto"}  # uvloop under gevent, asyncio (the only one) under eventlet

TICK_SECONDS = 0.002
_stall = {"max": 0.0, "ticker": None}


def _tick() -> None:
    last = time.perf_counter()
    while True:
        hub_sleep_for(TICK_SECONDS)
        now = time.perf_counter()
        _stall["max"] = max(_stall["max"], now - last - TICK_SECONDS)
        last = now


def sleep(request: HttpRequest) -> JsonResponse:
    """Wait 200 ms on the shared loop, from this request's greenlet."""
    looptoken.await_(asyncio.sleep(0.2))
    return JsonResponse({"slept": 0.2})


def stall(request: HttpRequest) -> JsonResponse:
    """The hub's longest stall (ms) since the last ask; starts the ticker."""
    if _stall["ticker"] is None:
        _stall["ticker"] = spawn(_tick)
    longest, _stall["max"] = _stall["max"], 0.0
    return JsonResponse({"stall_ms": longest * 1000})


urlpatterns = [path("sleep/", sleep), path("stall/", stall)]


def hub_sleep(request: HttpRequest) -> JsonResponse:
    """Wait 200 ms on the hub alone: the floor the loop's wait is held to."""
    hub_sleep_for(0.2)
    return JsonResponse({"slept": 0.2})


urlpatterns.append(path("hub-sleep/", hub_sleep))

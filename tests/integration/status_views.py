"""Views for the status tests under real servers, and the status page itself."""

from __future__ import annotations

import asyncio
import os

from django.apps import apps
from django.http import HttpRequest, JsonResponse
from django.urls import include, path

import django_looptoken as looptoken

HOLD_SECONDS = 60.0  # bounds a test that fails to let go


@looptoken.runs_async
async def hold(request: HttpRequest) -> JsonResponse:
    """Wait on the shared loop until the test closes the Unix socket ``?socket=``.

    The test accepts the connection (so it knows the request is in flight,
    and from which worker: SO_PEERCRED) and closes it to let it finish.
    """
    reader, writer = await asyncio.open_unix_connection(request.GET["socket"])
    try:
        await asyncio.wait_for(reader.read(), HOLD_SECONDS)
    finally:
        writer.close()
        await writer.wait_closed()
    return JsonResponse({"pid": os.getpid()})


urlpatterns = [
    path("status-test/hold/", hold),
    path("looptoken/", include("django_looptoken.urls")),
]
if apps.is_installed("django.contrib.admin"):  # the status settings: a default project's
    from django.contrib import admin

    urlpatterns.append(path("admin/", admin.site.urls))

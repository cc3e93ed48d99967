"""URLs for the broken-settings tests: the admin, views that never use the
loop, and one that does."""

import asyncio

from django.contrib import admin
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, HttpResponse
from django.urls import path

import django_looptoken as looptoken
from tests.testapp import views as test_views


def plain(request: HttpRequest) -> HttpResponse:
    """A view that never uses the loop."""
    return HttpResponse("plain")


async def plain_async(request: HttpRequest) -> HttpResponse:
    """An async view that never uses the loop: Django runs it as without the app."""
    await asyncio.sleep(0)
    return HttpResponse("async")


def uses_the_loop(request: HttpRequest) -> HttpResponse:
    """A view that needs the loop; answers the error it gets, as text."""
    try:
        looptoken.await_(asyncio.sleep(0))
    except ImproperlyConfigured as error:
        return HttpResponse(str(error), status=500, content_type="text/plain")
    return HttpResponse("the loop ran")


urlpatterns = [
    path("admin/", admin.site.urls),
    path("tokens/", test_views.token_count),
    path("plain/", plain),
    path("plain-async/", plain_async),
    path("uses-the-loop/", uses_the_loop),
]

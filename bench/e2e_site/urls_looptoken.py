"""URLs of the ``looptoken`` site (the app and its middleware on)."""

from django.urls import path

from bench.e2e_site import views_looptoken as views
from bench.e2e_site.common import trivial

urlpatterns = [
    path("trivial/", trivial),
    path("where/", views.where),
    path("runs_async/aiohttp/", views.runs_async, {"pooled": views.POOLED_AIOHTTP}),
    path("runs_async/httpx/", views.runs_async, {"pooled": views.POOLED_HTTPX}),
    path("async_views/aiohttp/", views.async_view, {"pooled": views.POOLED_AIOHTTP}),
    path("async_views/httpx/", views.async_view, {"pooled": views.POOLED_HTTPX}),
    path("await_multiple/aiohttp/", views.await_multiple, {"pooled": views.POOLED_AIOHTTP}),
    path("await_multiple/httpx/", views.await_multiple, {"pooled": views.POOLED_HTTPX}),
]

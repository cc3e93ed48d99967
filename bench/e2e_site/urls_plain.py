"""URLs of the ``plain`` site (Django without django_looptoken)."""

from django.urls import path

from bench.e2e_site import views_plain
from bench.e2e_site.common import AIOHTTP, HTTPX, trivial

urlpatterns = [
    path("trivial/", trivial),
    path("where/", views_plain.where),
    path("sync/httpx/", views_plain.sync_client),
    path("django/aiohttp/", views_plain.django_own, {"lib": AIOHTTP}),
    path("django/httpx/", views_plain.django_own, {"lib": HTTPX}),
    path("thread/aiohttp/", views_plain.hand_written_thread, {"lib": AIOHTTP}),
    path("thread/httpx/", views_plain.hand_written_thread, {"lib": HTTPX}),
]

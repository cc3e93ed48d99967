"""URLs for the real-server tests."""

from django.urls import include, path

from tests.integration import views
from tests.urls import urlpatterns as test_urlpatterns

urlpatterns = [
    *test_urlpatterns,
    path("where/plain/", views.plain_async),
    path("where/decorated/", views.decorated),
    path("", include("tests.integration.status_views")),
]

"""URLs of the example project."""

from dashboard import views
from django.contrib import admin
from django.contrib.staticfiles.urls import staticfiles_urlpatterns
from django.urls import include, path

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("sequential/", views.sequential, name="sequential"),
    path("activity/", views.activity, name="activity"),
    path("async/", views.async_view, name="async-view"),
    path("stream/", views.stream, name="stream"),
    path("stream/events/", views.ticker_events, name="ticker-events"),
    # The staff-only loop status page of django_looptoken.
    path("looptoken/", include("django_looptoken.urls")),
    path("admin/", admin.site.urls),
]
# The admin's CSS under gunicorn: Django serves static files itself, with DEBUG only.
urlpatterns += staticfiles_urlpatterns()

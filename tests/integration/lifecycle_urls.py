"""URLs for the lifecycle tests: the real-server ones plus the shutdown scenarios."""

from django.urls import path

from tests.integration import lifecycle_views as views
from tests.integration.urls import urlpatterns as server_urlpatterns

urlpatterns = [
    *server_urlpatterns,
    path("lifecycle/loop/", views.loop_here),
    path("lifecycle/drain/<str:name>/", views.drain),
    path("lifecycle/busy-protected/<str:name>/", views.busy_protected),
    path("lifecycle/spawn-sync/<int:calls>/", views.spawn_sync),
    path("lifecycle/unprotected/", views.unprotected),
    path("lifecycle/stuck/", views.stuck),
    path("lifecycle/stubborn/", views.stubborn),
    path("lifecycle/hang-the-exit/", views.hang_the_exit),
]

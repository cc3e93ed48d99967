"""URLs for the real-server tests."""

from django.urls import include, path

from tests.integration import views
from tests.urls import urlpatterns as test_urlpatterns

urlpatterns = [
    *test_urlpatterns,
    path("where/plain/", views.plain_async),
    path("where/decorated/", views.decorated),
    path("", include("tests.integration.status_views")),
    # The request tests' (test_gunicorn_requests.py, test_gunicorn_orm.py):
    path("gate/<str:key>/", views.open_gate),
    path("gated-stream/<str:key>/", views.gated_stream),
    path("log-in/", views.log_in),
    path("cancelled/", views.cancelled),
    path("exceptions-seen/", views.exceptions_seen),
    path("orm/barrier/decorated/<str:key>/", views.barrier_decorated),
    path("orm/barrier/plain/<str:key>/", views.barrier_plain),
    path("orm/create/decorated/<str:name>/", views.create_decorated),
    path("orm/create/plain/<str:name>/", views.create_plain),
    path("orm/count/<str:name>/", views.count_items),
    path("orm/spawn/<int:tasks>/", views.spawn_orm),
    path("together/<int:count>/", views.together),
    path("in-executors/", views.in_executors),
    path("run-a-child/", views.run_a_child),
]

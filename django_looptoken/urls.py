"""``path("looptoken/", include("django_looptoken.urls"))``: the staff-only status
page, each process's tasks at ``tasks/<pid>/``, and Prometheus metrics at
``metrics`` (bearer token or staff)."""

from django.urls import path

from django_looptoken import views

app_name = "django_looptoken"

urlpatterns = [
    path("", views.status_page, name="status"),
    path("tasks/<int:pid>/", views.tasks_page, name="tasks"),
    path("metrics", views.metrics, name="metrics"),
]

"""``path("looptoken/", include("django_looptoken.urls"))``: the staff-only status page."""

from django.urls import path

from django_looptoken import views

app_name = "django_looptoken"

urlpatterns = [
    path("", views.status_page, name="status"),
]

"""The dashboard app of the example project."""

from django.apps import AppConfig


class DashboardConfig(AppConfig):
    """Panels read from slow upstream services, and an audit of page views."""

    name = "dashboard"
    default_auto_field = "django.db.models.BigAutoField"

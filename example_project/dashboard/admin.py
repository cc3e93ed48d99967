"""The dashboard's models in Django's admin."""

from django.contrib import admin

from dashboard.models import AuditEntry, Panel


@admin.register(Panel)
class PanelAdmin(admin.ModelAdmin):
    """Which panels the dashboard shows, in which order."""

    list_display = ("title", "slug", "path", "position")


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin):
    """The audit rows the background task writes."""

    list_display = ("created", "page", "elapsed_ms", "upstream_calls", "pid")
    list_filter = ("page",)

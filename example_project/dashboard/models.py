"""The dashboard's models: what it shows, and an audit of what it served."""

from django.db import models
from django.utils import timezone


class Panel(models.Model):
    """One box of the dashboard, filled from one upstream service."""

    slug = models.SlugField(unique=True)
    title = models.CharField(max_length=60)
    path = models.CharField(max_length=100, help_text="The upstream's path, e.g. /weather.")
    position = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ("position", "slug")

    def __str__(self) -> str:
        return self.title


class AuditEntry(models.Model):
    """A dashboard page served: written by a background task after the response."""

    CONCURRENT = "concurrent"
    SEQUENTIAL = "sequential"
    PAGES = ((CONCURRENT, "all upstreams at once"), (SEQUENTIAL, "one after another"))

    created = models.DateTimeField(default=timezone.now)
    page = models.CharField(max_length=20, choices=PAGES)
    elapsed_ms = models.PositiveIntegerField()
    upstream_calls = models.PositiveSmallIntegerField()
    pid = models.PositiveIntegerField(help_text="The worker process that served the page.")

    class Meta:
        ordering = ("-created", "-id")
        verbose_name_plural = "audit entries"

    def __str__(self) -> str:
        return f"{self.page} page in {self.elapsed_ms} ms"

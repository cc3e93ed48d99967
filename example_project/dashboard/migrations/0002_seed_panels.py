"""Seed data: the four panels the dashboard shows, one per upstream route."""

from django.apps.registry import Apps
from django.db import migrations
from django.db.backends.base.schema import BaseDatabaseSchemaEditor

PANELS = [
    ("weather", "Weather", "/weather"),
    ("news", "News", "/news"),
    ("stocks", "Stocks", "/stocks"),
    ("traffic", "Traffic", "/traffic"),
]


def add_panels(apps: Apps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    Panel = apps.get_model("dashboard", "Panel")
    for position, (slug, title, path) in enumerate(PANELS):
        Panel.objects.update_or_create(
            slug=slug, defaults={"title": title, "path": path, "position": position}
        )


def remove_panels(apps: Apps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    Panel = apps.get_model("dashboard", "Panel")
    Panel.objects.filter(slug__in=[slug for slug, _, _ in PANELS]).delete()


class Migration(migrations.Migration):
    dependencies = (("dashboard", "0001_initial"),)

    operations = (migrations.RunPython(add_panels, remove_panels),)

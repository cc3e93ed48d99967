"""``manage.py setupdemo --username U --password P``: what ``make demo`` needs first.

Applies the migrations (which seed the panels) and makes sure a staff user
``U`` with password ``P`` exists, so a browser can log in to the status page
and the admin. Running it again changes nothing but the password. For the
local demo only: its password is on the command line and printed.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser


class Command(BaseCommand):
    """Migrate, then create or update the demo's staff user."""

    help = "Apply the migrations and create (or update) the demo's staff user."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--username", required=True)
        parser.add_argument("--password", required=True)

    def handle(self, *args: Any, username: str, password: str, **options: Any) -> None:
        call_command("migrate", interactive=False, verbosity=options["verbosity"] - 1)
        user, created = get_user_model().objects.get_or_create(username=username)
        user.is_staff = user.is_superuser = user.is_active = True
        user.set_password(password)
        user.save()
        what = "created" if created else "updated"
        self.stdout.write(f"Staff user {username!r} {what}.")

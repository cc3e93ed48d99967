"""``manage.py loopstatus``: the shared loop of every live process, from its status socket."""

from __future__ import annotations

import json
import math
import os
import time
from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from django_looptoken._status import (
    COLUMNS,
    listing_report,
    project,
    silent_row,
    table_row,
    would_start,
)
from django_looptoken._status_socket import Listing, collect, status_dir
from django_looptoken.conf import looptoken_settings


class Command(BaseCommand):
    """Lists live processes with their loop's status, as a table or JSON."""

    help = (
        "Show the shared event loop of every live process of this project (its "
        "DJANGO_SETTINGS_MODULE): state, backend, tokens, pending tasks, await_ calls, "
        "loop lag and slow callbacks, asked from each process's status socket in "
        'LOOPTOKEN["STATUS_DIR"]. With no live process, shows what this configuration '
        "would start."
    )
    # A diagnostic command: it must run, and explain, even with broken settings.
    requires_system_checks = ()

    def add_arguments(self, parser: ArgumentParser) -> None:
        """--json, --watch SECONDS, --all."""
        parser.add_argument("--json", action="store_true", help="Print JSON instead of a table.")
        parser.add_argument(
            "--watch",
            type=float,
            metavar="SECONDS",
            help="Show it again every SECONDS until Ctrl-C.",
        )
        parser.add_argument(
            "--all",
            action="store_true",
            dest="all_projects",
            help="Show the processes of every project of this user, not only this one.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        """Show the status once, or every ``--watch`` seconds until Ctrl-C."""
        watch: float | None = options["watch"]
        if watch is not None and not (math.isfinite(watch) and watch > 0):
            raise CommandError(f"--watch takes a number of seconds above 0, not {watch}.")
        if watch is None:
            self._show(options)
            return
        try:
            while True:
                if self.stdout.isatty():
                    self.stdout.write("\x1b[H\x1b[2J", ending="")  # clear, as watch(1) does
                self.stdout.write(
                    f"Every {watch:g} s, until Ctrl-C. {time.strftime('%Y-%m-%d %H:%M:%S')}"
                )
                self._show(options)
                self.stdout.write("")
                time.sleep(watch)
        except KeyboardInterrupt:
            self.stdout.write("")  # end the line the terminal's ^C started

    def _show(self, options: dict[str, Any]) -> None:
        directory = status_dir(looptoken_settings.STATUS_DIR)
        # This command's own loop (AUTOSTART) is not a server worth listing.
        listing = collect(directory, exclude_pid=os.getpid())
        if listing.error is not None:
            raise CommandError(listing.error)
        this_project = project()
        processes = listing.processes
        if not options["all_projects"]:
            processes = [p for p in processes if p.get("project") == this_project]
        others = len(listing.processes) - len(processes)
        for note in listing.notes:
            self.stderr.write(note, style_func=self.style.WARNING)
        if options["json"]:
            self._write_json(listing, processes, this_project)
        elif processes or listing.silent:
            self._write_table(listing, processes, all_projects=options["all_projects"])
        else:
            self._write_nothing_runs(directory, this_project, others)

    def _write_json(
        self, listing: Listing, processes: list[dict[str, Any]], this_project: str | None
    ) -> None:
        report = listing_report(listing, processes, this_project)
        if not processes and not listing.silent:
            report["would_start"] = would_start()
        self.stdout.write(json.dumps(report, indent=2, default=str))

    def _write_table(
        self, listing: Listing, processes: list[dict[str, Any]], *, all_projects: bool
    ) -> None:
        keep = len(COLUMNS) if all_projects else len(COLUMNS) - 1  # PROJECT only with --all
        rows = [table_row(p)[:keep] for p in processes]
        rows += [silent_row(pid, why)[:keep] for pid, why in listing.silent]
        header = list(COLUMNS[:keep])
        widths = [max(len(row[i]) for row in [header, *rows]) for i in range(keep)]

        def line(cells: list[str]) -> str:
            return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True))

        self.stdout.write(line(header).rstrip(), style_func=self.style.MIGRATE_HEADING)
        for row in rows:
            style = {
                "running": self.style.SUCCESS,
                "stopping": self.style.WARNING,
            }.get(row[1], self.style.ERROR)
            self.stdout.write(line(row).rstrip(), style_func=style)

    def _write_nothing_runs(self, directory: str, this_project: str | None, others: int) -> None:
        self.stdout.write(
            f"No live process of project {this_project or '(no settings module)'} "
            f"serves a status in {directory}."
        )
        if others:
            self.stdout.write(f"{others} process(es) of other projects run there: use --all.")
        plan = would_start()
        self.stdout.write("This configuration would start:", style_func=self.style.MIGRATE_HEADING)
        uvloop = "installed" if plan["uvloop_installed"] else "not installed"
        if plan["errors"]:
            self.stdout.write("  nothing: the LOOPTOKEN setting is invalid:")
            for error in plan["errors"]:
                self.stdout.write(f"    {error}", style_func=self.style.ERROR)
            self.stdout.write(f"  (uvloop is {uvloop})")
        else:
            self.stdout.write(f"  backend: {plan['backend']} (uvloop is {uvloop})")
        self.stdout.write("  settings in force (LOOPTOKEN over the defaults):")
        for key, value in plan["settings"].items():
            self.stdout.write(f"    {key} = {value!r}")

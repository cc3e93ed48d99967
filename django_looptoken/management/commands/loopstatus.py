"""``manage.py loopstatus``: the shared loop of every live process, from its status socket."""

from __future__ import annotations

import json
import math
import os
import time
from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from django_looptoken._status import would_start
from django_looptoken._status_report import StatusReport


class Command(BaseCommand):
    """Lists live processes with their loop's status, as a table or JSON."""

    help = (
        "Show the shared event loop of every live process of this project (its "
        "DJANGO_SETTINGS_MODULE): role, state, backend, tokens, pending tasks, await_ calls, "
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
        # This command's own loop (AUTOSTART) is not a server worth listing.
        report = StatusReport.gather(all_projects=options["all_projects"], exclude_pid=os.getpid())
        if report.listing.error is not None:
            raise CommandError(report.listing.error)
        for note in report.listing.notes:
            self.stderr.write(note, style_func=self.style.WARNING)
        if options["json"]:
            output = report.as_json()
            if report.empty:
                output["would_start"] = would_start()
            self.stdout.write(json.dumps(output, indent=2, default=str))
        elif not report.empty:
            self._write_table(report)
        else:
            self._write_nothing_runs(report)

    def _write_table(self, report: StatusReport) -> None:
        header = report.columns()
        rows = report.rows()
        widths = [
            max(len(cells[i]) for cells in [header, *(r.cells for r in rows)])
            for i in range(len(header))
        ]

        def line(cells: list[str]) -> str:
            return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True))

        self.stdout.write(line(header).rstrip(), style_func=self.style.MIGRATE_HEADING)
        for row in rows:
            style = {
                "running": self.style.SUCCESS,
                "stopping": self.style.WARNING,
            }.get(row.state, self.style.ERROR)
            self.stdout.write(line(row.cells).rstrip(), style_func=style)

    def _write_nothing_runs(self, report: StatusReport) -> None:
        self.stdout.write(
            f"No live process of project {report.project or '(no settings module)'} "
            f"serves a status in {report.listing.directory}."
        )
        if report.others:
            self.stdout.write(
                f"{report.others} process(es) of other projects run there: use --all."
            )
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

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
from django_looptoken._status_report import TASKS_REQUEST, StatusReport, duration
from django_looptoken._status_socket import STATUS_REQUEST, ask, socket_path, status_dir
from django_looptoken.conf import looptoken_settings


class Command(BaseCommand):
    """Lists live processes with their loop's status, as a table or JSON."""

    help = (
        "Show the shared event loop of every live process of this project (its "
        "DJANGO_SETTINGS_MODULE): role, state, backend, tokens, pending tasks, await_ calls, "
        "loop lag and slow callbacks, asked from each process's status socket in "
        'LOOPTOKEN["STATUS_DIR"]. With no live process, shows what this configuration '
        "would start. --tasks lists each loop's pending tasks, oldest first, with where "
        "each was made and the line it waits on; --cancel ID (with --pid) cancels one."
    )
    # A diagnostic command: it must run, and explain, even with broken settings.
    requires_system_checks = ()

    def add_arguments(self, parser: ArgumentParser) -> None:
        """--json, --watch SECONDS, --all, --tasks, --pid PID, --cancel ID."""
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
        parser.add_argument(
            "--tasks",
            action="store_true",
            help="List each loop's pending tasks, oldest first, and what each waits on.",
        )
        parser.add_argument(
            "--pid", type=int, help="Only the process PID (one of this project's)."
        )
        parser.add_argument(
            "--cancel",
            type=int,
            metavar="ID",
            help="Cancel the task ID (from --tasks) in the process --pid.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        """Show the status once, or every ``--watch`` seconds until Ctrl-C."""
        if options["cancel"] is not None:
            self._cancel(options)
            return
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
        report = StatusReport.gather(
            all_projects=options["all_projects"],
            exclude_pid=os.getpid(),
            only_pid=options["pid"],
            request=TASKS_REQUEST if options["tasks"] else STATUS_REQUEST,
        )
        if report.listing.error is not None:
            raise CommandError(report.listing.error)
        for note in report.listing.notes:
            self.stderr.write(note, style_func=self.style.WARNING)
        if options["pid"] is not None and report.empty:
            raise CommandError(self._not_a_process(options["pid"], report))
        if options["tasks"]:
            self._write_tasks(report, options["json"])
            return
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

    def _not_a_process(self, pid: int, report: StatusReport) -> str:
        return (
            f"Process {pid} is not a live process of project "
            f"{report.project or '(no settings module)'} serving a status in "
            f"{report.listing.directory}; run loopstatus without --pid to see them."
        )

    def _write_tasks(self, report: StatusReport, as_json: bool) -> None:
        if as_json:
            self.stdout.write(json.dumps(report.as_json(), indent=2, default=str))
            return
        if report.empty:
            self.stdout.write(
                f"No live process of project {report.project or '(no settings module)'} "
                f"serves a status in {report.listing.directory}."
            )
        for answer in report.processes:
            self._write_tasks_of(answer)
        for pid, why in report.listing.silent:
            self.stdout.write(f"Process {pid}: {why}", style_func=self.style.ERROR)

    def _write_tasks_of(self, answer: dict[str, Any]) -> None:
        total, tasks = answer.get("total", 0), answer.get("tasks", [])
        shown = f", the oldest {len(tasks)} shown" if len(tasks) < total else ""
        self.stdout.write(
            f"Process {answer.get('pid')} ({answer.get('role') or '-'}): "
            f"{total} pending task(s), oldest first{shown}",
            style_func=self.style.MIGRATE_HEADING,
        )
        blocked = answer.get("blocked_s") or 0
        if blocked:
            self.stdout.write(
                f"  The loop has been blocked for {blocked:.1f} s; its thread is at:",
                style_func=self.style.ERROR,
            )
            for line in answer.get("loop_stack") or []:
                self.stdout.write(f"    {line}")
        for task in tasks:
            marks = [
                mark
                for mark, on in (
                    ("LONG", task.get("long")),
                    ("protected", task.get("protected")),
                    ("running now", task.get("running")),
                )
                if on
            ]
            style = self.style.WARNING if task.get("long") else (lambda text: text)
            self.stdout.write(
                f"  #{task.get('id')} {task.get('coroutine')}, "
                f"age {duration(task.get('age_s'))}{''.join(f', {m}' for m in marks)}",
                style_func=style,
            )
            made = task.get("created_at") or "unknown"
            request = f" (request {task['request']})" if task.get("request") else ""
            self.stdout.write(f"      made at {made}{request}")
            chain = task.get("await_chain") or []
            if chain:
                self.stdout.write("      waiting in " + chain[0])
                for frame in chain[1:]:
                    self.stdout.write("             -> " + frame)
            if task.get("awaiting"):
                self.stdout.write(f"             -> awaits a {task['awaiting']}")

    def _cancel(self, options: dict[str, Any]) -> None:
        pid = options["pid"]
        if pid is None:
            raise CommandError("--cancel needs --pid: the process the task runs in.")
        report = StatusReport.gather(only_pid=pid, exclude_pid=os.getpid())
        if not report.processes:
            raise CommandError(self._not_a_process(pid, report))
        path = socket_path(status_dir(looptoken_settings.STATUS_DIR), pid, report.project)
        try:
            answer = ask(path, request={"op": "cancel", "task": options["cancel"]})
        except (OSError, ValueError) as exc:
            raise CommandError(
                f"Process {pid} did not cancel task {options['cancel']}: {exc}"
            ) from None
        said = f"Asked process {pid} to cancel task #{answer['task']} ({answer['coroutine']})."
        blocked = answer.get("blocked_s") or 0
        if blocked:
            said += f" Its loop is blocked ({blocked:.1f} s so far): it is cancelled once it runs."
        self.stdout.write(said, style_func=self.style.SUCCESS)

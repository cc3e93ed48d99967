"""The status report that the status page and ``manage.py loopstatus`` show.

One place for the three steps both need: collect (ask the status sockets),
filter (this project's processes, or every project's), and present (table
rows, JSON).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from django_looptoken._status import project
from django_looptoken._status_socket import (
    STATUS_REQUEST,
    Listing,
    collect,
    project_tag,
    status_dir,
)
from django_looptoken.conf import looptoken_settings

COLUMNS = (
    "PID",
    "ROLE",
    "STATE",
    "BACKEND",
    "UPTIME",
    "TOKENS",
    "TASKS",
    "AWAITS",
    "ERRORS",
    "TIMEOUTS",
    "LAG P50/P99/MAX MS",
    "SLOW",
    "PROJECT",
)


# What a task listing asks each process (its answer: ``_tasks.listing()``).
TASKS_REQUEST: dict[str, Any] = {"op": "tasks"}


class Row(NamedTuple):
    """One line of the table: the process's state and its cells."""

    state: str  # running, blocked, stopping, stopped, or "no answer"
    cells: list[str]


@dataclass
class StatusReport:
    """The live processes of this project (or of every project), asked just now."""

    listing: Listing
    project: str | None
    processes: list[dict[str, Any]]
    all_projects: bool
    # Live processes of other projects, left out.
    others: int

    @classmethod
    def gather(
        cls,
        *,
        all_projects: bool = False,
        exclude_pid: int | None = None,
        only_pid: int | None = None,
        request: dict[str, Any] = STATUS_REQUEST,
    ) -> StatusReport:
        """Ask the processes in ``LOOPTOKEN["STATUS_DIR"]`` for their status
        (or what ``request`` asks, such as ``TASKS_REQUEST``), all within one
        time limit; with ``only_pid``, that process alone.

        Without ``all_projects``, only the sockets of this project are asked:
        a silent process of another project is not even seen.
        """
        this_project = project()
        listing = collect(
            status_dir(looptoken_settings.STATUS_DIR),
            exclude_pid=exclude_pid,
            only_pid=only_pid,
            tag=None if all_projects else project_tag(this_project),
            request=request,
        )
        processes = listing.processes
        if not all_projects:  # the tag is a hash: the name has the last word
            processes = [p for p in processes if p.get("project") == this_project]
        others = listing.others + len(listing.processes) - len(processes)
        return cls(listing, this_project, processes, all_projects, others)

    @property
    def empty(self) -> bool:
        """No live process to show, answering or not."""
        return not self.processes and not self.listing.silent

    def columns(self) -> list[str]:
        """The table's header (PROJECT only for every project)."""
        return list(COLUMNS if self.all_projects else COLUMNS[:-1])

    def rows(self) -> list[Row]:
        """The table: the processes that answered, then the silent ones."""
        keep = len(self.columns())
        rows = [Row(_state(p), table_row(p)[:keep]) for p in self.processes]
        rows += [Row("no answer", silent_row(pid, why)[:keep]) for pid, why in self.listing.silent]
        return rows

    def as_json(self) -> dict[str, Any]:
        """What ``loopstatus --json`` and the page's ``?format=json`` answer."""
        return {
            "status_dir": self.listing.directory,
            "project": self.project,
            "processes": self.processes,
            "silent": [{"pid": pid, "problem": why} for pid, why in self.listing.silent],
            "notes": self.listing.notes,
            "error": self.listing.error,
        }


def table_row(status: dict[str, Any]) -> list[str]:
    """One process's status as the table's cells (in ``COLUMNS`` order)."""
    lag = status.get("lag_ms") or {}
    lags = "/".join(
        "-" if lag.get(key) is None else f"{lag[key]:.1f}" for key in ("p50", "p99", "max")
    )
    blocked = status.get("blocked_s") or 0
    return [
        str(status.get("pid", "?")),
        str(status.get("role") or "-"),
        f"blocked {blocked:.1f}s" if blocked else str(status.get("state", "?")),
        str(status.get("backend") or "-"),
        duration(status.get("uptime_s")),
        str(status.get("tokens", "?")),
        str(status.get("tasks", "?")),
        str(status.get("await_calls", "?")),
        str(status.get("await_errors", "?")),
        _timeouts(status),
        lags,
        str(status.get("slow_callbacks", "?")),
        str(status.get("project") or "-"),
    ]


def _state(status: dict[str, Any]) -> str:
    """``running``, ``stopping``, ``stopped``, or ``blocked`` (a running loop held now)."""
    return "blocked" if status.get("blocked_s") else str(status.get("state", "?"))


def _timeouts(status: dict[str, Any]) -> str:
    """``await_timeouts``, and how many of those tasks still run (``tasks_past_timeout``)."""
    cell = str(status.get("await_timeouts", "?"))
    running_on = status.get("tasks_past_timeout") or 0
    return f"{cell} ({running_on} running on)" if running_on else cell


def silent_row(pid: int, why: str) -> list[str]:
    """A table row for a live process that did not answer."""
    return [str(pid), "-", "no answer", why, *["-"] * (len(COLUMNS) - 4)]


def duration(seconds: object) -> str:
    """Seconds as ``4.2s``, ``3m07s``, ``5h02m`` or ``2d03h``."""
    if not isinstance(seconds, (int, float)):
        return "-"
    whole = int(seconds)
    if whole < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"

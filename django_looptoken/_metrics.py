"""The loops of this project's local processes as Prometheus metrics.

Built from the status report, so one scrape of any worker reports every
worker that answers on its status socket (prometheus_client's multiprocess
mode cannot do this for values a process only knows about itself). The
exposition format is prometheus_client's; it is an optional dependency
(``django-looptoken[metrics]``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from django_looptoken._status_report import StatusReport

LABELS = ["pid", "role", "project"]

# name, help, the status key, and whether it is a counter.
PER_LOOP = (
    ("looptoken_loop_running", "1 if the loop is running, else 0.", None, False),
    ("looptoken_loop_uptime_seconds", "Seconds since this loop started.", "uptime_s", False),
    ("looptoken_loop_tokens", "Tokens held on the loop now.", "tokens", False),
    ("looptoken_loop_tasks", "Tasks pending on the loop now.", "tasks", False),
    (
        "looptoken_loop_blocked_seconds",
        "Seconds the loop has been held in one callback now (0 while it runs).",
        "blocked_s",
        False,
    ),
    (
        "looptoken_tasks_past_timeout",
        "Tasks still running although their call timed out.",
        "tasks_past_timeout",
        False,
    ),
    ("looptoken_await_calls", "Coroutines run for a blocked caller.", "await_calls", True),
    ("looptoken_await_errors", "await_ calls that raised.", "await_errors", True),
    ("looptoken_await_timeouts", "await_ calls whose timeout ran out.", "await_timeouts", True),
    (
        "looptoken_slow_callbacks",
        "Times the loop was held longer than SLOW_CALLBACK_DURATION.",
        "slow_callbacks",
        True,
    ),
    (
        "looptoken_loop_cpu_seconds",
        "CPU time of the loop's thread: its rate is the loop's utilisation "
        "(a blocking call that waits off the CPU shows in the lag instead).",
        "loop_cpu_s",
        True,
    ),
)

# name, help, the status key of a histogram.
HISTOGRAMS = (
    (
        "looptoken_await_duration_seconds",
        "How long await_ and await_multiple calls took, from the call to its outcome.",
        "await_seconds",
    ),
    (
        "looptoken_loop_lag_seconds",
        "How late the loop ran its probe's timer, at every tick since the loop started.",
        "lag_seconds",
    ),
)


class _ReportCollector:
    """One scrape's metrics, from a status report gathered for it."""

    def __init__(self, report: StatusReport) -> None:
        self.report = report

    def collect(self) -> Iterator[Metric]:
        """Every metric family, a sample per process."""
        processes = self.report.processes
        up = GaugeMetricFamily(
            "looptoken_process_up",
            "1 if the process answered this scrape on its status socket, 0 if it was silent.",
            labels=["pid", "project"],
        )
        for status in processes:
            up.add_metric([str(status["pid"]), str(status.get("project"))], 1)
        for pid, _why in self.report.listing.silent:
            up.add_metric([str(pid), str(self.report.project)], 0)
        yield up
        for name, help_text, key, counter in PER_LOOP:
            family_type = CounterMetricFamily if counter else GaugeMetricFamily
            family = family_type(name, help_text, labels=LABELS)
            for status in processes:
                value = (status.get("state") == "running") if key is None else status.get(key)
                family.add_metric(_labels(status), float(value or 0))
            yield family
        for name, help_text, key in HISTOGRAMS:
            histogram = HistogramMetricFamily(name, help_text, labels=LABELS)
            for status in processes:
                figures = status.get(key)
                if figures:  # a worker of an older version may not report it
                    buckets = [(_bound(bound), count) for bound, count in figures["buckets"]]
                    histogram.add_metric(_labels(status), buckets, figures["sum"])
            yield histogram


def _bound(bound: float | str) -> str:
    return bound if isinstance(bound, str) else repr(float(bound))


def _labels(status: dict[str, Any]) -> list[str]:
    return [str(status["pid"]), str(status.get("role")), str(status.get("project"))]


def exposition(report: StatusReport) -> tuple[bytes, str]:
    """The report in Prometheus's text format, and its content type."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_ReportCollector(report))
    return generate_latest(registry), CONTENT_TYPE_LATEST

"""Small line charts of a loop's history for the staff page: SVG polylines
computed on the server, so the page needs no JavaScript."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django_looptoken._history import POINTS

WIDTH = 180
HEIGHT = 36
# What each chart shows: its title, the history key, how its values read.
SERIES = (
    ("lag p99", "lag_p99_ms", "{:.1f} ms"),
    ("await_ calls", "awaits_per_s", "{:.1f}/s"),
    ("tasks", "tasks", "{:.0f}"),
)


@dataclass(frozen=True)
class Sparkline:
    """One chart: ``points`` for an SVG ``<polyline>`` (empty until there are
    two values), the latest value and the highest, formatted."""

    title: str
    points: str
    latest: str
    peak: str


def sparklines(history: list[dict[str, Any]]) -> list[Sparkline]:
    """The charts of one process's history (``status()["history"]``)."""
    return [
        _chart(title, [point.get(key) for point in history], fmt) for title, key, fmt in SERIES
    ]


def _chart(title: str, values: list[Any], fmt: str) -> Sparkline:
    known = [(index, float(v)) for index, v in enumerate(values) if isinstance(v, (int, float))]
    if len(known) < 2:
        return Sparkline(title, "", fmt.format(known[-1][1]) if known else "-", "-")
    top = max(value for _, value in known) or 1.0
    # The latest point at the right edge; a full history spans the width.
    dx = WIDTH / (POINTS - 1)
    right = len(values) - 1
    points = " ".join(
        f"{WIDTH - (right - index) * dx:.1f},{HEIGHT - value / top * (HEIGHT - 2) - 1:.1f}"
        for index, value in known
    )
    return Sparkline(title, points, fmt.format(known[-1][1]), fmt.format(top))

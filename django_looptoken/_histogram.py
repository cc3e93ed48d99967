"""A histogram of durations, written by one thread (the loop's) and read by any.

Fixed buckets, as Prometheus histograms have: counts per bucket, their sum
and the number of observations. The writer is the loop thread alone, so no
lock; a reader copies the counts and may see one observation half-counted,
which the next read corrects.
"""

from __future__ import annotations

import bisect
from typing import Any

# Seconds: from a quick await_ (a millisecond) to a loop blocked for seconds.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Histogram:
    """Counts of observations at or below each bound of ``BUCKETS`` (and above all)."""

    __slots__ = ("_counts", "_sum")

    def __init__(self) -> None:
        self._counts = [0] * (len(BUCKETS) + 1)  # the last: above every bound
        self._sum = 0.0

    def observe(self, seconds: float) -> None:
        """Count one observation (on the loop thread)."""
        self._counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        self._sum += seconds

    def snapshot(self) -> dict[str, Any]:
        """``{"buckets": [[bound, cumulative count], ...], "sum": s, "count": n}``,
        JSON-serialisable; the last bound is ``"+Inf"``."""
        counts = list(self._counts)
        cumulative = 0
        buckets: list[list[Any]] = []
        for bound, in_bucket in zip([*BUCKETS, "+Inf"], counts, strict=True):
            cumulative += in_bucket
            buckets.append([bound, cumulative])
        return {"buckets": buckets, "sum": round(self._sum, 6), "count": cumulative}

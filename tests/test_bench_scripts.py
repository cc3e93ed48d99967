"""The benchmark scripts' own behaviour.

``bench/feature_table.py`` holds the probes behind docs/comparison.md's feature
table. The looptoken column must read "yes" everywhere, and the same probes
must find the features missing where they are (``asyncio.run``, Django's own
async views), so a probe that always said yes would fail here. Only the
columns that need no ``bench`` extra run (that extra is not installed in CI).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

# One run: each benchmark picks the backends it compares.
pytestmark = pytest.mark.one_backend

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "feature_table.py"


def probe_table(tmp_path: Path, *args: str) -> dict[str, Any]:
    """Run the script with ``args``; return its JSON cells."""
    out = tmp_path / "cells.json"
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *args, "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=100,
        env=env,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    cells: dict[str, Any] = json.loads(out.read_text())["cells"]
    return cells


def run_bench(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``bench/<script>`` with ``args`` from the repository root."""
    return subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        check=False,
    )


def test_looptoken_column_probes_pass(tmp_path: Path) -> None:
    """Every row's probe finds the feature in django-looptoken."""
    cells = probe_table(tmp_path, "--only", "looptoken")
    verdicts = {row: by["looptoken"]["verdict"] for row, by in cells.items()}
    assert verdicts == {str(row): "yes" for row in range(1, 11)}, cells
    assert cells["6"]["looptoken"]["text"] == "both ways"


def test_probes_find_missing_features(tmp_path: Path) -> None:
    """The same probes say no where the feature is missing."""
    cells = probe_table(
        tmp_path, "--only", "asyncio.run", "--only", "django", "--rows", "2,4,5,8,9"
    )
    run = {row: by["asyncio.run"]["verdict"] for row, by in cells.items()}
    assert run == {"2": "no", "4": "no", "5": "no", "8": "no", "9": "n/a"}, cells
    assert "Event loop is closed" in cells["2"]["asyncio.run"]["note"]
    assert cells["4"]["django"]["verdict"] == "yes"  # async_to_sync hands back to the caller
    assert cells["9"]["django"]["verdict"] == "no"


def test_bench_await_refuses_a_cpu_it_may_not_run_on() -> None:
    """``bench_await.py --pin`` with a CPU outside the process's affinity is a
    usage error naming the CPUs it may use, before anything is measured."""
    usable = sorted(os.sched_getaffinity(0))
    outside = max(usable) + 1
    done = run_bench("bench_await.py", "--pin", str(outside))
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"--pin {outside}: this process may run on CPUs {usable} only" in done.stderr
    assert done.stdout == ""


def test_bench_scaling_compares_the_app_with_the_hand_written_thread(tmp_path: Path) -> None:
    """A tiny run of ``bench_scaling.py``: each contender measured, the app's
    rows carrying its ratios to the thread's, the figures written as JSON."""
    figures = tmp_path / "scaling.json"
    options = ["--callers", "2", "--rounds", "1", "--seconds", "0.05", "--json", str(figures)]
    done = run_bench("bench_scaling.py", "--backend", "asyncio", *options)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith("| 2 |")]
    # score.asyncio's rows come too where the bench extra is installed.
    rows = [row for row in rows if not row.split(" | ")[1].startswith("score.asyncio")]
    assert [row.split(" | ")[1] for row in rows] == [
        "await_",
        "thread",
        "await_multiple x10",
        "thread gather x10",
    ]
    assert rows[0].count("(") == 3  # calls/s, p99 and p999 ratios, with their range
    (report,) = json.loads(figures.read_text())
    assert report["backend"] == "asyncio"
    assert all(run["calls_per_s"] > 0 for run in report["figures"]["2"]["await_"])


def test_bench_scaling_breaks_calls_down_with_greenlets_for_callers(tmp_path: Path) -> None:
    """``--greenlets --breakdown``: the callers are greenlets of a patched
    process, and each contender's call is timed in its three parts."""
    figures = tmp_path / "scaling.json"
    options = ["--callers", "3", "--rounds", "1", "--seconds", "0.05", "--json", str(figures)]
    options += ["--greenlets", "--breakdown"]
    done = run_bench("bench_scaling.py", "--backend", "uvloop", *options)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "#### uvloop, callers are greenlets (gevent): where the time goes" in done.stdout
    (report,) = json.loads(figures.read_text())
    assert report["greenlets"] is True
    for runs in report["figures"]["3"].values():
        (run,) = runs
        parts = [run[f"{part}_p50_ms"] for part in ("to_loop", "on_loop", "back")]
        assert all(part > 0 for part in parts), run
        assert run["on_loop_p50_ms"] <= run["p99_ms"]  # a part of the call, not more


@pytest.mark.parametrize("server", ["gevent", "eventlet"])
def test_bench_gevent_times_the_loop_against_the_hubs_own_sleep(
    tmp_path: Path, server: str
) -> None:
    """A tiny run of ``bench_gevent.py`` against a real gunicorn gevent
    worker, or eventlet's server: both contenders timed, the stalls
    reported, JSON written."""
    figures = tmp_path / "gevent.json"
    options = ["--rounds", "1", "--requests", "5", "--json", str(figures)]
    done = run_bench("bench_gevent.py", "--server", server, *options)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{server}; 5 requests at once, 1 rounds" in done.stdout
    rows = [line.split(" | ")[0] for line in done.stdout.splitlines() if line.startswith("| ")]
    assert rows[1:] == ["| await_", "| hub's own sleep"]
    report = json.loads(figures.read_text())
    assert report["server"] == server
    assert [len(report["results"][name]) for name in ("await_", "hub's own sleep")] == [1, 1]


def test_bench_scrape_times_a_scrape_of_every_worker_even_with_one_blocked() -> None:
    """A tiny run of ``bench_scrape.py``: two workers, one of them blocked for
    the second row, both answering every scrape (the script checks it)."""
    done = run_bench("bench_scrape.py", "--quick", "--workers", "2")
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| 2 workers |")
    assert [row.split(" | ")[0] for row in rows[1:]] == [
        "| every loop idle",
        "| one loop blocked in `time.sleep`",
    ]

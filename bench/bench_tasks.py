"""Benchmark: what noting each task costs (the task listing's number, time,
caller's line and request), counted exactly under callgrind.

Run it from the repository root (needs ``valgrind``)::

    .venv/bin/python bench/bench_tasks.py            # about ten minutes
    .venv/bin/python bench/bench_tasks.py --quick    # about four minutes

The goal is under 5% more per ``await_`` and per ``spawn`` with the notes
on than off: too small for this shared machine's clock, so instructions are
counted. For each operation (``await_`` of a one-suspension coroutine, and
``spawn`` of one whose future is then waited for) and each mode (notes on,
the default; off, ``_tasks.NOTE_TASKS = False``), a child process runs the
operation ``N`` times under callgrind, twice with different ``N``: the
difference of the two totals over the difference of ``N`` is the cost of
one call, everything included (both threads, the loop's wake-ups), start-up
cancelled. Which wake-up path a call takes depends on timing, so one such
estimate varies by a few thousand instructions from run to run: each mode
runs three times, alternating, and the ratio is the median of the runs'.
The monitor's lag probe ticks on a clock, ~50x more often per call under
callgrind: ``SLOW_CALLBACK_DURATION`` is 1 s here, as in
``bench_instructions.py``, so it counts little, and the same in both modes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OPERATIONS = ("await_", "spawn")
MODES = ("on", "off")


async def one_suspension() -> int:
    """The coroutine each call runs: one suspension, then a result."""
    await asyncio.sleep(0)
    return 1


def child(operation: str, notes: bool, calls: int, status_dir: str) -> None:
    """Run ``operation`` ``calls`` times on a started loop (after a warm-up)."""
    sys.path.insert(0, str(ROOT))
    import django
    from django.conf import settings

    settings.configure(
        INSTALLED_APPS=["django_looptoken"],
        LOOPTOKEN={
            "AUTOSTART": False,
            "BACKEND": "uvloop",
            "STATUS_DIR": status_dir,
            "SLOW_CALLBACK_DURATION": 1.0,
            "WATCHDOG_SECONDS": None,
        },
    )
    django.setup()
    import django_looptoken as looptoken
    from django_looptoken import _tasks

    _tasks.NOTE_TASKS = notes

    def await_once() -> None:
        looptoken.await_(one_suspension())

    def spawn_once() -> None:
        looptoken.spawn(one_suspension()).result()

    call = await_once if operation == "await_" else spawn_once
    with looptoken.start_loop():
        for _ in range(200):
            call()
        for _ in range(calls):
            call()


def instructions(operation: str, mode: str, calls: int, outdir: Path) -> int:
    """The instruction total of one child run under callgrind."""
    out = outdir / f"{operation}-{mode}-{calls}.out"
    with tempfile.TemporaryDirectory(prefix="bench-tasks-") as status:
        subprocess.run(
            [
                *("valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"),
                *(sys.executable, __file__, "--child", operation, "--mode", mode),
                *("--calls", str(calls), "--status-dir", os.path.join(status, "s")),
            ],
            check=True,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    for line in out.read_text().splitlines():
        if line.startswith(("totals:", "summary:")):
            return int(line.split()[1])
    raise RuntimeError(f"no totals in {out}")


def main() -> None:
    """Parse the arguments; run as the parent (a Markdown table) or as a child."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls per run")
    parser.add_argument("--child", choices=OPERATIONS, help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--calls", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--status-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.mode == "on", args.calls, args.status_dir)
        return
    low, high = (300, 1300) if args.quick else (500, 2500)
    repeats = 2 if args.quick else 3
    print(
        f"Python {platform.python_version()}, uvloop; {low} and {high} calls per run, "
        f"{repeats} runs of each, modes alternating.\n"
    )
    print("| operation | notes on, instructions/call | notes off | on / off, median (min-max) |")
    print("|---|---:|---:|---:|")
    verdicts = []
    with tempfile.TemporaryDirectory(prefix="bench-tasks-out-") as tmp:
        for operation in OPERATIONS:
            per_call: dict[str, list[float]] = {mode: [] for mode in MODES}
            for _ in range(repeats):
                for mode in MODES:
                    high_total = instructions(operation, mode, high, Path(tmp))
                    low_total = instructions(operation, mode, low, Path(tmp))
                    per_call[mode].append((high_total - low_total) / (high - low))
            ratios = sorted(
                on / off for on, off in zip(per_call["on"], per_call["off"], strict=True)
            )
            ratio = statistics.median(ratios)
            verdicts.append((operation, ratio))
            print(
                f"| `{operation}` | {statistics.median(per_call['on']):,.0f} "
                f"| {statistics.median(per_call['off']):,.0f} "
                f"| {ratio:.3f} ({ratios[0]:.3f}-{ratios[-1]:.3f}) |"
            )
    print()
    for operation, ratio in verdicts:
        verdict = "PASS" if ratio < 1.05 else "FAIL"
        print(f"- {verdict}: `{operation}` with notes under 5% more: {100 * (ratio - 1):+.1f}%")


if __name__ == "__main__":
    main()

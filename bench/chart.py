"""Charts of the benchmarks' figures, for docs/benchmarks.md.

Run it from the repository root after the benchmarks wrote their JSON
(``make bench`` does both)::

    .venv/bin/python bench/bench_await.py --json bench/results/bench_await.json
    .venv/bin/python bench/bench_e2e.py --json bench/results/bench_e2e.json
    .venv/bin/python bench/chart.py

It reads ``bench/results/bench_await.json`` and ``bench/results/bench_e2e.json``
(and ``bench_scaling.json``, with ``bench_scaling_greenlets.json`` where
it exists) and writes ``docs/bench-await.png`` (µs per call by contender, 1 and 8
callers, asyncio and uvloop, on a log scale since ``async_to_sync`` costs
about ten times ``await_``) and ``docs/bench-e2e.png`` (end-to-end requests
per second and p99 latency by contender, aiohttp and httpx clients) and
``docs/bench-scaling.png`` (p99 against callers, per backend and kind of
caller). The titles name the run's machine, versions and date, from the
JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from matplotlib import ticker
from matplotlib.axes import Axes
from matplotlib.figure import Figure  # no pyplot: files only, no GUI backend

ROOT = Path(__file__).resolve().parents[1]
COLORS = {"1": "#4c72b0", "8": "#dd8452", "rps": "#55a868", "p99": "#c44e52"}
HIGHLIGHT = "#222222"  # looptoken's own rows get a bold label


def plain(label: str) -> str:
    """A Markdown label without its backticks."""
    return label.replace("`", "")


def versions_line(data: dict[str, Any], names: tuple[str, ...]) -> str:
    """'Python 3.11.7, Django 5.2.19, ...' from a results file."""
    versions = data["versions"]
    return ", ".join([f"Python {data['python']}"] + [f"{n} {versions[n]}" for n in names])


def rounds(count: int) -> str:
    """'1 round', '4 rounds'."""
    return f"{count} round{'s' if count != 1 else ''}"


def bold_ours(ax: Axes, ours: list[bool]) -> None:
    """Bold the y tick labels of django-looptoken's own contenders."""
    for tick, mine in zip(ax.get_yticklabels(), ours, strict=True):
        if mine:
            tick.set_fontweight("bold")
            tick.set_color(HIGHLIGHT)


def await_chart(data: dict[str, Any], out: Path) -> None:
    """Two panels (asyncio, uvloop): µs per call, 1 and 8 callers, log scale."""
    backends = data["backends"]
    fig = Figure(figsize=(7 * len(backends), 4.8))
    axes = fig.subplots(1, len(backends), squeeze=False, sharex=True)  # comparable scales
    for ax, (backend, figures) in zip(axes[0], backends.items(), strict=True):
        contenders = figures["contenders"]
        rows = range(len(contenders))
        height = 0.38
        for offset, callers in ((-height / 2, "1"), (height / 2, "8")):
            values = [c["us_per_call"][callers] for c in contenders]
            bars = ax.barh(
                [r + offset for r in rows],
                values,
                height,
                color=COLORS[callers],
                label=f"{callers} caller{'s' if callers != '1' else ''}",
            )
            ax.bar_label(bars, fmt="{:,.0f}", padding=2, fontsize=7)
        ax.set_yticks(list(rows), [plain(c["label"]) for c in contenders], fontsize=8)
        bold_ours(ax, [c["key"] == "await_" for c in contenders])
        ax.invert_yaxis()
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(ticker.LogLocator(subs=(1, 2, 5)))
        ax.xaxis.set_major_formatter(ticker.StrMethodFormatter("{x:,.0f}"))
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        ax.set_xlabel("µs per call (log scale; lower is better)")
        ax.set_title(f"{backend} ({figures['loop']})", fontsize=10)
        ax.grid(axis="x", which="both", alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
        ax.margins(x=0.15)
    quick = " (--quick smoke run)" if data.get("quick") else ""
    save(
        fig,
        "Running a trivial coroutine from sync code: µs per call, medians of "
        f"{data['rounds']} interleaved rounds{quick}; with 8 callers, wall time / all calls\n"
        + versions_line(data, ("Django", "asgiref", "uvloop", "anyio", "score.asyncio"))
        + f"; {data['cpus']} CPUs; {data['date']}",
        out,
    )


def e2e_chart(data: dict[str, Any], out: Path) -> None:
    """For each client library: req/s and p99 by contender."""
    libraries = ("aiohttp", "httpx")
    fig = Figure(figsize=(12, 7))
    axes = fig.subplots(len(libraries), 2, squeeze=False)
    for (rps_ax, p99_ax), library in zip(axes, libraries, strict=True):
        contenders = [c for c in data["contenders"] if c["library"] in (library, "")]
        contenders = [c for c in contenders if not c["key"].startswith("trivial/")]
        labels = [plain(c["label"]) for c in contenders]
        rows = list(range(len(contenders)))
        ours = [
            c["key"].split("/")[0] in {"runs_async", "async_views", "await_multiple"}
            for c in contenders
        ]
        for ax, field, color, xlabel in (
            (rps_ax, "rps", COLORS["rps"], "requests per second (higher is better)"),
            (p99_ax, "p99_ms", COLORS["p99"], "p99 latency, ms (lower is better)"),
        ):
            bars = ax.barh(rows, [c[field] for c in contenders], color=color)
            # A short --quick window can end before a slow contender's first response.
            shown = [f"{c[field]:,.0f}" if c["rps"] > 0 else "no response" for c in contenders]
            ax.bar_label(bars, shown, padding=2, fontsize=7)
            ax.set_yticks(rows, labels if ax is rps_ax else [], fontsize=8)
            ax.invert_yaxis()
            ax.set_xlabel(xlabel)
            ax.grid(axis="x", alpha=0.3)
            ax.margins(x=0.12)
        bold_ours(rps_ax, ours)
        rps_ax.set_title(f"{library} client: throughput", fontsize=10)
        p99_ax.set_title(f"{library} client: tail latency", fontsize=10)
    setup = data["setup"]
    quick = " (--quick smoke run)" if setup.get("quick") else ""
    save(
        fig,
        "Views fanning out to 10 upstream calls under gunicorn + wrk "
        f"({setup['connections']} connections, {setup['delay_s'] * 1000:g} ms upstream, "
        f"pools of {setup['pool']}; medians of {rounds(setup['rounds'])} of "
        f"{setup['seconds']} s){quick}\n"
        + versions_line(data, ("Django", "gunicorn", "aiohttp", "httpx", "uvloop"))
        + f"; {data['cpu']}, {data['cpus']} CPUs; {data['date']}",
        out,
    )


SCALING_STYLES = {  # contender: (color, line style); the app's own lines are solid
    "await_": ("#4c72b0", "-"),
    "thread": ("#4c72b0", ":"),
    "score.asyncio await_": ("#4c72b0", "--"),
    "await_multiple x10": ("#c44e52", "-"),
    "thread gather x10": ("#c44e52", ":"),
    "score.asyncio await_multiple x10": ("#c44e52", "--"),
}


def scaling_chart(reports: list[dict[str, Any]], out: Path) -> None:
    """One panel per backend and kind of caller: p99 against callers, log-log."""
    rows = 2 if len(reports) > 2 else 1  # threads above, greenlets below
    columns = -(-len(reports) // rows)
    fig = Figure(figsize=(6 * columns, 4.6 * rows))
    axes = fig.subplots(rows, columns, squeeze=False, sharey=True)
    for ax, report in zip(axes.flat, reports, strict=True):
        counts = sorted(report["figures"], key=int)
        for key, (color, style) in SCALING_STYLES.items():
            runs = [report["figures"][count].get(key) for count in counts]
            if not all(runs):
                continue  # score.asyncio only where it ran
            p99 = [sorted(run["p99_ms"] for run in runs_)[len(runs_) // 2] for runs_ in runs]
            ax.plot([int(c) for c in counts], p99, style, color=color, marker="o", label=key)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.xaxis.set_major_formatter(ticker.StrMethodFormatter("{x:,.0f}"))
        ax.yaxis.set_major_formatter(ticker.StrMethodFormatter("{x:,.0f}"))
        callers = "greenlets (gevent)" if report.get("greenlets") else "threads"
        ax.set_title(f"{report['backend']}, callers are {callers}", fontsize=10)
        ax.set_xlabel("callers at once (log scale)")
        ax.grid(which="both", alpha=0.3)
        ax.legend(fontsize=7)
    for row in axes:
        row[0].set_ylabel("p99 of a call, ms (log scale; lower is better)")
    save(
        fig,
        "Many callers at once, each calling a 0-5 ms coroutine over and over: p99 by "
        "contender (medians of interleaved rounds; bench_scaling.py)",
        out,
    )


def save(fig: Figure, title: str, out: Path) -> None:
    """Title the figure, lay it out and write it as a PNG."""
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main(argv: list[str] | None = None) -> int:
    """Read the results JSON and write the PNGs."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    args = parser.parse_args(argv)
    charts = (
        ("bench_await.json", "bench-await.png", await_chart),
        ("bench_e2e.json", "bench-e2e.png", e2e_chart),
    )
    for source, target, draw in charts:
        path = args.results / source
        if not path.exists():
            print(f"{path} is missing: run its benchmark with --json {path}", file=sys.stderr)
            return 1
        draw(json.loads(path.read_text()), args.out / target)
        print(f"wrote {args.out / target}")
    # Threads, then greenlets where bench_scaling.py --greenlets ran too.
    scaling = [args.results / "bench_scaling.json", args.results / "bench_scaling_greenlets.json"]
    if not scaling[0].exists():
        print(
            f"{scaling[0]} is missing: run bench_scaling.py --json {scaling[0]}", file=sys.stderr
        )
        return 1
    reports = [
        report for path in scaling if path.exists() for report in json.loads(path.read_text())
    ]
    scaling_chart(reports, args.out / "bench-scaling.png")
    print(f"wrote {args.out / 'bench-scaling.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The bench chart: requests per second with the goals drawn in, and latencies.

Drawn with matplotlib's object API on the Agg canvas — no pyplot, no GUI, no
global state — so it works headless and inside tests.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from polyport.core.errors import MissingExtra

if TYPE_CHECKING:
    from polyport.bench.report import BenchReport

_COLOURS = {"polyport": "#2a6fdb", "fastapi": "#059669", "starlette": "#b45309"}


def draw_chart(report: BenchReport, path: Path) -> None:
    """Write ``report`` as a PNG: throughput (with goal lines) beside p50/p99 latency."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise MissingExtra("bench", "the benchmark lab") from exc

    from polyport.bench.report import GOAL_VS_FASTAPI, GOAL_VS_STARLETTE, TIMES

    targets = report.targets
    labels = [t.label for t in targets]
    colours = [_COLOURS.get(t.name, "#6b7280") for t in targets]
    figure = Figure(figsize=(11, 4.8), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    rate_axes, latency_axes = figure.subplots(1, 2, width_ratios=[3, 2])

    rates = [t.requests_per_second for t in targets]
    # Bars in front of the goal lines, so the lines never cross the figures written on them.
    bars = rate_axes.bar(labels, rates, color=colours, zorder=3)
    for bar, target in zip(bars, targets, strict=True):
        note = f"{target.requests_per_second:,.0f}"
        if target.ratio_vs_fastapi is not None and target.name != "fastapi":
            note += f"\n{target.ratio_vs_fastapi:.2f}{TIMES} FastAPI"
        rate_axes.annotate(
            note,
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            xytext=(0, -4),
            textcoords="offset points",
            ha="center",
            va="top",
            fontsize=9,
            color="white",
            fontweight="bold",
            zorder=4,
        )
    goals = []
    for name, factor in (("fastapi", GOAL_VS_FASTAPI), ("starlette", GOAL_VS_STARLETTE)):
        baseline = next((t for t in targets if t.name == name), None)
        if baseline is not None:
            level = baseline.requests_per_second * factor
            goals.append(level)
            rate_axes.axhline(
                level,
                color=_COLOURS[name],
                linestyle="--",
                linewidth=1,
                zorder=2,
                label=f"goal: {factor:g}{TIMES} {baseline.label}",
            )
    rate_axes.set_ylim(0, max([*rates, *goals, 1.0]) * 1.22)
    rate_axes.set_ylabel("requests / s (higher is better)")
    rate_axes.set_title("Throughput")
    if goals:
        rate_axes.legend(loc="upper right", fontsize=8)

    width = 0.38
    positions = range(len(targets))
    latency_axes.bar(
        [p - width / 2 for p in positions],
        [t.p50_ms for t in targets],
        width,
        color=colours,
        alpha=0.55,
        label="p50",
    )
    latency_axes.bar(
        [p + width / 2 for p in positions],
        [t.p99_ms for t in targets],
        width,
        color=colours,
        label="p99",
    )
    latency_axes.set_xticks(list(positions), labels)
    latency_axes.set_ylabel("ms (lower is better)")
    latency_axes.set_title("Latency: p50 (light) and p99")

    verdict = "PASS" if report.goal_met else "MISS"
    figure.suptitle(
        f"polyport bench {report.bench}: {report.request} — {report.generator}, "
        f"{report.connections} connections, {report.duration:g} s per target, "
        f"{report.machine.get('cpu_count')} cores · goal {verdict}",
        fontsize=11,
    )
    figure.savefig(path)

"""The real-time bench chart: fan-out with its goal, latency with its bound, idle memory.

Drawn like :mod:`polyport.bench.chart`, with matplotlib's object API on the
Agg canvas — headless, no global state.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from polyport.core.errors import MissingExtra

if TYPE_CHECKING:
    from polyport.bench.realtime_report import RealtimeFigures, RealtimeReport

_COLOURS = {"polyport": "#2a6fdb", "websockets": "#059669", "sse-starlette": "#b45309"}


def draw_realtime_chart(report: RealtimeReport, path: Path) -> None:
    """Write ``report`` as a PNG of three panels: fan-out, latency and memory per connection."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise MissingExtra("bench", "the benchmark lab") from exc

    from polyport.bench.realtime_report import GOAL_FANOUT, GOAL_P50_MS
    from polyport.bench.report import TIMES

    targets = report.targets
    figure = Figure(figsize=(12, 4.6), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    fanout_axes, latency_axes, memory_axes = figure.subplots(1, 3, width_ratios=[3, 3, 2])

    _bars(fanout_axes, targets, lambda t: t.fanout_deliveries_per_second, "{:,.0f}")
    baseline = report.baseline
    if baseline is not None and baseline.fanout_deliveries_per_second:
        fanout_axes.axhline(
            baseline.fanout_deliveries_per_second * GOAL_FANOUT,
            color=_COLOURS.get(baseline.name, "#6b7280"),
            linestyle="--",
            linewidth=1,
            zorder=2,
            label=f"goal: {GOAL_FANOUT:g}{TIMES} {baseline.label}",
        )
        fanout_axes.legend(loc="upper right", fontsize=8)
    fanout_axes.set_ylabel("deliveries / s (higher is better)")
    options = report.options
    fanout_axes.set_title(
        f"Fan-out: {options['clients']:,} clients {TIMES} {options['messages']:,} messages"
    )

    width = 0.38
    positions = list(range(len(targets)))
    colours = [_COLOURS.get(t.name, "#6b7280") for t in targets]
    latency_axes.bar(
        [p - width / 2 for p in positions],
        [t.latency_p50_us or 0.0 for t in targets],
        width,
        color=colours,
        alpha=0.55,
        label="p50",
    )
    latency_axes.bar(
        [p + width / 2 for p in positions],
        [t.latency_p99_us or 0.0 for t in targets],
        width,
        color=colours,
        label="p99",
    )
    latency_axes.axhline(
        GOAL_P50_MS * 1000, color="#dc2626", linestyle="--", linewidth=1, label="p50 goal"
    )
    latency_axes.set_yscale("log")
    latency_axes.set_xticks(positions, [t.label for t in targets])
    latency_axes.set_ylabel("µs, log scale (lower is better)")
    latency_axes.set_title("publish→receive: p50 (light), p99")
    latency_axes.legend(loc="upper right", fontsize=8)
    _unavailable(latency_axes, targets)

    _bars(memory_axes, targets, lambda t: t.idle_kib_per_connection, "{:.1f}")
    memory_axes.set_ylabel("KiB per connection (lower is better)")
    memory_axes.set_title(f"Memory: {report.options['idle']:,} idle connections")

    met = report.goal_met
    verdict = "not measured" if met is None else ("PASS" if met else "MISS")
    figure.suptitle(
        f"polyport bench {report.bench}: {report.transport.name} against "
        f"{report.transport.baseline_label}, {report.machine.get('cpu_count')} cores · "
        f"goal {verdict}",
        fontsize=11,
    )
    figure.savefig(path)


def _bars(
    axes: Any,
    targets: list[RealtimeFigures],
    value: Callable[[RealtimeFigures], float | None],
    style: str,
) -> None:
    """One bar per target, its figure written on it; an unavailable target says so."""
    values = [value(t) or 0.0 for t in targets]
    colours = [_COLOURS.get(t.name, "#6b7280") for t in targets]
    bars = axes.bar([t.label for t in targets], values, color=colours, zorder=3)
    for bar, shown in zip(bars, values, strict=True):
        if shown:
            axes.annotate(
                style.format(shown),
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                xytext=(0, 3),
                textcoords="offset points",
                ha="center",
                va="bottom",
                fontsize=9,
            )
    axes.set_ylim(0, max([*values, 1.0]) * 1.2)
    _unavailable(axes, targets)


def _unavailable(axes: Any, targets: list[RealtimeFigures]) -> None:
    for position, target in enumerate(targets):
        if not target.available:
            axes.annotate(
                "not available",
                (position, 0),
                xycoords=("data", "axes fraction"),  # at the bottom, on any scale
                xytext=(0, 6),
                textcoords="offset points",
                ha="center",
                va="bottom",
                fontsize=9,
                color="#6b7280",
                rotation=90,
            )

"""The cluster bench chart: deliveries/s and cross-node p99 per engine and node count.

Drawn like :mod:`polyport.bench.chart`, with matplotlib's object API on the
Agg canvas — headless, no global state.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from polyport.core.errors import MissingExtra

if TYPE_CHECKING:
    from polyport.bench.cluster_report import ClusterReport

_COLOURS = {"polyport": "#2a6fdb", "bare": "#6b7280"}


def draw_cluster_chart(report: ClusterReport, path: Path) -> None:
    """Write ``report`` as a PNG: delivered/s (polyport beside the bare client), then p99."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise MissingExtra("bench", "the benchmark lab") from exc

    from polyport.bench.cluster_report import GOAL_P99_MS, TARGETS, headline_p99

    cases = report.cases
    labels = [f"{c.engine}\n{c.nodes} node{'s' if c.nodes > 1 else ''}" for c in cases]
    positions = list(range(len(cases)))
    width = 0.38
    figure = Figure(figsize=(max(8.0, 1.1 * len(cases) + 2), 7.5), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    rate_axes, latency_axes = figure.subplots(2, 1)

    for shift, target in ((-width / 2, "polyport"), (width / 2, "bare")):
        rates = [c.median(target, lambda r: r.delivered_per_second) or 0.0 for c in cases]
        bars = rate_axes.bar(
            [p + shift for p in positions],
            rates,
            width,
            color=_COLOURS[target],
            label=TARGETS[target],
            zorder=3,
        )
        for bar, rate in zip(bars, rates, strict=True):
            if rate:
                rate_axes.annotate(
                    f"{rate:,.0f}",
                    (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    xytext=(0, 2),
                    textcoords="offset points",
                    ha="center",
                    va="bottom",
                    fontsize=7,
                )
        p99s = [c.median(target, headline_p99) or 0.0 for c in cases]
        latency_axes.bar(
            [p + shift for p in positions],
            p99s,
            width,
            color=_COLOURS[target],
            label=TARGETS[target],
            zorder=3,
        )
    rate_axes.set_xticks(positions, labels, fontsize=8)
    rate_axes.set_ylabel("deliveries / s, every subscriber (higher is better)")
    rate_axes.set_title(f"publish→deliver at {report.options['rate']:,.0f} events/s offered")
    rate_axes.legend(loc="upper left", fontsize=8)

    latency_axes.axhline(GOAL_P99_MS, color="#dc2626", linestyle="--", linewidth=1, label="goal")
    latency_axes.set_yscale("log")
    latency_axes.set_xticks(positions, labels, fontsize=8)
    latency_axes.set_ylabel("p99 ms, log scale (lower is better)")
    latency_axes.set_title("p99 publish→deliver: cross-node (local with one node)")
    latency_axes.legend(loc="upper left", fontsize=8)

    met = report.goal_met
    verdict = "not measured" if met is None else ("PASS" if met else "MISS")
    figure.suptitle(
        f"polyport bench cluster: polyport's nodes against each engine's own client, "
        f"{report.machine.get('cpu_count')} cores · goals {verdict}",
        fontsize=11,
    )
    figure.savefig(path)

"""The RPC bench chart: calls/s and bytes per call for each pattern, and the event streams.

Drawn with matplotlib's object API on the Agg canvas, as the REST chart is.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from polyport.core.errors import MissingExtra

if TYPE_CHECKING:
    from polyport.bench.rpc_calls import Payload
    from polyport.bench.rpc_report import RpcReport

_COLOURS = {"user": "#2a6fdb", "list": "#b45309"}


def draw_rpc_chart(report: RpcReport, path: Path) -> None:
    """Write ``report`` as a PNG: calls/s, wire bytes per call, and stream events/s."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise MissingExtra("bench", "the benchmark lab") from exc

    from polyport.bench.rpc_calls import PAYLOADS
    from polyport.bench.rpc_report import GOAL_EVENTS_PER_SECOND

    labels = list(dict.fromkeys(c.label for c in report.calls))
    figure = Figure(figsize=(15, 5.2), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    rate_axes, wire_axes, stream_axes = figure.subplots(1, 3, width_ratios=[5, 5, 4])

    width = 0.4
    bars: tuple[tuple[float, Payload], ...] = ((-width / 2, "user"), (width / 2, "list"))
    for offset, payload in bars:
        rates, sizes = [], []
        for label in labels:
            call = next(
                (c for c in report.calls if c.label == label and c.payload == payload), None
            )
            rates.append(call.calls_per_second if call else 0.0)
            sizes.append(call.wire.total if call and call.wire else 0.0)
        positions = [i + offset for i in range(len(labels))]
        colour = _COLOURS[payload]
        rate_axes.bar(positions, rates, width, color=colour, label=PAYLOADS[payload], zorder=3)
        wire_axes.bar(positions, sizes, width, color=colour, label=PAYLOADS[payload], zorder=3)
    for axes in (rate_axes, wire_axes):
        axes.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
        axes.legend(fontsize=8)
        axes.grid(axis="y", alpha=0.3, zorder=0)
    rate_axes.set_ylabel("calls / s (higher is better)")
    rate_axes.set_title("Throughput per pattern")
    wire_axes.set_yscale("log")
    wire_axes.set_ylabel("bytes per call, request + response (log)")
    wire_axes.set_title("Bytes on the wire")

    streams = report.streams
    rates = [s.events_per_second for s in streams]
    colours = ["#2a6fdb" if s.target == "polyport" else "#6b7280" for s in streams]
    stream_axes.bar(range(len(streams)), rates, color=colours, zorder=3)
    stream_axes.axhline(
        GOAL_EVENTS_PER_SECOND,
        color="#059669",
        linestyle="--",
        linewidth=1,
        zorder=2,
        label=f"goal: {GOAL_EVENTS_PER_SECOND:,.0f} events/s",
    )
    stream_axes.set_xticks(
        range(len(streams)), [s.label for s in streams], rotation=30, ha="right", fontsize=8
    )
    stream_axes.set_ylim(0, max([*rates, GOAL_EVENTS_PER_SECOND]) * 1.15)
    stream_axes.set_ylabel("events / s to one subscriber")
    stream_axes.set_title("gRPC server streams")
    stream_axes.legend(fontsize=8)
    stream_axes.grid(axis="y", alpha=0.3, zorder=0)

    verdicts = ["PASS" if g.met else "MISS" if g.met is False else "—" for g in report.goals()]
    figure.suptitle(
        f"polyport bench rpc — {report.options['connections']} in flight, "
        f"{report.options['duration']:g} s per call, {report.machine.get('cpu_count')} cores · "
        f"goals: {' '.join(verdicts)}",
        fontsize=11,
    )
    figure.savefig(path)

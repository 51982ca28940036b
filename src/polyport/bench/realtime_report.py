"""A real-time bench's results: the table, the goal lines, the JSON file and the chart.

As in the REST bench, the signal is the ratio: polyport's figures over the
bare library's, both measured in the same run on the same machine.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from rich import box
from rich.table import Table

from polyport.bench.report import TIMES, write_results

#: polyport's fan-out against the bare library's, and the p50 publish→receive bound.
GOAL_FANOUT = 1.0
GOAL_P50_MS = 1.0


@dataclass(frozen=True, slots=True)
class Transport:
    """One real-time bench: its transport, its baseline and what the issue and the guide claim."""

    bench: str  # "ws" or "sse": the command, the client kind and the file names
    name: str  # "WebSocket"
    baseline: str  # the baseline target's name
    baseline_label: str  # how the goal line names the baseline
    claims: dict[str, str]
    #: The one-client stream is a goal too (the issue: "its SSE stream >= 1.0x sse-starlette").
    stream_goal: bool = False


@dataclass(slots=True)
class RealtimeFigures:
    """One target's figures; ``None`` where a phase was not measured (see ``errors``)."""

    name: str
    label: str
    available: bool = True
    reason: str | None = None  # why it is not available
    # publish→receive, one subscriber, messages published at a modest fixed rate
    latency_samples: int | None = None
    latency_p50_us: float | None = None
    latency_p99_us: float | None = None
    latency_mean_us: float | None = None
    latency_max_us: float | None = None
    # server RSS growth for idle subscribed connections
    idle_connections: int | None = None
    idle_rss_before_kib: float | None = None
    idle_rss_after_kib: float | None = None
    idle_kib_per_connection: float | None = None
    # one subscriber, messages published back to back
    stream_messages: int | None = None
    stream_received: int | None = None
    stream_seconds: float | None = None
    stream_events_per_second: float | None = None
    # every subscriber receives every broadcast message
    fanout_clients: int | None = None
    fanout_messages: int | None = None
    fanout_deliveries: int | None = None  # received, the primer excluded
    fanout_complete_clients: int | None = None
    fanout_seconds: float | None = None  # first publish to last delivery at the last client
    fanout_publish_seconds: float | None = None  # first publish to last publish
    fanout_deliveries_per_second: float | None = None
    fanout_server_cpu_share: float | None = None  # of one core, over that window
    fanout_client_cpu_share: float | None = None  # every client process together, likewise
    wire_bytes_per_message: float | None = None  # as the fan-out clients read them
    errors: dict[str, str] = field(default_factory=dict)
    ratio_fanout: float | None = None
    ratio_stream: float | None = None
    ratio_memory: float | None = None
    ratio_latency_p50: float | None = None


@dataclass(slots=True)
class RealtimeReport:
    """Everything one ``polyport bench ws`` or ``sse`` run measured, and how."""

    transport: Transport
    options: dict[str, Any]
    started: datetime
    machine: dict[str, Any]
    targets: list[RealtimeFigures]

    def __post_init__(self) -> None:
        base = self.baseline
        for t in self.targets:
            if base is None or not t.available:
                continue
            t.ratio_fanout = _ratio(
                t.fanout_deliveries_per_second, base.fanout_deliveries_per_second
            )
            t.ratio_stream = _ratio(t.stream_events_per_second, base.stream_events_per_second)
            t.ratio_memory = _ratio(t.idle_kib_per_connection, base.idle_kib_per_connection)
            t.ratio_latency_p50 = _ratio(t.latency_p50_us, base.latency_p50_us)

    @property
    def bench(self) -> str:
        return self.transport.bench

    @property
    def baseline(self) -> RealtimeFigures | None:
        base = self.target(self.transport.baseline)
        return base if base is not None and base.available else None

    def target(self, name: str) -> RealtimeFigures | None:
        return next((t for t in self.targets if t.name == name), None)

    # -- goals ------------------------------------------------------------------------------

    @property
    def fanout_goal_met(self) -> bool | None:
        """polyport's fan-out is at least GOAL_FANOUT times the baseline's; None if unmeasured."""
        polyport = self.target("polyport")
        ratio = None if polyport is None else polyport.ratio_fanout
        return None if ratio is None else ratio >= GOAL_FANOUT

    @property
    def stream_goal_met(self) -> bool | None:
        """With ``stream_goal``: polyport's one-client stream at least the baseline's."""
        if not self.transport.stream_goal:
            return True
        polyport = self.target("polyport")
        ratio = None if polyport is None else polyport.ratio_stream
        return None if ratio is None else ratio >= GOAL_FANOUT

    @property
    def latency_goal_met(self) -> bool | None:
        polyport = self.target("polyport")
        p50 = None if polyport is None else polyport.latency_p50_us
        return None if p50 is None else p50 < GOAL_P50_MS * 1000

    @property
    def goal_met(self) -> bool | None:
        goals = (self.fanout_goal_met, self.stream_goal_met, self.latency_goal_met)
        if False in goals:
            return False  # one known miss is a miss, whatever was not measured
        return None if None in goals else True

    def goal_lines(self) -> list[str]:
        polyport = self.target("polyport")
        ratio = None if polyport is None else polyport.ratio_fanout
        fanout = (
            f"Goal: polyport {self.transport.name} fan-out ≥ {GOAL_FANOUT:.1f}{TIMES} "
            f"{self.transport.baseline_label} — {_verdict(self.fanout_goal_met)}"
        )
        if ratio is not None:
            fanout += f" (measured {ratio:.2f}{TIMES})"
        p50s = ", ".join(
            f"{t.label} {t.latency_p50_us / 1000:.3f} ms"
            for t in self.targets
            if t.latency_p50_us is not None
        )
        latency = (
            f"Goal: p50 publish→receive < {GOAL_P50_MS:g} ms — "
            f"{_verdict(self.latency_goal_met)}" + (f" (measured {p50s})" if p50s else "")
        )
        lines = [fanout]
        if self.transport.stream_goal:
            stream_ratio = None if polyport is None else polyport.ratio_stream
            stream = (
                f"Goal: polyport {self.transport.name} stream to one client ≥ "
                f"{GOAL_FANOUT:.1f}{TIMES} {self.transport.baseline_label} — "
                f"{_verdict(self.stream_goal_met)}"
            )
            if stream_ratio is not None:
                stream += f" (measured {stream_ratio:.2f}{TIMES})"
            lines.append(stream)
        return [*lines, latency]

    def notes(self) -> list[str]:
        """Why a target or a phase is missing, and what the issue and the guide claim."""
        lines = []
        for t in self.targets:
            if not t.available:
                lines.append(f"{t.label}: not available: {t.reason}")
            lines.extend(f"{t.label}, {phase}: {error}" for phase, error in t.errors.items())
        return lines

    # -- shown ------------------------------------------------------------------------------

    def table(self) -> Table:
        o = self.options
        table = Table(
            box=box.SIMPLE_HEAD,
            show_edge=False,
            padding=(0, 0, 0, 1),
            title=f"{self.transport.name}: publish→receive ({o['latency_samples']:,} messages), "
            f"fan-out ({o['clients']:,} clients {TIMES} {o['messages']:,} messages of "
            f"{o['size']} B), 1 client ({o['stream_messages']:,} messages), "
            f"{o['idle']:,} idle connections",
            caption=f"{TIMES}: against {self.transport.baseline}, same run · "
            "KiB/conn: server RSS per idle connection",
        )
        table.add_column("target", style="bold", no_wrap=True)
        for heading in (
            "p50 µs",
            "p99 µs",
            "fan-out/s",
            TIMES,
            "1-client/s",
            TIMES,
            "KiB/conn",
        ):
            table.add_column(heading, justify="right", no_wrap=True)
        for t in self.targets:
            if not t.available:
                table.add_row(t.label, *["[dim]n/a[/]"] * 7)
                continue
            table.add_row(
                t.label,
                _number(t.latency_p50_us, "{:,.0f}"),
                _number(t.latency_p99_us, "{:,.0f}"),
                _number(t.fanout_deliveries_per_second, "{:,.0f}"),
                _times(t.ratio_fanout),
                _number(t.stream_events_per_second, "{:,.0f}"),
                _times(t.ratio_stream),
                _number(t.idle_kib_per_connection, "{:.1f}"),
            )
        return table

    # -- written ----------------------------------------------------------------------------

    def as_json(self) -> dict[str, Any]:
        return {
            "bench": self.bench,
            "transport": self.transport.name,
            "baseline": self.transport.baseline,
            "timestamp": self.started.isoformat(timespec="seconds"),
            "machine": self.machine,
            "options": self.options,
            "claims": self.transport.claims,
            "goal": {
                "fanout_vs_baseline": GOAL_FANOUT,
                "p50_ms_below": GOAL_P50_MS,
                "fanout_met": self.fanout_goal_met,
                "stream_met": self.stream_goal_met if self.transport.stream_goal else None,
                "latency_met": self.latency_goal_met,
                "met": self.goal_met,
            },
            "targets": [asdict(t) for t in self.targets],
        }

    def write(self, output: Path) -> tuple[Path, Path]:
        """``{ws,sse}-YYYYmmdd-HHMMSS.json`` and ``.png`` in ``output``, copied to ``-latest``."""
        from polyport.bench.realtime_chart import draw_realtime_chart

        return write_results(
            output,
            self.bench,
            self.started,
            self.as_json(),
            lambda path: draw_realtime_chart(self, path),
        )


def _ratio(value: float | None, baseline: float | None) -> float | None:
    if value is None or not baseline:
        return None
    return value / baseline


def _number(value: float | None, style: str) -> str:
    return "—" if value is None else style.format(value)


def _times(ratio: float | None) -> str:
    """A ratio in at most five characters: two decimals below 10, then one."""
    if ratio is None:
        return "—"
    return f"{ratio:.2f}{TIMES}" if ratio < 9.995 else f"{ratio:.1f}{TIMES}"


def _verdict(met: bool | None) -> str:
    if met is None:
        return "[bold yellow]NOT MEASURED[/]"
    return "[bold green]PASS[/]" if met else "[bold red]MISS[/]"

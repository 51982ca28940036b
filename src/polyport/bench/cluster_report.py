"""``polyport bench cluster``'s results: the table, the goals, the JSON file and the chart.

Each engine and node count is measured twice per round, polyport's nodes and
the engine's own client doing the bare work; a figure is the median of the
rounds, and a ratio the median of the rounds' ratios (each round measures
the pair back to back, so a round's ratio is free of the host's drift).
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from rich import box
from rich.table import Table

from polyport.bench.report import TIMES, write_results

#: The goals of issue 15: cross-node p99 under 50 ms at 5,000 events/s, and three
#: nodes delivering at least half what the engine's own client does.
GOAL_P99_MS = 50.0
GOAL_RATE = 5000.0
GOAL_VS_BARE = 0.5
GOAL_NODES = 3
#: The targets of every engine and node count, in the order shown.
TARGETS = {"polyport": "polyport", "bare": "bare client"}


@dataclass(slots=True)
class ClusterRun:
    """One run: one target on one engine with ``nodes`` nodes (or bare processes)."""

    engine: str
    target: str  # "polyport" or "bare"
    nodes: int
    round: int
    offered_per_second: float
    namespace: str = ""  # on the engine, made for this run and removed after it
    error: str | None = None  # why the run has no figures
    note: str | None = None  # what else went wrong: a stream lost, a namespace left behind
    # the publishers, every tick after the primer
    published: int = 0
    publish_errors: int = 0
    publish_error: str | None = None
    unsent: int = 0  # ticks not sent: their publisher was past its schedule's end and grace
    published_per_second: float | None = None
    behind_ms: float | None = None  # the worst pacer's lag behind its schedule
    call_p50_us: float | None = None  # publish call → acknowledged, the median publisher
    call_p99_us: float | None = None  # …and the worst publisher's p99
    # the subscribers (one per node), the measured ticks (after the warm-up)
    subscribers: int = 0
    expected: int = 0  # measured ticks acknowledged, once per subscriber
    delivered: int = 0
    lost: int = 0  # acknowledged ticks a subscriber never got (the warm-up's included)
    duplicates: int = 0
    #: Deliveries of ticks whose publish call failed (stored all the same: at least once).
    unacknowledged: int = 0
    seconds: float | None = None  # first measured publish → last measured arrival
    delivered_per_second: float | None = None  # every subscriber's deliveries together
    cross_samples: int = 0
    cross_p50_ms: float | None = None  # published on another node than the subscriber's
    cross_p99_ms: float | None = None
    cross_max_ms: float | None = None
    local_samples: int = 0
    local_p50_ms: float | None = None  # published on the subscriber's own node
    local_p99_ms: float | None = None
    cpu_seconds: float | None = None  # polyport's nodes, or the bare processes, together
    cpu_us_per_tick: float | None = None  # …per tick published


@dataclass(slots=True)
class ClusterCase:
    """One engine and node count: polyport's runs and the bare client's, round by round."""

    engine: str
    nodes: int
    polyport: list[ClusterRun]
    bare: list[ClusterRun]

    def median(self, target: str, figure: Callable[[ClusterRun], float | None]) -> float | None:
        """The median over the rounds of one figure of ``target``; None if no round has it."""
        runs = self.polyport if target == "polyport" else self.bare
        values = [v for v in map(figure, runs) if v is not None]
        return _median(values)

    @property
    def ratio(self) -> float | None:
        """polyport's deliveries/s over the bare client's: the median of the rounds' ratios."""
        ratios = [
            p.delivered_per_second / b.delivered_per_second
            for p, b in zip(self.polyport, self.bare, strict=False)
            if p.delivered_per_second and b.delivered_per_second
        ]
        return _median(ratios)

    def faults(self, target: str) -> tuple[int, int]:
        """Lost and duplicated ticks over every round of ``target``."""
        runs = self.polyport if target == "polyport" else self.bare
        return sum(r.lost for r in runs), sum(r.duplicates for r in runs)

    def errors(self) -> list[str]:
        return [
            f"{r.engine}, {r.nodes} node(s), {TARGETS[r.target]}, round {r.round + 1}: {r.error}"
            for r in (*self.polyport, *self.bare)
            if r.error
        ]


@dataclass(slots=True)
class ClusterReport:
    """Everything one ``polyport bench cluster`` run measured, and how."""

    options: dict[str, Any]
    started: datetime
    machine: dict[str, Any]
    cases: list[ClusterCase]
    servers: dict[str, str | None]  # each engine server's version, or why it is unknown

    def case(self, engine: str, nodes: int) -> ClusterCase | None:
        return next((c for c in self.cases if c.engine == engine and c.nodes == nodes), None)

    @property
    def engines(self) -> list[str]:
        return list(dict.fromkeys(c.engine for c in self.cases))

    # -- goals ------------------------------------------------------------------------------

    def latency_goal(self) -> tuple[bool | None, str]:
        """Cross-node p99 < 50 ms at 5,000 events/s, every engine with two nodes or more."""
        worst: dict[str, float] = {}
        for case in self.cases:
            p99 = case.median("polyport", lambda r: r.cross_p99_ms)
            if case.nodes >= 2 and p99 is not None:
                worst[case.engine] = max(worst.get(case.engine, 0.0), p99)
        rate = float(self.options["rate"])
        measured = ", ".join(f"{engine} {ms:.1f} ms" for engine, ms in worst.items())
        if rate < GOAL_RATE:
            return None, f"offered {rate:,.0f} events/s, under the goal's {GOAL_RATE:,.0f}" + (
                f"; measured {measured}" if measured else ""
            )
        if not worst or len(worst) < len(self.engines):
            return None, "no engine measured with two nodes or more" + (
                f"; measured {measured}" if measured else ""
            )
        met = all(ms < GOAL_P99_MS for ms in worst.values())
        return met, f"worst cross-node p99 of 2+ nodes at {rate:,.0f}/s: {measured}"

    def throughput_goal(self) -> tuple[bool | None, str]:
        """With three nodes, polyport delivers at least half the bare client's rate."""
        ratios = {e: c.ratio for e in self.engines if (c := self.case(e, GOAL_NODES))}
        measured = ", ".join(f"{e} {r:.2f}{TIMES}" for e, r in ratios.items() if r is not None)
        if not ratios or any(r is None for r in ratios.values()):
            return None, f"not measured with {GOAL_NODES} nodes on every engine" + (
                f"; measured {measured}" if measured else ""
            )
        return all(r is not None and r >= GOAL_VS_BARE for r in ratios.values()), measured

    def scaling_goal(self) -> tuple[bool | None, str]:
        """Adding a node does not lower polyport's total deliveries/s, on any engine."""
        verdicts: list[bool] = []
        parts = []
        for engine in self.engines:
            rates = [
                (c.nodes, c.median("polyport", lambda r: r.delivered_per_second))
                for c in sorted(self.cases, key=lambda c: c.nodes)
                if c.engine == engine
            ]
            known = [(n, r) for n, r in rates if r is not None]
            if len(known) < 2:
                continue
            ok = all(b[1] >= a[1] for a, b in itertools.pairwise(known))
            verdicts.append(ok)
            parts.append(f"{engine} " + " → ".join(f"{r:,.0f}" for _, r in known))
        if not verdicts:
            return None, "needs two node counts or more"
        return all(verdicts), "; ".join(parts)

    def faults_goal(self) -> tuple[bool | None, str]:
        """No tick lost or duplicated, anywhere."""
        lost = sum(c.faults("polyport")[0] for c in self.cases)
        duplicated = sum(c.faults("polyport")[1] for c in self.cases)
        bare_lost = sum(c.faults("bare")[0] for c in self.cases)
        bare_duplicated = sum(c.faults("bare")[1] for c in self.cases)
        refused = sum(r.publish_errors for c in self.cases for r in c.polyport)
        measured = any(r.error is None for c in self.cases for r in c.polyport)
        text = (
            f"polyport {lost:,} lost, {duplicated:,} duplicated; "
            f"bare clients {bare_lost:,} lost, {bare_duplicated:,} duplicated"
        )
        if refused:
            text += f"; {refused:,} polyport publish calls refused, so not owed (see the notes)"
        return (lost == 0 and duplicated == 0) if measured else None, text

    def goals(self) -> list[tuple[str, bool | None, str]]:
        return [
            (
                f"cross-node p99 < {GOAL_P99_MS:g} ms at {GOAL_RATE:,.0f} events/s",
                *self.latency_goal(),
            ),
            (
                f"aggregate delivery with {GOAL_NODES} nodes ≥ {GOAL_VS_BARE:g}{TIMES} "
                "the bare engine client's",
                *self.throughput_goal(),
            ),
            ("adding a node does not lower the total", *self.scaling_goal()),
            ("no tick lost or duplicated", *self.faults_goal()),
        ]

    @property
    def goal_met(self) -> bool | None:
        verdicts = [met for _, met, _ in self.goals()]
        if False in verdicts:
            return False
        return None if None in verdicts else True

    def goal_lines(self) -> list[str]:
        return [f"Goal: {goal} — {_verdict(met)} ({text})" for goal, met, text in self.goals()]

    def notes(self) -> list[str]:
        lines = [error for case in self.cases for error in case.errors()]
        for case in self.cases:
            for run in (*case.polyport, *case.bare):
                if run.note:
                    lines.append(
                        f"{run.engine}, {run.nodes} node(s), {TARGETS[run.target]}: {run.note}"
                    )
                if run.publish_errors:
                    lines.append(
                        f"{run.engine}, {run.nodes} node(s), {TARGETS[run.target]}: "
                        f"{run.publish_errors:,} publish calls failed ({run.publish_error})"
                    )
                offered = run.offered_per_second
                if run.published_per_second and run.published_per_second < offered * 0.95:
                    lines.append(
                        f"{run.engine}, {run.nodes} node(s), {TARGETS[run.target]}: published "
                        f"{run.published_per_second:,.0f}/s of the {offered:,.0f}/s offered "
                        f"(the pacer fell {run.behind_ms or 0:,.0f} ms behind"
                        + (f"; {run.unsent:,} ticks not sent in time" if run.unsent else "")
                        + ")"
                    )
        return lines

    # -- shown ------------------------------------------------------------------------------

    def table(self) -> Table:
        o = self.options
        table = Table(
            box=box.SIMPLE_HEAD,
            show_edge=False,
            padding=(0, 0, 0, 1),
            title=f"publish→deliver at {o['rate']:,.0f} events/s offered, {o['size']} B ticks, "
            f"{o['duration']:g} s measured after {o['warmup']:g} s, channel: {o['channels']}, "
            f"{o['repeats']} round(s)",
            caption="per s: deliveries, every subscriber's together (one a node) · "
            f"{TIMES}: polyport over the bare client, same round · p50, p99: publish→deliver "
            "ms, cross-node (local with 1 node) · lost: polyport's lost·duplicated ticks · "
            "µs/tick: polyport's node CPU per tick published",
        )
        table.add_column("engine", style="bold", no_wrap=True)
        for heading in ("nodes", "per s", TIMES, "p50", "p99", "bare/s", "bare p99", "lost"):
            table.add_column(heading, justify="right", no_wrap=True)
        table.add_column("µs/tick", justify="right", no_wrap=True, style="dim")
        for case in self.cases:
            if all(r.error for r in (*case.polyport, *case.bare)):
                table.add_row(case.engine, str(case.nodes), *["[dim]n/a[/]"] * 8)
                continue
            lost, duplicated = case.faults("polyport")
            table.add_row(
                case.engine,
                str(case.nodes),
                _number(case.median("polyport", lambda r: r.delivered_per_second), "{:,.0f}"),
                "—" if case.ratio is None else f"{case.ratio:.2f}{TIMES}",
                _number(case.median("polyport", headline_p50), "{:.1f}"),
                _number(case.median("polyport", headline_p99), "{:.1f}"),
                _number(case.median("bare", lambda r: r.delivered_per_second), "{:,.0f}"),
                _number(case.median("bare", headline_p99), "{:.1f}"),
                f"{lost:,}·{duplicated:,}" if lost or duplicated else "0",
                _number(case.median("polyport", lambda r: r.cpu_us_per_tick), "{:,.0f}"),
            )
        return table

    # -- written ----------------------------------------------------------------------------

    def as_json(self) -> dict[str, Any]:
        return {
            "bench": "cluster",
            "timestamp": self.started.isoformat(timespec="seconds"),
            "machine": self.machine,
            "servers": self.servers,
            "options": self.options,
            "goal": {
                "p99_ms_below": GOAL_P99_MS,
                "at_rate": GOAL_RATE,
                "vs_bare_with_nodes": [GOAL_VS_BARE, GOAL_NODES],
                "verdicts": {
                    goal: {"met": met, "measured": text} for goal, met, text in self.goals()
                },
                "met": self.goal_met,
            },
            "cases": [
                {
                    "engine": c.engine,
                    "nodes": c.nodes,
                    "ratio_vs_bare": c.ratio,
                    "polyport": _summary(c, "polyport"),
                    "bare": _summary(c, "bare"),
                    "runs": [asdict(r) for r in (*c.polyport, *c.bare)],
                }
                for c in self.cases
            ],
        }

    def write(self, output: Path) -> tuple[Path, Path]:
        """``cluster-YYYYmmdd-HHMMSS.json`` and ``.png`` in ``output``, copied to ``-latest``."""
        from polyport.bench.cluster_chart import draw_cluster_chart

        return write_results(
            output, "cluster", self.started, self.as_json(), lambda p: draw_cluster_chart(self, p)
        )


def headline_p50(run: ClusterRun) -> float | None:
    """The cross-node p50, or the local one where there is no other node."""
    return run.cross_p50_ms if run.cross_samples else run.local_p50_ms


def headline_p99(run: ClusterRun) -> float | None:
    return run.cross_p99_ms if run.cross_samples else run.local_p99_ms


def _summary(case: ClusterCase, target: str) -> dict[str, Any]:
    """The medians over the rounds of one target's headline figures."""
    lost, duplicated = case.faults(target)
    return {
        "delivered_per_second": case.median(target, lambda r: r.delivered_per_second),
        "p50_ms": case.median(target, headline_p50),
        "p99_ms": case.median(target, headline_p99),
        "cross_p99_ms": case.median(target, lambda r: r.cross_p99_ms),
        "local_p99_ms": case.median(target, lambda r: r.local_p99_ms),
        "cpu_us_per_tick": case.median(target, lambda r: r.cpu_us_per_tick),
        "lost": lost,
        "duplicates": duplicated,
    }


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _number(value: float | None, style: str) -> str:
    return "—" if value is None else style.format(value)


def _verdict(met: bool | None) -> str:
    if met is None:
        return "[bold yellow]NOT MEASURED[/]"
    return "[bold green]PASS[/]" if met else "[bold red]MISS[/]"

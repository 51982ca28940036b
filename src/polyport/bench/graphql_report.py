"""The GraphQL bench's results: figures per target and query, goals, JSON and Markdown.

Written as ``graphql-YYYYmmdd-HHMMSS.json`` and ``.md`` in the output folder,
both copied to ``graphql-latest.json`` / ``.md``.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from rich import box
from rich.table import Table

from polyport.bench.report import TIMES

#: The issue's goals on the simple query: requests/s, and the ratio against Strawberry.
GOAL_RPS = 8_000.0
GOAL_VS_STRAWBERRY = 5.0
#: The baseline with Strawberry's parser and validation caches (no goal is set against it).
CACHED = "strawberry-cached"


@dataclass(frozen=True, slots=True)
class CaseFigures:
    """One target on one query: the run of median throughput, and every run's rate."""

    target: str
    label: str
    case: str
    requests: int
    errors: int
    seconds: float
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    server_cpu_seconds: float | None
    server_cpu_share: float | None  # of one core, during the run
    cpu_us_per_request: float | None
    runs: list[float] = field(default_factory=list)


@dataclass(slots=True)
class GraphQLReport:
    """Everything one ``polyport bench graphql`` run measured."""

    queries: dict[str, str]
    targets: dict[str, str]  # name: label, in measuring order
    generator: str
    generator_version: str
    duration: float
    warmup: float
    connections: int
    repeats: int
    started: datetime
    machine: dict[str, Any]
    figures: list[CaseFigures]

    def get(self, target: str, case: str) -> CaseFigures | None:
        return next((f for f in self.figures if f.target == target and f.case == case), None)

    def ratio(self, case: str, baseline: str = "strawberry") -> float | None:
        """polyport's requests/s over ``baseline``'s on ``case`` (plain Strawberry by default)."""
        ours, theirs = self.get("polyport", case), self.get(baseline, case)
        if ours is None or theirs is None or theirs.requests_per_second <= 0:
            return None
        return ours.requests_per_second / theirs.requests_per_second

    # -- goals ----------------------------------------------------------------------------

    def goals(self) -> list[tuple[str, bool]]:
        """Each goal of the issue on the simple query, and whether it was met."""
        simple = self.get("polyport", "simple")
        rps = simple.requests_per_second if simple is not None else 0.0
        ratio = self.ratio("simple")
        return [
            (
                f"polyport ≥ {GOAL_RPS:,.0f} req/s on the simple query (measured {rps:,.0f})",
                rps >= GOAL_RPS,
            ),
            (
                f"polyport ≥ {GOAL_VS_STRAWBERRY:g}{TIMES} Strawberry on the simple query "
                f"(measured {_times(ratio)})",
                ratio is not None and ratio >= GOAL_VS_STRAWBERRY,
            ),
        ]

    def warnings(self) -> list[str]:
        return [
            f"{f.label} answered {f.errors:,} of {f.requests:,} {f.case} requests with errors"
            for f in self.figures
            if f.errors
        ]

    # -- output ---------------------------------------------------------------------------

    def table(self) -> Table:
        table = Table(
            box=box.SIMPLE_HEAD,
            caption="CPU: the server's share of one core · µs/req: server CPU per request · "
            f"{TIMES}plain, {TIMES}cache: polyport's req/s over Strawberry's (plain, cached)",
            show_edge=False,
            padding=(0, 0, 0, 0),
        )
        table.add_column("query", no_wrap=True)
        table.add_column("target", no_wrap=True)
        for heading in ("req/s", "p50 ms", "p99 ms", "errors", "CPU", "µs/req"):
            table.add_column(heading, justify="right", no_wrap=True)
        table.add_column(f"{TIMES}plain", justify="right", no_wrap=True)
        table.add_column(f"{TIMES}cache", justify="right", no_wrap=True)
        for row in self.rows():
            table.add_row(*row)
        return table

    def rows(self) -> list[list[str]]:
        rows = []
        for case in self.queries:
            for target in self.targets:
                f = self.get(target, case)
                if f is None:
                    continue
                rows.append(
                    [
                        case,
                        f.label,
                        f"{f.requests_per_second:,.0f}",
                        _ms(f.p50_ms),
                        _ms(f.p99_ms),
                        f"{f.errors:,}",
                        "—" if f.server_cpu_share is None else f"{f.server_cpu_share:.0%}",
                        "—" if f.cpu_us_per_request is None else f"{f.cpu_us_per_request:.0f}",
                        _times(self.ratio(case)) if target == "polyport" else "",
                        _times(self.ratio(case, CACHED)) if target == "polyport" else "",
                    ]
                )
        return rows

    def markdown(self) -> str:
        """The run as Markdown: what was measured, the table, the goals."""
        machine = self.machine
        lines = [
            f"# polyport bench graphql — {self.started.isoformat(timespec='seconds')}",
            "",
            f"{self.connections} connections, {self.warmup:g} s warm-up + {self.duration:g} s "
            f"per query and target, {self.repeats} round(s) (median run shown); "
            f"load generator {self.generator} ({self.generator_version}); "
            f"{machine.get('cpu_count', '?')} CPUs ({machine.get('cpu_model', '?')}), "
            f"1-minute load average {machine.get('load_average_1m', '?')} before the run.",
            "",
        ]
        lines += [f"* `{case}`: `{query}`" for case, query in self.queries.items()]
        headings = ["query", "target", "req/s", "p50 ms", "p99 ms", "errors", "CPU", "µs/req"]
        headings += ["vs Strawberry", "vs Strawberry+caches"]
        lines += ["", "| " + " | ".join(headings) + " |", "|" + "---|" * len(headings)]
        lines += ["| " + " | ".join(row) + " |" for row in self.rows()]
        lines.append("")
        lines += [f"* {'PASS' if met else 'MISS'}: {goal}" for goal, met in self.goals()]
        return "\n".join(lines) + "\n"

    def as_json(self) -> dict[str, Any]:
        return {
            "bench": "graphql",
            "timestamp": self.started.isoformat(timespec="seconds"),
            "machine": self.machine,
            "generator": self.generator,
            "generator_version": self.generator_version,
            "duration": self.duration,
            "warmup": self.warmup,
            "connections": self.connections,
            "repeats": self.repeats,
            "queries": self.queries,
            "targets": self.targets,
            "results": [asdict(f) for f in self.figures],
            "ratios_vs_strawberry": {case: self.ratio(case) for case in self.queries},
            "ratios_vs_strawberry_cached": {
                case: self.ratio(case, CACHED) for case in self.queries
            },
            "goals": [{"goal": goal, "met": met} for goal, met in self.goals()],
        }

    def write(self, output: Path) -> tuple[Path, Path]:
        """The JSON and Markdown files of this run (and their ``-latest`` copies)."""
        output.mkdir(parents=True, exist_ok=True)
        stem = f"graphql-{self.started.strftime('%Y%m%d-%H%M%S')}"
        json_path, md_path = output / f"{stem}.json", output / f"{stem}.md"
        json_path.write_bytes(orjson.dumps(self.as_json(), option=orjson.OPT_INDENT_2) + b"\n")
        md_path.write_text(self.markdown(), encoding="utf-8")
        shutil.copyfile(json_path, output / "graphql-latest.json")
        shutil.copyfile(md_path, output / "graphql-latest.md")
        return json_path, md_path


def _ms(value: float) -> str:
    """Milliseconds in at most three significant digits (or whole thousands)."""
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def _times(ratio: float | None) -> str:
    return "—" if ratio is None else f"{ratio:.1f}{TIMES}"

"""A bench's results: the Rich table, the goal line, the JSON file and the chart.

Ratios are polyport's requests per second over a bare library's, both
measured in the same run: the signal that survives a noisy machine.
"""

from __future__ import annotations

import os
import platform
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import orjson
from rich import box
from rich.table import Table

#: The goals of the REST bench: polyport against the bare libraries.
GOAL_VS_FASTAPI = 2.0
GOAL_VS_STARLETTE = 0.8
#: The sign of a ratio, spelt by name so no linter mistakes it for the letter x.
TIMES = "\N{MULTIPLICATION SIGN}"


@dataclass(slots=True)
class TargetFigures:
    """One target's figures: the representative run (median requests/s) and every run's rate."""

    name: str
    label: str
    requests: int
    errors: int
    seconds: float
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    # What the server process used in the window (Linux only). Its share of one
    # core near 1.0 means the server was the bottleneck, as it should be; CPU
    # per request is the figure a busy neighbour on the machine changes least.
    server_cpu_seconds: float | None = None
    server_cpu_share: float | None = None
    cpu_us_per_request: float | None = None
    runs: list[float] = field(default_factory=list)
    ratio_vs_fastapi: float | None = None
    ratio_vs_starlette: float | None = None


@dataclass(slots=True)
class BenchReport:
    """Everything one ``polyport bench rest`` run measured, and how."""

    bench: str
    request: str
    generator: str
    generator_version: str
    duration: float
    warmup: float
    connections: int
    repeats: int
    started: datetime
    machine: dict[str, Any]
    targets: list[TargetFigures]

    def __post_init__(self) -> None:
        by_name = {t.name: t for t in self.targets}
        for target in self.targets:
            target.ratio_vs_fastapi = _ratio(target, by_name.get("fastapi"))
            target.ratio_vs_starlette = _ratio(target, by_name.get("starlette"))

    def target(self, name: str) -> TargetFigures:
        return next(t for t in self.targets if t.name == name)

    @property
    def goal_met(self) -> bool:
        polyport = self.target("polyport")
        vs_fastapi = polyport.ratio_vs_fastapi or 0.0
        vs_starlette = polyport.ratio_vs_starlette or 0.0
        return vs_fastapi >= GOAL_VS_FASTAPI and vs_starlette >= GOAL_VS_STARLETTE

    # -- shown ------------------------------------------------------------------------------

    def table(self) -> Table:
        # No vertical rules: the table stays within 80 columns, CPU columns included.
        table = Table(
            box=box.SIMPLE_HEAD,
            caption="CPU: the server's share of one core · µs/req: server CPU per request",
            show_edge=False,
            padding=(0, 0, 0, 1),
            title=f"{self.request} · {self.generator} · {self.connections} connections · "
            f"{self.duration:g} s per target",
        )
        table.add_column("target", style="bold", no_wrap=True)
        for heading in ("requests/s", "p50 ms", "p99 ms", f"{TIMES} FastAPI", f"{TIMES} Starlette"):
            table.add_column(heading, justify="right")
        table.add_column("CPU", justify="right", style="dim")
        table.add_column("µs/req", justify="right", style="dim")
        for t in self.targets:
            table.add_row(
                t.label,
                f"{t.requests_per_second:,.0f}",
                f"{t.p50_ms:.2f}",
                f"{t.p99_ms:.2f}",
                _times(t.ratio_vs_fastapi),
                _times(t.ratio_vs_starlette),
                "—" if t.server_cpu_share is None else f"{t.server_cpu_share:.0%}",
                "—" if t.cpu_us_per_request is None else f"{t.cpu_us_per_request:.0f}",
            )
        return table

    def goal_line(self) -> str:
        polyport = self.target("polyport")
        verdict = "[bold green]PASS[/]" if self.goal_met else "[bold red]MISS[/]"
        return (
            f"Goal: polyport ≥ {GOAL_VS_FASTAPI:.1f}{TIMES} FastAPI and "
            f"≥ {GOAL_VS_STARLETTE:.1f}{TIMES} "
            f"Starlette — {verdict} (measured {_times(polyport.ratio_vs_fastapi)} FastAPI, "
            f"{_times(polyport.ratio_vs_starlette)} Starlette)"
        )

    def warnings(self) -> list[str]:
        return [
            f"{t.label} answered {t.errors:,} of {t.requests:,} requests with an error or lost "
            "them: its figures are not comparable"
            for t in self.targets
            if t.errors
        ]

    # -- written ----------------------------------------------------------------------------

    def as_json(self) -> dict[str, Any]:
        return {
            "bench": self.bench,
            "request": self.request,
            "timestamp": self.started.isoformat(timespec="seconds"),
            "machine": self.machine,
            "generator": self.generator,
            "generator_version": self.generator_version,
            "duration": self.duration,
            "warmup": self.warmup,
            "connections": self.connections,
            "repeats": self.repeats,
            "goal": {
                "vs_fastapi": GOAL_VS_FASTAPI,
                "vs_starlette": GOAL_VS_STARLETTE,
                "met": self.goal_met,
            },
            "targets": [asdict(t) for t in self.targets],
        }

    def write(self, output: Path) -> tuple[Path, Path]:
        """``{bench}-YYYYmmdd-HHMMSS.json`` and ``.png`` in ``output``, copied to ``-latest``."""
        from polyport.bench.chart import draw_chart

        return write_results(
            output, self.bench, self.started, self.as_json(), lambda path: draw_chart(self, path)
        )


def write_results(
    output: Path, bench: str, started: datetime, data: dict[str, Any], draw: Callable[[Path], None]
) -> tuple[Path, Path]:
    """Write ``data`` and the chart ``draw`` makes as ``{bench}-YYYYmmdd-HHMMSS.json``/``.png``.

    Both are copied to ``{bench}-latest.json``/``.png`` too; every bench writes this way.
    """
    output.mkdir(parents=True, exist_ok=True)
    stem = f"{bench}-{started:%Y%m%d-%H%M%S}"
    json_path = output / f"{stem}.json"
    json_path.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2) + b"\n")
    png_path = output / f"{stem}.png"
    draw(png_path)
    shutil.copyfile(json_path, output / f"{bench}-latest.json")
    shutil.copyfile(png_path, output / f"{bench}-latest.png")
    return json_path, png_path


def _ratio(target: TargetFigures, baseline: TargetFigures | None) -> float | None:
    if baseline is None or baseline.requests_per_second <= 0:
        return None
    return target.requests_per_second / baseline.requests_per_second


def _times(ratio: float | None) -> str:
    return "—" if ratio is None else f"{ratio:.2f}{TIMES}"


_VERSIONED = ("polyport", "fastapi", "starlette", "uvicorn", "uvloop", "httptools", "pydantic")


def machine_info(packages: Iterable[str] = _VERSIONED) -> dict[str, Any]:
    """What the figures depend on: cores, CPU, load, Python and the ``packages``' versions."""
    versions: dict[str, str | None] = {}
    for package in packages:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    try:
        load: float | None = round(os.getloadavg()[0], 2)
    except OSError:
        load = None
    return {
        "cpu_count": os.cpu_count(),
        # Read before the bench starts: how busy the machine already was.
        "load_average_1m": load,
        "cpu_model": _cpu_model(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "versions": versions,
        "reference_loop_ms": reference_loop_ms(),
    }


#: Additions in :func:`reference_loop_ms`.
REFERENCE_LOOP = 2_000_000


def reference_loop_ms() -> float:
    """How fast this host runs CPython right now: the best of three 2M-addition loops, in ms.

    Absolute figures (events/s, calls/s) move with the host: the same two vCPUs
    have run this loop in 2.5 times the time from one hour to the next. Recorded
    beside every run, it tells apart a slower host from slower code.
    """
    best = float("inf")
    for _ in range(3):
        began = time.perf_counter()
        total = 0
        for i in range(REFERENCE_LOOP):
            total += i
        best = min(best, time.perf_counter() - began)
    return round(best * 1000, 1)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()

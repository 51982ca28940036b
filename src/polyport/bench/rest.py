"""``polyport bench rest``: one GET through polyport, plain FastAPI and plain Starlette.

For each target, always in the order polyport, FastAPI, Starlette, the lab

1. starts the target's server in its own process (:mod:`polyport.bench.targets`),
2. runs the load generator for the warm-up, and throws its figures away,
3. runs it again for the measured duration (:mod:`polyport.bench.loadgen`),
4. stops the server.

Targets run one after another, never together: on a small machine the server
needs one core and the generator the other. With ``repeats`` above one, the
rounds interleave (p, f, s, p, f, s, …) so drift hits every target alike, and
each target reports its median run. Then it prints a table and the goal line
and writes the JSON and the chart (:mod:`polyport.bench.report`).
"""

from __future__ import annotations

import importlib.util
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from polyport.bench.loadgen import (
    HttpCall,
    LoadGenerator,
    LoadResult,
    check_load_options,
    choose_generator,
    run_load,
)
from polyport.bench.report import BenchReport, TargetFigures, machine_info
from polyport.bench.targets import TARGETS, TargetServer
from polyport.bench.users import BENCH_PATH
from polyport.core.errors import MissingExtra

# Checked here, not imported: the parent process only starts the servers.
if any(importlib.util.find_spec(name) is None for name in ("fastapi", "starlette", "matplotlib")):
    raise MissingExtra("bench", "the benchmark lab")


@dataclass(frozen=True, slots=True)
class Run:
    """One measured run of one target: what the generator saw, what the server spent."""

    load: LoadResult
    server_cpu: float | None  # CPU seconds the server used during the run; None off Linux


def run_rest_bench(
    *,
    duration: float,
    connections: int,
    warmup: float,
    output: Path,
    generator: str,
    console: Console,
    repeats: int = 1,
) -> BenchReport:
    """Measure ``GET /v1/users/{id}`` on every target; print and write the results."""
    check_load_options(duration, warmup, connections, repeats)
    load = choose_generator(generator)
    measured = load.seconds(duration)
    warming = load.seconds(warmup) if warmup > 0 else 0.0
    started = datetime.now(UTC)
    machine = machine_info()
    runs: dict[str, list[Run]] = {name: [] for name in TARGETS}

    console.print(
        f"[bold]polyport bench rest[/]: GET {BENCH_PATH} with {load.name} "
        f"({escape(load.version)}), "
        f"{connections} connections, {warming:g} s warm-up + {measured:g} s per target"
    )
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[phase]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        for round_ in range(repeats):
            for name, label in TARGETS.items():
                shown = label if repeats == 1 else f"{label} ({round_ + 1}/{repeats})"
                task = progress.add_task(shown, total=warming + measured, phase="starting")
                with TargetServer(name) as server:
                    if warming:
                        _run_load(
                            load, server, connections, warming, progress, task, 0.0, "warm-up"
                        )
                    cpu_before = server.cpu_seconds()
                    result = _run_load(
                        load, server, connections, measured, progress, task, warming, "measuring"
                    )
                    cpu_after = server.cpu_seconds()
                cpu = None if cpu_before is None or cpu_after is None else cpu_after - cpu_before
                runs[name].append(Run(result, cpu))
                progress.update(
                    task,
                    completed=warming + measured,
                    phase=f"{result.requests_per_second:,.0f} req/s",
                )

    report = BenchReport(
        bench="rest",
        request=f"GET {BENCH_PATH}",
        generator=load.name,
        generator_version=load.version,
        duration=measured,
        warmup=warming,
        connections=connections,
        repeats=repeats,
        started=started,
        machine=machine,
        targets=[_figures(name, label, runs[name]) for name, label in TARGETS.items()],
    )
    console.print(report.table())
    for warning in report.warnings():
        console.print(f"[bold yellow]warning:[/] {escape(warning)}")
    console.print(report.goal_line())
    json_path, png_path = report.write(output)
    console.print(f"results: {escape(str(json_path))} · chart: {escape(str(png_path))}")
    return report


def _run_load(
    load: LoadGenerator,
    server: TargetServer,
    connections: int,
    seconds: float,
    progress: Progress,
    task: TaskID,
    offset: float,
    phase: str,
) -> LoadResult:
    """One generator run against ``server``, its progress shown as it goes."""
    progress.update(task, completed=offset, phase=phase)
    with tempfile.TemporaryDirectory(prefix="polyport-bench-load-") as scratch:
        result = run_load(
            load,
            server.host,
            server.port,
            HttpCall("GET", BENCH_PATH),
            connections,
            seconds,
            Path(scratch),
            label=server.label,
            tick=lambda elapsed: progress.update(task, completed=offset + elapsed),
        )
    server.check_alive()
    return result


def _figures(name: str, label: str, runs: list[Run]) -> TargetFigures:
    """A target's figures from its runs: the run of median throughput represents it."""
    median = sorted(runs, key=lambda r: r.load.requests_per_second)[(len(runs) - 1) // 2]
    load, cpu = median.load, median.server_cpu
    return TargetFigures(
        name=name,
        label=label,
        requests=load.requests,
        errors=load.errors,
        seconds=load.seconds,
        requests_per_second=load.requests_per_second,
        p50_ms=load.p50_ms,
        p99_ms=load.p99_ms,
        server_cpu_seconds=cpu,
        server_cpu_share=cpu / load.seconds if cpu is not None and load.seconds > 0 else None,
        cpu_us_per_request=cpu / load.requests * 1e6 if cpu is not None and load.requests else None,
        runs=[r.load.requests_per_second for r in runs],
    )

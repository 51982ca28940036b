"""``polyport bench graphql``: two queries through polyport's GraphQL edge and Strawberry.

The queries (:data:`polyport.bench.graphql_data.QUERIES`) are the issue's
``{ user(id: 1) { id name email } }`` and the guide's profile + posts +
comments with their authors (four levels, resolved in batches by both
targets). Each is sent as ``POST /graphql`` with a JSON body over keep-alive
connections. The baselines are a plain Strawberry app (the issue's goal is
set against it) and the same app with Strawberry's parser and validation
caches. For each target, in the order polyport, Strawberry, Strawberry+caches, the lab

1. starts the target's server in its own process (:mod:`polyport.bench.graphql_apps`),
2. checks that it answers each query with exactly the expected data — a
   GraphQL error travels with status 200, which a load generator would count
   as a success, so correctness is checked here, once, before the load,
3. per query: runs the load generator for the warm-up (figures thrown away),
   then for the measured duration, reading the server's CPU time around it,
4. stops the server.

With ``repeats`` above one the rounds interleave and each figure is the
median run. The results are printed, with the goal lines, and written as JSON
and Markdown (:mod:`polyport.bench.graphql_report`).
"""

from __future__ import annotations

import http.client
import importlib.util
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from polyport.bench.graphql_data import QUERIES, expected
from polyport.bench.graphql_report import CaseFigures, GraphQLReport
from polyport.bench.loadgen import (
    HttpCall,
    LoadGenerator,
    LoadResult,
    check_load_options,
    choose_generator,
    run_load,
)
from polyport.bench.report import machine_info
from polyport.bench.targets import TargetServer
from polyport.core.errors import ConfigError, MissingExtra

# Checked here, not imported: the parent process only starts the servers.
if any(importlib.util.find_spec(name) is None for name in ("strawberry", "uvicorn", "graphql")):
    raise MissingExtra("bench", "the GraphQL bench (strawberry-graphql, uvicorn, graphql-core)")

#: Every GraphQL target in the order the lab measures them, with its display name.
TARGETS: dict[str, str] = {
    "polyport": "polyport",
    "strawberry": "Strawberry",
    "strawberry-cached": "Strawberry+caches",
}
PATH = "/graphql"
PACKAGES = ("polyport", "strawberry-graphql", "graphql-core", "uvicorn", "uvloop", "httptools")


class GraphQLTarget(TargetServer):
    """A GraphQL target process; ready once ``{ __typename }`` over GET answers 200."""

    module = "polyport.bench.graphql_apps"
    targets = TARGETS
    ready_path = PATH + "?query=%7B__typename%7D"


def graphql_call(case: str) -> HttpCall:
    """The request the generators repeat for ``case``: a POST with the query as JSON."""
    return HttpCall(
        "POST",
        PATH,
        body=orjson.dumps({"query": QUERIES[case]}),
        headers={"Content-Type": "application/json", "Accept": "application/json"},
    )


def check_answer(host: str, port: int, case: str, label: str) -> None:
    """:class:`ConfigError` unless the target answers ``case`` with exactly the expected data."""
    call = graphql_call(case)
    connection = http.client.HTTPConnection(host, port, timeout=10)
    try:
        connection.request(call.method, call.path, body=call.body, headers=dict(call.headers))
        response = connection.getresponse()
        status, body = response.status, response.read()
    except OSError as exc:
        raise ConfigError(f"{label} did not answer the {case} query: {exc}") from None
    finally:
        connection.close()
    try:
        answer: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        answer = None
    if status != 200 or not isinstance(answer, dict) or answer.get("errors"):
        shown = body[:300].decode(errors="replace")
        raise ConfigError(f"{label} answered the {case} query with {status}: {shown}")
    if answer.get("data") != expected(case):
        raise ConfigError(f"{label} answered the {case} query with other data than expected")


def run_graphql_bench(
    *,
    duration: float,
    connections: int,
    warmup: float,
    output: Path,
    generator: str,
    console: Console,
    repeats: int = 1,
) -> GraphQLReport:
    """Measure both queries on both targets; print and write the results."""
    check_load_options(duration, warmup, connections, repeats)
    load = choose_generator(generator)
    measured = load.seconds(duration)
    warming = load.seconds(warmup) if warmup > 0 else 0.0
    started = datetime.now(UTC)
    machine = machine_info(PACKAGES)
    runs: dict[tuple[str, str], list[tuple[LoadResult, float | None]]] = {
        (target, case): [] for target in TARGETS for case in QUERIES
    }

    console.print(
        f"[bold]polyport bench graphql[/]: POST {PATH} ({', '.join(QUERIES)} queries) "
        f"with {load.name} ({escape(load.version)}), {connections} connections, "
        f"{warming:g} s warm-up + {measured:g} s per query and target"
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
                suffix = "" if repeats == 1 else f" ({round_ + 1}/{repeats})"
                tasks = {
                    case: progress.add_task(
                        f"{label} {case}{suffix}", total=warming + measured, phase="waiting"
                    )
                    for case in QUERIES
                }
                with GraphQLTarget(name) as server:
                    for case in QUERIES:
                        check_answer(server.host, server.port, case, label)
                    for case, task in tasks.items():
                        call = graphql_call(case)
                        if warming:
                            _run(load, server, call, connections, warming, progress, task, 0.0)
                        before = server.cpu_seconds()
                        result = _run(
                            load, server, call, connections, measured, progress, task, warming
                        )
                        after = server.cpu_seconds()
                        cpu = None if before is None or after is None else after - before
                        runs[name, case].append((result, cpu))
                        progress.update(
                            task,
                            completed=warming + measured,
                            phase=f"{result.requests_per_second:,.0f} req/s",
                        )

    report = GraphQLReport(
        queries=dict(QUERIES),
        targets=dict(TARGETS),
        generator=load.name,
        generator_version=load.version,
        duration=measured,
        warmup=warming,
        connections=connections,
        repeats=repeats,
        started=started,
        machine=machine,
        figures=[
            _figures(name, label, case, runs[name, case])
            for case in QUERIES
            for name, label in TARGETS.items()
        ],
    )
    console.print(report.table())
    for warning in report.warnings():
        console.print(f"[bold yellow]warning:[/] {escape(warning)}")
    for goal, met in report.goals():
        verdict = "[bold green]PASS[/]" if met else "[bold red]MISS[/]"
        console.print(f"Goal: {escape(goal)} — {verdict}")
    json_path, md_path = report.write(output)
    console.print(f"results: {escape(str(json_path))} · {escape(str(md_path))}")
    return report


def _run(
    load: LoadGenerator,
    server: GraphQLTarget,
    call: HttpCall,
    connections: int,
    seconds: float,
    progress: Progress,
    task: TaskID,
    offset: float,
) -> LoadResult:
    """One generator run against ``server``, its progress shown as it goes."""
    progress.update(task, completed=offset, phase="warm-up" if offset == 0 else "measuring")
    with tempfile.TemporaryDirectory(prefix="polyport-bench-load-") as scratch:
        result = run_load(
            load,
            server.host,
            server.port,
            call,
            connections,
            seconds,
            Path(scratch),
            label=server.label,
            tick=lambda elapsed: progress.update(task, completed=offset + elapsed),
        )
    server.check_alive()
    return result


def _figures(
    name: str, label: str, case: str, runs: list[tuple[LoadResult, float | None]]
) -> CaseFigures:
    """A target's figures on one query: the run of median throughput represents it."""
    load, cpu = sorted(runs, key=lambda r: r[0].requests_per_second)[(len(runs) - 1) // 2]
    return CaseFigures(
        target=name,
        label=label,
        case=case,
        requests=load.requests,
        errors=load.errors,
        seconds=load.seconds,
        requests_per_second=load.requests_per_second,
        p50_ms=load.p50_ms,
        p99_ms=load.p99_ms,
        server_cpu_seconds=cpu,
        server_cpu_share=cpu / load.seconds if cpu is not None and load.seconds > 0 else None,
        cpu_us_per_request=cpu / load.requests * 1e6 if cpu is not None and load.requests else None,
        runs=[r[0].requests_per_second for r in runs],
    )

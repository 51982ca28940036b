"""``polyport bench rpc``: the request-response patterns on one handler, in one run.

One polyport node (:mod:`polyport.bench.service`, every edge, as ``polyport
serve`` runs it) answers the same two calls — user 42, and a page of 50 users
(:mod:`polyport.bench.rpc_calls`) — over REST, JSON-RPC, XML-RPC, SOAP and
gRPC, and streams events and items over gRPC server streams. The bare
libraries answer the same calls in the same run, each in its own process
(:mod:`polyport.bench.rpc_apps`): a plain grpcio servicer on generated stubs
(on the default loop, and on uvloop), and Spyne for SOAP (optional: skipped,
with a note, when it is not installed).

For each call the lab

1. checks one answer and counts its bytes on the wire (:mod:`polyport.bench.wire`);
2. runs the load for the warm-up, then for the measured duration — HTTP with
   wrk or the Python generator (:mod:`polyport.bench.loadgen`), gRPC with the
   raw HTTP/2 client of :mod:`polyport.bench.grpcload` in a client process
   (:mod:`polyport.bench.rpc_clients`; grpc.aio checks the answer and counts
   the bytes first), ``connections`` calls in flight either way — reading the
   server's CPU time around it.

Every target is started at the start of a round and stopped at its end, but
the load reaches one target at a time (:func:`schedule`): each call right
next to those it is compared with, so a ratio's two sides are minutes closer
than a target-by-target order would put them. After each step the lab waits
until that target is idle again (:func:`_settle`); an idle target that uses
more than 2 % of a core while another is measured is named in the notes. With ``repeats`` above
one, each figure is the median run. Then the tables, the goal lines, what
the run says of the guide's claims, and the JSON and the chart (:mod:`polyport.bench.rpc_report`).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from polyport.bench.clients import ClientProcess
from polyport.bench.loadgen import (
    LoadGenerator,
    LoadResult,
    check_load_options,
    choose_generator,
    run_load,
)
from polyport.bench.report import machine_info
from polyport.bench.rpc_apps import TARGETS
from polyport.bench.rpc_calls import CASES, PAYLOADS, STREAMS, Case, Stream
from polyport.bench.rpc_report import CLAIMS, CallFigures, RpcReport, StreamFigures
from polyport.bench.targets import TargetServer
from polyport.bench.users import BENCH_PATH
from polyport.bench.wire import WireBytes, http_exchange
from polyport.core.errors import ConfigError, MissingExtra

# Checked here, not imported: the parent process only starts the servers and clients.
if any(
    importlib.util.find_spec(name) is None for name in ("matplotlib", "grpc", "grpc_tools", "lxml")
):
    raise MissingExtra("bench,rpc,soap,grpc", "the RPC benchmark lab")

#: Events per stream phase for each second of ``duration``.
STREAM_EVENTS_PER_SECOND = 10_000
#: Calls counted for the bytes on the wire, after one that warms the connection.
HTTP_PROBE_CALLS = 20
GRPC_PROBE_CALLS = 200
#: Events streamed through the counting proxy for the stream's bytes per event.
STREAM_PROBE_EVENTS = 2_000
#: The library versions an RPC result depends on.
_VERSIONED = (
    "polyport",
    "grpcio",
    "protobuf",
    "lxml",
    "spyne",
    "uvicorn",
    "uvloop",
    "httptools",
    "orjson",
    "pydantic",
)
#: How long a client may take beyond what it was asked to do.
_GRACE = 60.0


class RpcServer(TargetServer):
    """An RPC target in its own process: HTTP, gRPC, or both."""

    module = "polyport.bench.rpc_apps"
    targets = TARGETS
    _ready = {"polyport": BENCH_PATH, "spyne": "/soap?wsdl"}
    _ports = {"polyport": ("port", "grpc"), "spyne": ("port",)}

    def __init__(self, name: str, *, start_timeout: float = 30.0) -> None:
        super().__init__(name, start_timeout=start_timeout)
        self.ready_path = self._ready.get(name)

    def announces(self) -> tuple[str, ...]:
        return self._ports.get(self.name, ("grpc",))

    @property
    def grpc_port(self) -> int:
        port = self.ports.get("grpc", 0)
        if not port:
            raise ConfigError(f"{self.label} serves no gRPC (is the 'grpc' extra installed?)")
        return port


@dataclass(frozen=True, slots=True)
class CallRun:
    """One measured run of one call."""

    load: LoadResult
    server_cpu: float | None
    wire: WireBytes
    client_cpu_share: float | None = None


@dataclass(frozen=True, slots=True)
class StreamRun:
    figures: dict[str, Any]
    wire_per_event: float
    server_cpu: float | None


def run_rpc_bench(
    *,
    duration: float = 5.0,
    connections: int = 64,
    warmup: float = 1.0,
    output: Path,
    console: Console,
    repeats: int = 1,
    generator: str = "auto",
) -> RpcReport:
    """Measure every call and stream on every target; print and write the results."""
    check_load_options(duration, warmup, connections, repeats, max_connections=1_000)
    load = choose_generator(generator)
    measured = load.seconds(duration)
    warming = load.seconds(warmup) if warmup > 0 else 0.0
    stream_events = max(1_000, round(duration * STREAM_EVENTS_PER_SECOND))
    notes = []
    targets = list(TARGETS)
    if importlib.util.find_spec("spyne") is None:
        targets.remove("spyne")
        notes.append(
            "Spyne is not installed (pip install spyne; it is in polyport's dev extra): "
            "the Spyne baseline was skipped and the SOAP goal is not measured"
        )
    started = datetime.now(UTC)
    machine = machine_info(_VERSIONED)
    options = {
        "duration": measured,
        "grpc_duration": duration,
        "warmup": warming,
        "grpc_warmup": warmup,
        "connections": connections,
        "repeats": repeats,
        "generator": load.name,
        "generator_version": load.version,
        "grpc_client": "polyport.bench.grpcload (raw HTTP/2, one connection), a process of its own",
        "stream_events": stream_events,
        "stream_warmup_events": stream_events // 10,
        "probe": {
            "http_calls": HTTP_PROBE_CALLS,
            "grpc_calls": GRPC_PROBE_CALLS,
            "stream_events": STREAM_PROBE_EVENTS,
        },
    }
    console.print(
        f"[bold]polyport bench rpc[/]: one User and {PAYLOADS['list']} over REST, JSON-RPC, "
        f"XML-RPC, SOAP and gRPC on one polyport node, against {', '.join(targets[1:])}; "
        f"HTTP with {load.name} ({escape(load.version)}), gRPC with polyport.bench.grpcload; "
        f"{connections} in flight, {warming:g} s warm-up + {measured:g} s per call; "
        f"{stream_events:,} events per stream"
    )
    calls: dict[str, list[CallRun]] = {case.key: [] for case in CASES}
    streams: dict[str, list[StreamRun]] = {stream.name: [] for stream in STREAMS}
    lab = _Lab(load, connections, warming, measured, warmup, duration, stream_events)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[phase]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        for round_ in range(repeats):
            steps = schedule(targets, round_)
            label = "round" if repeats == 1 else f"round {round_ + 1} of {repeats}"
            task = progress.add_task(label, total=len(steps), phase="starting the targets")
            with (
                contextlib.ExitStack() as stack,
                tempfile.TemporaryDirectory(prefix="polyport-bench-rpc-") as scratch,
            ):
                servers = {name: stack.enter_context(RpcServer(name)) for name in targets}
                for done, step in enumerate(steps):
                    server = servers[step.target]
                    what = (
                        f"{server.label}: {step.label} · {PAYLOADS[step.payload]}"
                        if isinstance(step, Case)
                        else f"{server.label}: {step.label}"
                    )
                    progress.update(task, completed=done, phase=what)

                    def tick(share: float, done: int = done, task: TaskID = task) -> None:
                        progress.update(task, completed=done + min(share, 0.99))

                    idle = {name: s.cpu_seconds() for name, s in servers.items() if s is not server}
                    began = time.monotonic()
                    if isinstance(step, Case):
                        calls[step.key].append(lab.call(server, step, Path(scratch), tick))
                    else:
                        streams[step.name].append(lab.stream(server, step, Path(scratch), tick))
                    busy = _busy_neighbours(servers, idle, time.monotonic() - began)
                    notes += [f"while {what} was measured, {b}" for b in busy]
                    _settle(server)
            progress.update(task, completed=len(steps), phase=_summary(calls))

    report = RpcReport(
        started=started,
        machine=machine,
        options=options,
        calls=[_call_figures(c, load.name, calls[c.key]) for c in CASES if calls[c.key]],
        streams=[_stream_figures(s, streams[s.name]) for s in STREAMS if streams[s.name]],
        notes=notes,
    )
    for table in report.tables():
        console.print(table)
    for warning in report.warnings():
        console.print(f"[bold yellow]warning:[/] {escape(warning)}")
    for note in report.notes:
        console.print(f"[bold yellow]note:[/] {escape(note)}")
    for line in report.goal_lines():
        console.print(line)
    findings = report.findings()
    for key, claim in (("size", CLAIMS["guide_size"]), ("speed", CLAIMS["guide_speed"])):
        if key in findings:
            console.print(f"[dim]claimed: {escape(claim)} — measured: {escape(findings[key])}[/]")
    json_path, md_path, png_path = report.write(output)
    console.print(
        f"results: {escape(str(json_path))} · {escape(md_path.name)} · chart: "
        f"{escape(png_path.name)}"
    )
    return report


class _Lab:
    """How one call or one stream is measured against a running target."""

    def __init__(
        self,
        load: LoadGenerator,
        connections: int,
        warming: float,
        measured: float,
        grpc_warmup: float,
        grpc_duration: float,
        stream_events: int,
    ) -> None:
        self.load = load
        self.connections = connections
        self.warming, self.measured = warming, measured
        self.grpc_warmup, self.grpc_duration = grpc_warmup, grpc_duration
        self.stream_events = stream_events

    def call(
        self, server: RpcServer, case: Case, scratch: Path, tick: Callable[[float], None]
    ) -> CallRun:
        if case.http is not None:
            return self._http(server, case, scratch, tick)
        return self._grpc(server, case, scratch, tick)

    def _http(
        self, server: RpcServer, case: Case, scratch: Path, tick: Callable[[float], None]
    ) -> CallRun:
        assert case.http is not None
        wire, answer = http_exchange(server.host, server.port, case.http, HTTP_PROBE_CALLS)
        if (
            answer.status != 200
            or not all(e in answer.body for e in case.expect)
            or any(r in answer.body for r in case.refuse)
        ):
            raise ConfigError(
                f"{server.label} answered {case.label} with {answer.status}: {answer.body[:200]!r}"
            )
        total = self.warming + self.measured

        def run(seconds: float, offset: float) -> LoadResult:
            return run_load(
                self.load,
                server.host,
                server.port,
                case.http,  # type: ignore[arg-type]  # checked above
                self.connections,
                seconds,
                scratch,
                label=f"{server.label} {case.label}",
                tick=lambda elapsed: tick((offset + elapsed) / total),
            )

        if self.warming:
            run(self.warming, 0.0)
        before = server.cpu_seconds()
        result = run(self.measured, self.warming)
        after = server.cpu_seconds()
        server.check_alive()
        cpu = None if before is None or after is None else after - before
        return CallRun(result, cpu, wire)

    def _grpc(
        self, server: RpcServer, case: Case, scratch: Path, tick: Callable[[float], None]
    ) -> CallRun:
        config = {
            "mode": "unary",
            "port": server.grpc_port,
            "path": case.grpc_path,
            "request": case.grpc_request.hex(),
            "expect": [e.hex() for e in case.expect],
            "refuse": [r.hex() for r in case.refuse],
            "probe_calls": GRPC_PROBE_CALLS,
            "concurrency": self.connections,
            "warmup": self.grpc_warmup,
            "seconds": self.grpc_duration,
        }
        total = self.grpc_warmup + self.grpc_duration
        client = ClientProcess("polyport.bench.rpc_clients", json.dumps(config), scratch / "err")
        try:
            probed = self._wait(client, "probed", 30.0, server)
            began = time.monotonic()
            self._wait(client, "measuring", self.grpc_warmup + _GRACE, server, tick, began, total)
            before = server.cpu_seconds()
            done = self._wait(client, "done", total + _GRACE, server, tick, began, total)
            after = server.cpu_seconds()
        finally:
            client.close()
        server.check_alive()
        calls, seconds = int(done["calls"]), float(done["seconds"])
        result = LoadResult(
            requests=calls,
            errors=int(done["errors"]),
            seconds=seconds,
            requests_per_second=calls / seconds if seconds > 0 else 0.0,
            p50_ms=float(done["p50_ms"]),
            p99_ms=float(done["p99_ms"]),
        )
        wire = WireBytes(
            request=float(probed["request"]),
            response=float(probed["response"]),
            request_payload=int(probed["request_payload"]),
            response_payload=int(probed["response_payload"]),
        )
        cpu = None if before is None or after is None else after - before
        return CallRun(result, cpu, wire, float(done["client_cpu_share"]))

    def stream(
        self, server: RpcServer, stream: Stream, scratch: Path, tick: Callable[[float], None]
    ) -> StreamRun:
        config = {
            "mode": "stream",
            "port": server.grpc_port,
            "kind": stream.name,
            "count": self.stream_events,
            "warmup_count": self.stream_events // 10,
            "probe_count": STREAM_PROBE_EVENTS,
        }
        # A generous bound: even 2,000 events/s finishes in time.
        limit = _GRACE + self.stream_events / 2_000
        client = ClientProcess("polyport.bench.rpc_clients", json.dumps(config), scratch / "err")
        try:
            began = time.monotonic()
            probed = self._wait(client, "probed", limit, server, tick, began, limit)
            self._wait(client, "measuring", limit, server, tick, began, limit)
            before = server.cpu_seconds()
            done = self._wait(client, "done", limit, server, tick, began, limit)
            after = server.cpu_seconds()
        finally:
            client.close()
        server.check_alive()
        cpu = None if before is None or after is None else after - before
        return StreamRun(done, float(probed["response"]), cpu)

    def _wait(
        self,
        client: ClientProcess,
        event: str,
        timeout: float,
        server: RpcServer,
        tick: Callable[[float], None] | None = None,
        began: float = 0.0,
        total: float = 1.0,
    ) -> dict[str, Any]:
        """The client's next ``event``, the progress bar moving meanwhile."""
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            message = client.expect(event, min(remaining, 0.2))
            if message is not None:
                return message
            server.check_alive()
            if tick is not None:
                tick((time.monotonic() - began) / total)
        raise ConfigError(
            f"the gRPC client against {server.label} did not report {event!r} within {timeout:g} s"
        )


#: The calls compared with each other (by name), measured back to back, and the streams.
_NEIGHBOURS: tuple[tuple[str, ...], ...] = (
    ("rest", "jsonrpc"),
    ("xmlrpc",),
    ("grpc", "grpcio", "grpcio-uvloop"),
    ("soap", "spyne"),
)
_STREAM_NEIGHBOURS: tuple[tuple[str, ...], ...] = (
    ("events", "grpcio-events"),
    ("replay",),
    ("contract", "grpcio-contract"),
)
#: An idle target that uses more of a core than this while another is measured is reported.
IDLE_CPU_SHARE = 0.02
#: After its step a target counts as idle once it uses at most this CPU (one clock tick) in
#: 0.2 s; the lab waits for that up to SETTLE_LIMIT seconds.
SETTLED_CPU = 0.01
SETTLE_LIMIT = 10.0


def schedule(targets: list[str], round_: int) -> list[Case | Stream]:
    """One round's steps on ``targets``: each call next to those it is compared with.

    The host's speed drifts by several percent within minutes, so the two sides
    of a ratio (polyport's gRPC and plain grpcio, SOAP and Spyne, JSON-RPC and
    REST) are measured one right after the other. Within each group the order
    turns round every other round, so neither side always goes first.
    """
    by_name = {(c.name, c.payload): c for c in CASES if c.target in targets}
    streams = {s.name: s for s in STREAMS if s.target in targets}
    steps: list[Case | Stream] = []

    def ordered(group: tuple[str, ...]) -> tuple[str, ...]:
        return group if round_ % 2 == 0 else group[::-1]

    for payload in PAYLOADS:
        for group in _NEIGHBOURS:
            steps += [by_name[n, payload] for n in ordered(group) if (n, payload) in by_name]
    for group in _STREAM_NEIGHBOURS:
        steps += [streams[n] for n in ordered(group) if n in streams]
    return steps


def _settle(server: RpcServer) -> None:
    """Return once ``server`` is idle again, or after :data:`SETTLE_LIMIT` seconds.

    When the load stops, a slow server still has the calls in flight to answer:
    Spyne's 64 pages of 50 users take it a third of a second of CPU. That must
    not run into the next step, on another target.
    """
    deadline = time.monotonic() + SETTLE_LIMIT
    last = server.cpu_seconds()
    while last is not None and time.monotonic() < deadline:
        time.sleep(0.2)
        now = server.cpu_seconds()
        if now is None or now - last <= SETTLED_CPU:
            return
        last = now


def _busy_neighbours(
    servers: dict[str, RpcServer], before: dict[str, float | None], seconds: float
) -> list[str]:
    """The idle targets that used more than :data:`IDLE_CPU_SHARE` of a core (and 0.1 s)."""
    busy = []
    for name, was in before.items():
        now = servers[name].cpu_seconds()
        if was is not None and now is not None and seconds > 0:
            used = now - was
            # At least 0.1 s: CPU time counts in clock ticks (10 ms), too coarse for short steps.
            if used > max(IDLE_CPU_SHARE * seconds, 0.1):
                share = used / seconds
                busy.append(f"the idle {servers[name].label} used {share:.0%} of a core")
    return busy


def _summary(calls: dict[str, list[CallRun]]) -> str:
    """The round's gRPC unary figures, polyport's and plain grpcio's, for one User."""
    shown = [
        f"{case.label} {calls[case.key][-1].load.requests_per_second:,.0f}"
        for case in CASES
        if case.payload == "user" and case.name in ("grpc", "grpcio") and calls[case.key]
    ]
    return f"one User, calls/s: {' · '.join(shown)}" if shown else "done"


def _call_figures(case: Case, generator: str, runs: list[CallRun]) -> CallFigures:
    """A call's figures from its runs: the run of median throughput represents it."""
    median = sorted(runs, key=lambda r: r.load.requests_per_second)[(len(runs) - 1) // 2]
    load, cpu = median.load, median.server_cpu
    return CallFigures(
        name=case.name,
        label=case.label,
        target=case.target,
        payload=case.payload,
        generator=generator if case.http is not None else "grpcload",
        calls=load.requests,
        errors=load.errors,
        seconds=load.seconds,
        calls_per_second=load.requests_per_second,
        p50_ms=load.p50_ms,
        p99_ms=load.p99_ms,
        server_cpu_seconds=cpu,
        server_cpu_share=cpu / load.seconds if cpu is not None and load.seconds > 0 else None,
        cpu_us_per_call=cpu / load.requests * 1e6 if cpu is not None and load.requests else None,
        client_cpu_share=median.client_cpu_share,
        wire=median.wire,
        runs=[r.load.requests_per_second for r in runs],
    )


def _stream_figures(stream: Stream, runs: list[StreamRun]) -> StreamFigures:
    median = sorted(runs, key=lambda r: float(r.figures["events_per_second"]))[(len(runs) - 1) // 2]
    figures, cpu = median.figures, median.server_cpu
    events = int(figures["events"])
    return StreamFigures(
        name=stream.name,
        label=stream.label,
        target=stream.target,
        batched=stream.batched,
        events=events,
        messages=int(figures["messages"]),
        seconds=float(figures["seconds"]),
        events_per_second=float(figures["events_per_second"]),
        events_per_message=float(figures["events_per_message"]),
        payload_per_event=float(figures["payload_per_event"]),
        wire_per_event=statistics.median(r.wire_per_event for r in runs),
        server_cpu_seconds=cpu,
        cpu_us_per_event=cpu / events * 1e6 if cpu is not None and events else None,
        client_cpu_share=float(figures["client_cpu_share"]),
        runs=[float(r.figures["events_per_second"]) for r in runs],
    )

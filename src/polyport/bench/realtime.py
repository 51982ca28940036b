"""``polyport bench ws`` and ``polyport bench sse``: pushing events, against the bare libraries.

For each target — polyport, then the baseline (the plain ``websockets``
server, or plain sse-starlette) — the lab starts the target's server in its
own process (:mod:`polyport.bench.realtime_apps`) and measures, on loopback:

1. **latency**: one subscriber; ``latency_samples`` messages published 1 ms
   apart; each message carries its publish time (``time.monotonic_ns()``,
   system-wide on Linux) and the subscriber subtracts it on arrival: p50/p99.
   This phase is also the probe: a target that cannot be subscribed to is
   reported *not available* with the reason, and the lab goes on;
2. **one client**: ``stream_messages`` messages back to back to one
   subscriber: events per second from the first publish to the last arrival;
3. **fan-out**: ``clients`` subscribers spread over a few client processes,
   ``messages`` broadcast back to back: deliveries per second from the first
   publish to the last delivery at the last client;
4. **idle memory**, on a fresh process of the target: its RSS before and
   after ``idle`` subscribed, silent connections, divided by their number.

Subscribers are :mod:`polyport.bench.realtime_clients` processes, driven
through :mod:`polyport.bench.realtime_subscribers`; each phase
first publishes one *primer* and waits until every subscriber received it,
so measuring starts only once every subscription is live. Targets run one
after another, never together.
"""

from __future__ import annotations

import http.client
import importlib.util
import os
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import orjson
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from polyport.bench.realtime_apps import CONTROL_PATH, READY_PATH, Blast
from polyport.bench.realtime_report import RealtimeFigures, RealtimeReport, Transport
from polyport.bench.realtime_subscribers import Subscribers, Unavailable
from polyport.bench.report import TIMES, machine_info
from polyport.bench.targets import TargetServer
from polyport.core.errors import ConfigError, MissingExtra

# Checked here, not imported: the parent process only starts the servers and clients.
if any(
    importlib.util.find_spec(name) is None
    for name in ("starlette", "sse_starlette", "websockets", "matplotlib")
):
    raise MissingExtra("bench", "the benchmark lab")

TRANSPORTS: dict[str, Transport] = {
    "ws": Transport(
        bench="ws",
        name="WebSocket",
        baseline="websockets",
        baseline_label="websockets.broadcast()",
        claims={
            "guide_latency": "WebSocket ~1 ms",
            "issue_fanout": "websockets.broadcast() from a plain server: ~130,000 deliveries/s",
            "issue_echo": "a plain websockets echo round trip: ~75 µs",
        },
    ),
    "sse": Transport(
        bench="sse",
        name="SSE",
        baseline="sse-starlette",
        baseline_label="sse-starlette",
        claims={
            "guide_latency": "SSE ~150 ms",
            "issue_stream": "a plain sse-starlette stream: ~100,000 events/s to one client",
        },
        stream_goal=True,
    ),
}

#: Seconds between the latency phase's messages: a modest rate, never a queue.
LATENCY_INTERVAL = 0.001
#: How long every subscriber of a phase may take to receive the primer.
PRIME_TIMEOUT = 10.0
#: Subscribers that receive one message before the idle memory is measured.
IDLE_WARMUP = 20
#: Client processes for the fan-out and idle phases: enough that no one process is the
#: bottleneck, no more than the cores can run (the server needs one of them).
CLIENT_PROCESSES = max(2, min(4, os.cpu_count() or 2))
#: The library versions a real-time result depends on.
_VERSIONED = (
    "polyport",
    "websockets",
    "sse-starlette",
    "starlette",
    "uvicorn",
    "uvloop",
    "httptools",
    "pydantic",
)


class RealtimeServer(TargetServer):
    """A real-time target in its own process, with its control endpoint and its memory."""

    module = "polyport.bench.realtime_apps"
    targets = {"polyport": "polyport", "websockets": "websockets", "sse-starlette": "sse-starlette"}
    ready_path = READY_PATH

    def publish(self, run: str, count: int, size: int, interval: float = 0.0) -> Blast:
        """Have the target publish ``count`` ticks on ``bench/{run}``; returns once it has."""
        args = {"run": run, "count": count, "size": size, "interval": interval}
        connection = http.client.HTTPConnection(
            self.host, self.port, timeout=30.0 + count * (interval + 0.001)
        )
        try:
            if self.name == "polyport":
                headers = {"Content-Type": "application/json"}
                connection.request("POST", "/v1/blast", orjson.dumps(args), headers)
            else:
                connection.request("POST", f"{CONTROL_PATH}?{urlencode(args)}")
            response = connection.getresponse()
            body = response.read()
        except OSError as exc:
            self.check_alive()
            raise ConfigError(f"the {self.label} control request failed: {exc}") from None
        finally:
            connection.close()
        if response.status != 200:
            raise ConfigError(
                f"the {self.label} control request answered {response.status}: {body[:200]!r}"
            )
        return Blast.model_validate_json(body)

    def rss_kib(self) -> float | None:
        """The process's resident memory (``VmRSS``) in KiB; None off Linux."""
        try:
            status = Path(f"/proc/{self.pid}/status").read_text(encoding="ascii")
        except OSError:
            return None
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                return float(line.split()[1])
        return None

    def settle(self, quiet: float = 0.1, longest: float = 5.0) -> None:
        """Wait (at most ``longest`` s) until the server spends under 10 % of a core."""
        deadline = time.monotonic() + longest
        before = self.cpu_seconds()
        while before is not None and time.monotonic() < deadline:
            time.sleep(quiet)
            after = self.cpu_seconds()
            if after is None or after - before < quiet * 0.1:
                return
            before = after


def run_realtime_bench(
    bench: str,
    *,
    clients: int = 1000,
    messages: int = 200,
    size: int = 100,
    idle: int = 5000,
    latency_samples: int = 2000,
    stream_messages: int = 20_000,
    output: Path,
    console: Console,
) -> RealtimeReport:
    """Measure polyport and the baseline of ``bench`` (``ws`` or ``sse``); print and write."""
    if bench not in TRANSPORTS:
        raise ConfigError(f"unknown real-time bench {bench!r}; known: {', '.join(TRANSPORTS)}")
    _check("--clients", clients, 1, 10_000)
    _check("--messages", messages, 1, 100_000)
    _check("--size", size, 0, 60_000)
    _check("--idle", idle, 0, 20_000)
    _check("--latency-samples", latency_samples, 1, 100_000)
    _check("--stream-messages", stream_messages, 1, 1_000_000)
    transport = TRANSPORTS[bench]
    options: dict[str, Any] = {
        "clients": clients,
        "messages": messages,
        "size": size,
        "idle": idle,
        "latency_samples": latency_samples,
        "latency_interval_ms": LATENCY_INTERVAL * 1000,
        "stream_messages": stream_messages,
        "client_processes": CLIENT_PROCESSES,
    }
    started = datetime.now(UTC)
    machine = machine_info(_VERSIONED)
    console.print(
        f"[bold]polyport bench {bench}[/]: {transport.name}, polyport against "
        f"{transport.baseline_label}; {latency_samples:,} timed messages, "
        f"{clients:,} clients {TIMES} {messages:,} messages of {size} B, "
        f"{stream_messages:,} messages to 1 client, {idle:,} idle connections"
    )
    results: list[RealtimeFigures] = []
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[phase]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        for name in ("polyport", transport.baseline):
            label = RealtimeServer.targets[name]
            task = progress.add_task(label, total=4, phase="starting")
            figures = RealtimeFigures(name, label)
            server = RealtimeServer(name)
            try:
                with (
                    server,
                    tempfile.TemporaryDirectory(prefix="polyport-bench-clients-") as folder,
                ):
                    lab = _Lab(transport, server, options, Path(folder), progress, task)
                    lab.measure(figures)
            except (Unavailable, ConfigError) as exc:
                figures.available, figures.reason = False, str(exc)
            progress.update(task, completed=4, phase=_summary(figures))
            results.append(figures)

    report = RealtimeReport(transport, options, started, machine, results)
    console.print(report.table())
    for note in report.notes():
        console.print(f"[bold yellow]note:[/] {escape(note)}")
    for line in report.goal_lines():
        console.print(line)
    claims = "; ".join(transport.claims.values())
    console.print(f"[dim]claimed: {escape(claims)}[/]")
    json_path, png_path = report.write(output)
    console.print(f"results: {escape(str(json_path))} · chart: {escape(str(png_path))}")
    return report


def _check(option: str, value: int, lowest: int, highest: int) -> None:
    if not lowest <= value <= highest:
        raise ConfigError(f"{option} must be between {lowest} and {highest}, not {value}")


def _summary(figures: RealtimeFigures) -> str:
    if not figures.available:
        return "not available"
    if figures.fanout_deliveries_per_second is None:
        return "done"
    return f"{figures.fanout_deliveries_per_second:,.0f} deliveries/s"


class _Lab:
    """The four phases against one running target."""

    def __init__(
        self,
        transport: Transport,
        server: RealtimeServer,
        options: dict[str, Any],
        folder: Path,
        progress: Progress,
        task: TaskID,
    ) -> None:
        self.transport = transport
        self.kind = transport.bench
        self.server = server
        self.options = options
        self.size: int = options["size"]
        self.folder = folder
        self.progress = progress
        self.task = task

    def measure(self, figures: RealtimeFigures) -> None:
        """Every phase; the first one decides whether the target is available at all."""
        self._step("latency", 0)
        self.latency(figures)  # Unavailable and ConfigError end the target here
        phases: list[tuple[str, Callable[[RealtimeFigures], None]]] = [
            ("1 client", self.stream),
            ("fan-out", self.fanout),
            ("idle memory", self.idle),
        ]
        for step, (phase, measure) in enumerate(phases, start=1):
            self._step(phase, step)
            try:
                measure(figures)
            except (Unavailable, ConfigError) as exc:
                figures.errors[phase] = str(exc)
                self.server.check_alive()  # a dead server ends the target, as an error

    def _step(self, phase: str, step: int) -> None:
        self.progress.update(self.task, completed=step, phase=phase)

    def _subscribers(
        self, run: str, connections: int, expected: int, **options: Any
    ) -> Subscribers:
        address = (self.server.host, self.server.port)
        return Subscribers(
            self.kind, address, f"bench/{run}", connections, expected, self.folder, **options
        )

    def _prime(self, subscribers: Subscribers, run: str) -> None:
        self.server.publish(run, 1, self.size)
        subscribers.primed(PRIME_TIMEOUT + subscribers.connections / 1000)

    def latency(self, figures: RealtimeFigures) -> None:
        samples: int = self.options["latency_samples"]
        with self._subscribers("latency", 1, 1 + samples, latency=True) as subscribers:
            subscribers.ready(30.0)
            self._prime(subscribers, "latency")
            self.server.publish("latency", samples, self.size, LATENCY_INTERVAL)
            (result,) = subscribers.done(30.0 + samples * LATENCY_INTERVAL * 5)
        latency = result["latency"]
        figures.latency_samples = latency["samples"]
        figures.latency_p50_us = latency["p50_us"]
        figures.latency_p99_us = latency["p99_us"]
        figures.latency_mean_us = latency["mean_us"]
        figures.latency_max_us = latency["max_us"]
        if latency["samples"] < samples:
            raise ConfigError(f"only {latency['samples']:,} of {samples:,} timed messages arrived")

    def idle(self, figures: RealtimeFigures) -> None:
        """Memory per idle subscriber, on a fresh server process of the same target.

        Fresh, because thousands of connections closing would disturb what is
        measured after them, and memory freed by earlier phases would be
        reused by these connections and hide their cost. A few subscribers
        that receive one message first warm the paths every subscriber takes.
        """
        idle: int = self.options["idle"]
        if idle == 0:
            return
        server = RealtimeServer(self.server.name)
        with server:
            lab = _Lab(self.transport, server, self.options, self.folder, self.progress, self.task)
            with lab._subscribers("warm-up", IDLE_WARMUP, 1) as subscribers:
                subscribers.ready(30.0)
                lab._prime(subscribers, "warm-up")
            server.settle()
            before = server.rss_kib()
            with lab._subscribers("idle", idle, 0, processes=CLIENT_PROCESSES) as subscribers:
                opened = subscribers.ready(30.0 + idle / 100)
                time.sleep(0.5)
                server.settle()
                after = server.rss_kib()
                subscribers.stop()
        figures.idle_connections = opened
        if before is not None and after is not None and opened:
            figures.idle_rss_before_kib, figures.idle_rss_after_kib = before, after
            figures.idle_kib_per_connection = (after - before) / opened

    def stream(self, figures: RealtimeFigures) -> None:
        count: int = self.options["stream_messages"]
        figures.stream_messages = count
        with self._subscribers("stream", 1, 1 + count) as subscribers:
            subscribers.ready(30.0)
            self._prime(subscribers, "stream")
            blast = self.server.publish("stream", count, self.size)
            (result,) = subscribers.done(30.0 + count / 5_000)
        figures.stream_received = received = result["received"] - 1
        if received < count:
            raise ConfigError(f"the subscriber received {received:,} of {count:,} messages")
        figures.stream_seconds = seconds = (result["last_ns"] - blast.first_ns) / 1e9
        figures.stream_events_per_second = count / seconds

    def fanout(self, figures: RealtimeFigures) -> None:
        clients: int = self.options["clients"]
        messages: int = self.options["messages"]
        figures.fanout_clients, figures.fanout_messages = clients, messages
        with self._subscribers(
            "fanout", clients, 1 + messages, processes=CLIENT_PROCESSES
        ) as subscribers:
            subscribers.ready(30.0 + clients / 100)
            self._prime(subscribers, "fanout")
            self.server.settle()
            cpu_before, began = self.server.cpu_seconds(), time.monotonic()
            blast = self.server.publish("fanout", messages, self.size)
            results = subscribers.done(30.0 + clients * messages / 10_000)
            cpu_after, ended = self.server.cpu_seconds(), time.monotonic()
        received = sum(r["received"] for r in results)
        figures.fanout_publish_seconds = (blast.last_ns - blast.first_ns) / 1e9
        figures.fanout_deliveries = received - clients  # one primer each
        figures.fanout_complete_clients = sum(r["complete"] for r in results)
        figures.wire_bytes_per_message = sum(r["bytes"] for r in results) / max(1, received)
        if cpu_before is not None and cpu_after is not None:
            figures.fanout_server_cpu_share = (cpu_after - cpu_before) / (ended - began)
        if all(r["cpu_after_primed"] is not None for r in results):
            clients_cpu = sum(r["cpu_after_primed"] for r in results)
            figures.fanout_client_cpu_share = clients_cpu / (ended - began)
        if figures.fanout_complete_clients < clients:
            raise ConfigError(
                f"{figures.fanout_deliveries:,} of {clients * messages:,} deliveries arrived "
                f"({figures.fanout_complete_clients:,} of {clients:,} clients got every message)"
            )
        last = max(r["last_ns"] for r in results)
        figures.fanout_seconds = seconds = (last - blast.first_ns) / 1e9
        figures.fanout_deliveries_per_second = clients * messages / seconds

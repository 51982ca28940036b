"""``polyport bench webhooks``: signed deliveries from the SQLite outbox to a local receiver.

The lab starts a polyport node in a process of its own (this module run as
``python -m polyport.bench.webhooks node DB``: REST and the webhooks edge,
the SQLite event log and outbox in a temporary file, ``127.0.0.1`` allowed)
and serves the receiver itself, on an ephemeral port of 127.0.0.1: a bare
asyncio protocol parsing with httptools and answering ``200`` at once. It
subscribes ``endpoints`` endpoints (100), each its own URL on the receiver,
so every event becomes ``endpoints`` deliveries, each signed for its
endpoint. Then, on loopback:

1. **check**: one event; every endpoint must receive it, and the
   ``standardwebhooks`` library must verify each signature with that
   endpoint's secret — figures of a sender that does not sign right mean
   nothing;
2. **sustained**: events published at a steady pace inside the node
   (``rate`` deliveries per second in all, 2,000 by default) for ``duration``
   seconds; each event carries its publish time (``time.time()``) and the
   receiver subtracts it on arrival: event→receipt latency p50/p99, and the
   rate actually achieved;
3. **burst**: ``burst`` events published back to back: deliveries per second
   from the first publish to the last receipt, the outbox's ceiling.

Then, unless ``receiver`` is off, the other direction
(:mod:`polyport.bench.webhooks_receiver`): a receiver node's
acknowledgements per second for new and for repeated delivery ids, and the
rate its handler drains the inbox at.

Figures are printed, with the goal (≥ 2,000 deliveries/s, p50 < 20 ms), and
written as ``webhooks.json`` and ``webhooks.md`` in the output directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import httptools
import orjson
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from polyport.bench.report import machine_info
from polyport.bench.webhooks_receiver import (
    ReceiverFigures,
    check_options,
    json_request,
    markdown_lines,
    run_receiver_bench,
)
from polyport.core.errors import ConfigError

HOST = "127.0.0.1"
GOAL_RATE = 2000.0
GOAL_P50_MS = 20.0
PACKAGES = ("polyport", "httptools", "standardwebhooks")
_OK = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"


# -- the receiver (in the lab's process) --------------------------------------------------


@dataclass
class Receipts:
    """What the receiver saw: per request its path, webhook id, latency and arrival."""

    count: int = 0
    first: float = 0.0
    last: float = 0.0
    latencies: list[float] = field(default_factory=list)
    keep: int = 0  # requests kept whole for the signature check
    kept: list[tuple[bytes, dict[str, str], bytes]] = field(default_factory=list)
    waiter: asyncio.Future[None] | None = None
    target: int = 0

    def reset(self, target: int, keep: int = 0) -> asyncio.Future[None]:
        self.count = 0
        self.latencies = []
        self.kept = []
        self.keep = keep
        self.target = target
        self.waiter = asyncio.get_running_loop().create_future()
        return self.waiter


class _ReceiverProtocol(asyncio.Protocol):
    """One keep-alive connection from the node: parse, note, answer 200."""

    def __init__(self, receipts: Receipts) -> None:
        self.receipts = receipts
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.body: list[bytes] = []
        self.headers: dict[str, str] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses; they quack alike.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.close()

    def on_url(self, url: bytes) -> None:
        self.url = url

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.receipts.keep:
            self.headers[name.decode().lower()] = value.decode()

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        now = time.time()
        body = b"".join(self.body)
        self.body = []
        r = self.receipts
        try:
            sent = orjson.loads(body)["data"]["t"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            sent = now
        r.latencies.append(now - sent)
        if r.count == 0:
            r.first = now
        r.count += 1
        r.last = now
        if len(r.kept) < r.keep:
            r.kept.append((self.url, self.headers, body))
        self.headers = {}
        if self.transport is not None:
            self.transport.write(_OK)
        if r.waiter is not None and r.count >= r.target and not r.waiter.done():
            r.waiter.set_result(None)


# -- the node (in its own process) ---------------------------------------------------------


def _node_main(database: str) -> None:
    """Serve REST and webhooks for the lab; announce the port on stdout."""
    from pydantic import BaseModel

    from polyport import Service, Settings
    from polyport.node import Node, bind_socket

    service = Service("webhookbench", description="Publishes events for the webhooks bench.")

    class Tick(BaseModel):
        i: int
        t: float
        pad: str = ""

    ticked = service.event("bench.tick", Tick, channel="bench")

    @service.method
    async def blast(count: int, interval: float = 0.0, size: int = 0) -> int:
        """Publish ``count`` events, ``interval`` seconds apart (0: back to back)."""
        pad = "x" * size
        loop = asyncio.get_running_loop()
        start = loop.time()
        for i in range(count):
            if interval:
                delay = start + i * interval - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            elif i % 100 == 0:
                await asyncio.sleep(0)  # let the outbox write and the sender start
            await service.publish(ticked, {"i": i, "t": time.time(), "pad": pad})
        return count

    settings = Settings(
        database=database,
        dev=True,
        log={"access": False},
        rate_limit={"enabled": False},
        webhooks={"allow_private": [HOST], "retry_schedule": [0.0, 1.0, 5.0]},
    )
    node = Node(service, settings, edges=["rest", "webhooks"])
    sock = bind_socket(HOST, 0)
    print(f"port {sock.getsockname()[1]}", flush=True)
    try:
        import uvloop

        uvloop.run(node.serve(sock))
    except ImportError:
        asyncio.run(node.serve(sock))


@contextlib.contextmanager
def node_process(database: Path, start_timeout: float = 30.0) -> Iterator[tuple[int, int]]:
    """The node's process, until the block ends; yields its HTTP port and its PID."""
    process = subprocess.Popen(
        [sys.executable, "-m", "polyport.bench.webhooks", "node", str(database)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().split()
        if len(line) != 2 or not line[1].isdigit():
            stderr = process.stderr.read() if process.stderr else ""
            raise ConfigError(f"the bench node did not start: {stderr.strip()[-500:]}")
        port = int(line[1])
        deadline = time.monotonic() + start_timeout
        while _request(port, "GET", "/healthz")[0] != 200:
            if time.monotonic() > deadline:
                raise ConfigError("the bench node did not become healthy")
            time.sleep(0.05)
        yield port, process.pid
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def _request(port: int, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    try:
        return json_request(port, method, path, body, timeout=600)
    except OSError:
        return 0, None


# -- the lab ----------------------------------------------------------------------------------


@dataclass
class WebhookFigures:
    endpoints: int
    check_verified: int
    sustained_target_rate: float
    sustained_rate: float
    sustained_deliveries: int
    latency_p50_ms: float
    latency_p99_ms: float
    latency_max_ms: float
    burst_deliveries: int
    burst_rate: float
    burst_p50_ms: float
    burst_p99_ms: float
    #: The node's CPU time (user + system) per delivery in the burst, in µs: the
    #: figure least disturbed by a busy machine. None where /proc is missing.
    burst_cpu_us: float | None = None
    #: The receiving side (None when not measured).
    receiver: ReceiverFigures | None = None


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process, from ``/proc`` (None elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _lab(
    *,
    endpoints: int,
    rate: float,
    duration: float,
    burst: int,
    size: int,
    database: Path,
    progress: Progress,
) -> WebhookFigures:
    from standardwebhooks.webhooks import Webhook

    receipts = Receipts()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _ReceiverProtocol(receipts), HOST, 0)
    rport = server.sockets[0].getsockname()[1]
    task = progress.add_task("starting the node", total=None)
    try:
        with node_process(database) as (port, pid):
            call = _request
            progress.update(task, description=f"subscribing {endpoints} endpoints")
            secrets: dict[bytes, str] = {}
            for k in range(endpoints):
                status, body = await asyncio.to_thread(
                    call,
                    port,
                    "POST",
                    "/v1/webhooks",
                    {"url": f"http://{HOST}:{rport}/e/{k}", "event_types": ["bench.*"]},
                )
                if status != 201:
                    raise ConfigError(f"could not subscribe: {status} {body}")
                secrets[f"/e/{k}".encode()] = body["secret"]

            progress.update(task, description="checking signatures")
            done = receipts.reset(endpoints, keep=endpoints)
            await asyncio.to_thread(call, port, "POST", "/v1/blast", {"count": 1})
            await asyncio.wait_for(done, 30)
            verified = 0
            for url, headers, body in receipts.kept:
                Webhook(secrets[url]).verify(body, headers)  # raises if wrong
                verified += 1
            if {u for u, _, _ in receipts.kept} != set(secrets):
                raise ConfigError("not every endpoint received the check event")

            events = max(1, round(rate * duration / endpoints))
            interval = endpoints / rate
            progress.update(task, description=f"sustained: {rate:,.0f} deliveries/s")
            done = receipts.reset(events * endpoints)
            started = time.time()
            await asyncio.to_thread(
                call,
                port,
                "POST",
                "/v1/blast",
                {"count": events, "interval": interval, "size": size},
            )
            await asyncio.wait_for(done, duration * 10 + 60)
            sustained = list(receipts.latencies)
            sustained_rate = receipts.count / max(receipts.last - started, 1e-9)
            sustained_count = receipts.count

            progress.update(task, description=f"burst: {burst * endpoints:,} deliveries")
            done = receipts.reset(burst * endpoints)
            cpu = _cpu_seconds(pid)
            started = time.time()
            await asyncio.to_thread(call, port, "POST", "/v1/blast", {"count": burst, "size": size})
            await asyncio.wait_for(done, 600)
            burst_rate = receipts.count / max(receipts.last - started, 1e-9)
            cpu_after = _cpu_seconds(pid)
            cpu_us = (
                round((cpu_after - cpu) / receipts.count * 1e6, 1)
                if cpu is not None and cpu_after is not None
                else None
            )
            bursted = list(receipts.latencies)
            progress.update(task, description="done", completed=1, total=1)
            return WebhookFigures(
                endpoints=endpoints,
                check_verified=verified,
                sustained_target_rate=rate,
                sustained_rate=round(sustained_rate, 1),
                sustained_deliveries=sustained_count,
                latency_p50_ms=round(_percentile(sustained, 0.5) * 1000, 2),
                latency_p99_ms=round(_percentile(sustained, 0.99) * 1000, 2),
                latency_max_ms=round(max(sustained) * 1000, 2),
                burst_deliveries=receipts.count,
                burst_rate=round(burst_rate, 1),
                burst_p50_ms=round(statistics.median(bursted) * 1000, 2),
                burst_p99_ms=round(_percentile(bursted, 0.99) * 1000, 2),
                burst_cpu_us=cpu_us,
            )
    finally:
        server.close()


def run_webhooks_bench(
    *,
    endpoints: int = 100,
    rate: float = GOAL_RATE,
    duration: float = 10.0,
    burst: int = 200,
    size: int = 100,
    output: Path = Path("bench-results"),
    console: Console | None = None,
    receiver: bool = True,
    connections: int = 32,
    generator: str = "auto",
) -> WebhookFigures:
    """Run the lab and write ``webhooks.json`` and ``webhooks.md`` into ``output``.

    ``receiver``: measure the receiving side too, for ``duration`` seconds per
    phase with ``connections`` connections from ``generator`` (auto, wrk, python).
    """
    console = console or Console()
    if endpoints < 1 or rate <= 0 or duration <= 0 or burst < 1:
        raise ConfigError("endpoints, rate, duration and burst must be positive")
    if receiver:
        check_options(duration, connections, generator)  # fail now, not after the first part
    machine = machine_info(PACKAGES)
    with (
        tempfile.TemporaryDirectory(prefix="polyport-webhooks-") as tmp,
        Progress(
            TextColumn("[bold]webhooks[/]"),
            TextColumn("{task.description}"),
            BarColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        ) as progress,
    ):
        figures = asyncio.run(
            _lab(
                endpoints=endpoints,
                rate=rate,
                duration=duration,
                burst=burst,
                size=size,
                database=Path(tmp) / "bench.sqlite3",
                progress=progress,
            )
        )
        if receiver:
            task = progress.add_task("receiver", total=None)
            figures.receiver = run_receiver_bench(
                seconds=duration,
                connections=connections,
                generator=generator,
                status=lambda text: progress.update(task, description=text),
            )
    options: dict[str, Any] = {
        "endpoints": endpoints,
        "rate": rate,
        "duration": duration,
        "burst": burst,
        "size": size,
        "receiver": receiver,
    }
    if receiver:
        options |= {"connections": connections, "generator": generator}
    output.mkdir(parents=True, exist_ok=True)
    result = {
        "bench": "webhooks",
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
        "options": options,
        "machine": machine,
        "figures": asdict(figures),
        "goal": {"deliveries_per_s": GOAL_RATE, "p50_ms": GOAL_P50_MS},
    }
    (output / "webhooks.json").write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    markdown = render_markdown(figures, options, machine)
    (output / "webhooks.md").write_text(markdown)
    console.print(markdown, markup=False)  # "[epoll]" in a version is no markup
    return figures


def render_markdown(f: WebhookFigures, options: dict[str, Any], machine: dict[str, Any]) -> str:
    rate_ok = f.sustained_rate >= GOAL_RATE * 0.98 and f.burst_rate >= GOAL_RATE
    p50_ok = f.latency_p50_ms < GOAL_P50_MS
    mark = {True: "met", False: "**not met**"}
    cpu = f"{f.burst_cpu_us:.0f} µs" if f.burst_cpu_us is not None else "not measured"
    lines = [
        "## Webhooks",
        "",
        f"{f.endpoints} endpoints on one local receiver, every event delivered to each, "
        f"signed (all {f.check_verified} check signatures verified by `standardwebhooks`). "
        f"Machine: {machine.get('cpu_count')} cores, load {machine.get('load_average_1m')} "
        f"before the run, Python {machine.get('python')}.",
        "",
        "| phase | deliveries | deliveries/s | p50 ms | p99 ms |",
        "|---|---:|---:|---:|---:|",
        f"| sustained ({f.sustained_target_rate:,.0f}/s asked, {options['duration']:g} s) "
        f"| {f.sustained_deliveries:,} | {f.sustained_rate:,.0f} | {f.latency_p50_ms:.1f} "
        f"| {f.latency_p99_ms:.1f} |",
        f"| burst ({options['burst']} events back to back) | {f.burst_deliveries:,} "
        f"| {f.burst_rate:,.0f} | {f.burst_p50_ms:.1f} | {f.burst_p99_ms:.1f} |",
        "",
        f"The node's CPU per delivery in the burst: {cpu}.",
        "",
        (
            f"Goal ≥ {GOAL_RATE:,.0f} deliveries/s: {mark[rate_ok]}; "
            f"p50 event→receipt < {GOAL_P50_MS:g} ms: {mark[p50_ok]}."
            if f.sustained_target_rate >= GOAL_RATE
            else f"(The sustained phase asked for less than the goal's {GOAL_RATE:,.0f}/s.)"
        ),
        "",
    ]
    if f.receiver is not None:
        lines += markdown_lines(f.receiver)
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "node":
        _node_main(sys.argv[2])
    else:
        sys.exit("usage: python -m polyport.bench.webhooks node DATABASE")

"""``polyport bench mqtt``: polyport's MQTT edge against Mosquitto, the same clients, one run.

Each **round** starts both brokers afresh — a node serving
:mod:`polyport.bench.mqtt_apps` (typed topics by default: each PUBLISH
validated against the event type's model and committed to the SQLite event
log, as polyport is meant to be used) and a private Mosquitto
(:mod:`polyport.bench.mqtt_targets`) — and runs each phase on one broker, then
the same phase on the other (the order alternating between rounds):

1. **idle**: ``idle`` connections opened (MQTT 5 CONNECT, keep-alive 300 s,
   200 at a time, over client processes of 2,500 connections each) on the
   fresh broker; its resident memory (``VmRSS``) before and with them held;
2. **QoS 0 throughput**: ``subscribers`` subscribed to the round's topic,
   ``publishers`` publishing ``messages`` ticks between them back to back —
   messages delivered per second, from the first publish to the last arrival;
3. **QoS 1 throughput**: the same at QoS 1, each publisher keeping
   ``in_flight`` PUBLISHes awaiting their PUBACK (at most the broker's Receive
   Maximum), each subscriber acknowledging what it receives;
4. **latency at QoS 0 and at QoS 1**: one publisher at a steady ``rate`` for
   ``duration`` seconds (the cluster bench's pacer), each tick carrying its
   ``time.monotonic_ns()``; one subscriber subtracts it on arrival: p50, p99.

The clients are :mod:`polyport.bench.mqtt_clients` processes (raw-socket
MQTT 5 on uvloop; publishers and subscribers apart), the same for both
brokers. Each reports its CPU time, and the lab reads each broker's from
``/proc``: a client near a whole core was the ceiling of its phase, and the
record says so. Figures are medians over the rounds; a ratio is the median
of the rounds' polyport ÷ Mosquitto.

Goals (issue 17): QoS 0 at least 0.8 of Mosquitto's, QoS 1 at least Mosquitto's, and
10,000 idle MQTT connections under 200 MiB of node memory.
"""

from __future__ import annotations

import json
import math
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

from polyport.bench.clients import ClientProcess
from polyport.bench.mqtt_apps import TOPICS
from polyport.bench.mqtt_targets import (
    MosquittoTarget,
    MqttTarget,
    PolyportTarget,
    mosquitto_binary,
    rss_kib,
    settle,
)
from polyport.bench.realtime_clients import raise_open_files_limit
from polyport.bench.report import TIMES, machine_info
from polyport.bench.targets import process_cpu_seconds
from polyport.core.errors import ConfigError

GOAL_QOS0 = 0.8
GOAL_QOS1 = 1.0
GOAL_IDLE = 10_000
GOAL_IDLE_MIB = 200.0
CLIENTS = "polyport.bench.mqtt_clients"
#: Seconds a subscriber waits with nothing arriving before it reports what it has.
QUIET = 3.0
#: Idle connections per client process (each holds a file descriptor per connection).
IDLE_PER_PROCESS = 2500
PACKAGES = ("polyport", "uvloop", "pydantic", "orjson")
NAMES = ("polyport", "mosquitto")


@dataclass
class Throughput:
    """One throughput phase on one broker."""

    delivered_per_second: float = 0.0
    published_per_second: float = 0.0
    expected: int = 0
    received: int = 0
    lost: int = 0
    refused: int = 0
    seconds: float = 0.0
    #: CPU time over the phase's span, in cores: the broker's, and the busiest client's.
    broker_cpu: float = 0.0
    publisher_cpu: float = 0.0
    subscriber_cpu: float = 0.0
    ended: list[str] = field(default_factory=list)


@dataclass
class Latency:
    """One steady-rate phase on one broker."""

    p50_ms: float = 0.0
    p99_ms: float = 0.0
    samples: int = 0
    lost: int = 0
    behind_ms: float = 0.0
    broker_cpu: float = 0.0


@dataclass
class Idle:
    """Idle connections held by a fresh broker, and its memory."""

    asked: int = 0
    opened: int = 0
    failed: int = 0
    error: str | None = None
    open_seconds: float = 0.0
    rss_before_mib: float = 0.0
    rss_mib: float = 0.0
    per_connection_kib: float = 0.0
    dropped: int = 0


@dataclass
class Round:
    """Every phase of one round on one broker."""

    qos0: Throughput = field(default_factory=Throughput)
    qos1: Throughput = field(default_factory=Throughput)
    latency0: Latency = field(default_factory=Latency)
    latency1: Latency = field(default_factory=Latency)
    idle: Idle | None = None


@dataclass(frozen=True, slots=True)
class Shape:
    """What every round does."""

    messages: int
    publishers: int
    subscribers: int
    in_flight: int
    size: int
    rate: float
    duration: float
    idle: int


# -- the client processes -----------------------------------------------------------------


class _Clients:
    """The client processes of one phase; each one closed whatever happens."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.processes: list[ClientProcess] = []

    def start(self, config: dict[str, Any]) -> ClientProcess:
        name = f"{config['client_id']}.stderr"
        client = ClientProcess(CLIENTS, json.dumps(config), self.folder / name)
        self.processes.append(client)
        return client

    def __enter__(self) -> _Clients:
        return self

    def __exit__(self, *exc: object) -> None:
        for client in self.processes:
            client.close()


def _expect(client: ClientProcess, event: str, timeout: float) -> dict[str, Any]:
    message = client.expect(event, timeout)
    if message is None:
        raise ConfigError(f"an MQTT bench client did not report {event!r} within {timeout:g} s")
    return message


def _pad(size: int) -> int:
    """The padding that makes a tick about ``size`` bytes of JSON."""
    bare = len(b'{"p":0,"seq":100000,"ts":1000000000000000,"pad":""}')
    return max(0, size - bare)


def _cpu(pid: int) -> float:
    return process_cpu_seconds(pid) or 0.0


def throughput(target: MqttTarget, qos: int, shape: Shape, folder: Path, run: str) -> Throughput:
    """``shape.messages`` published back to back at ``qos``; what the subscribers got."""
    per = shape.messages // shape.publishers
    total = per * shape.publishers
    base = {"host": target.host, "port": target.mqtt_port, "topic": f"bench/{run}", "qos": qos}
    with _Clients(folder) as clients:
        subs = [
            clients.start(
                {**base, "role": "sub", "client_id": f"{run}-s{i}", "expected": total}
                | {"quiet": QUIET}
            )
            for i in range(shape.subscribers)
        ]
        for sub in subs:
            _expect(sub, "ready", 20)
        pubs = [
            clients.start(
                {**base, "role": "pub", "client_id": f"{run}-p{i}", "count": per, "p": i}
                | {"pad": _pad(shape.size), "in_flight": shape.in_flight}
            )
            for i in range(shape.publishers)
        ]
        for pub in pubs:
            _expect(pub, "ready", 20)
        cpu = _cpu(target.pid)
        start = time.monotonic_ns() + 20_000_000
        for pub in pubs:
            pub.tell(f"go {start}")
        published = [_expect(pub, "done", 60 + total / 1000) for pub in pubs]
        received = [_expect(sub, "done", QUIET + 30) for sub in subs]
        cpu = _cpu(target.pid) - cpu
    first = min(p["first_ns"] for p in published)
    last = max((s["last_ns"] for s in received if s["last_ns"]), default=first)
    span = max(1e-9, (last - first) / 1e9)
    written = max(1e-9, (max(p["acked_ns"] for p in published) - first) / 1e9)
    got = sum(s["received"] for s in received)
    return Throughput(
        delivered_per_second=got / span,
        published_per_second=total / written,
        expected=total * shape.subscribers,
        received=got,
        lost=max(0, total * shape.subscribers - got),
        refused=sum(p["refused"] for p in published),
        seconds=span,
        broker_cpu=cpu / span,
        publisher_cpu=max(p["cpu_seconds"] for p in published) / span,
        subscriber_cpu=max(s["cpu_seconds"] for s in received) / span,
        ended=sorted({p["ended"] for p in published} | {s["ended"] for s in received}),
    )


def latency(target: MqttTarget, qos: int, shape: Shape, folder: Path, run: str) -> Latency:
    """One publisher at ``shape.rate`` for ``shape.duration`` s; one subscriber's latencies."""
    count = max(1, int(shape.rate * shape.duration))
    base = {"host": target.host, "port": target.mqtt_port, "topic": f"bench/{run}", "qos": qos}
    with _Clients(folder) as clients:
        sub = clients.start(
            {**base, "role": "sub", "client_id": f"{run}-s", "expected": count, "quiet": QUIET}
        )
        _expect(sub, "ready", 20)
        pub = clients.start(
            {**base, "role": "pub", "client_id": f"{run}-p", "count": count, "p": 0}
            | {"pad": _pad(shape.size), "rate": shape.rate}
        )
        _expect(pub, "ready", 20)
        cpu = _cpu(target.pid)
        pub.tell(f"go {time.monotonic_ns() + 20_000_000}")
        published = _expect(pub, "done", 60 + shape.duration * 2)
        received = _expect(sub, "done", QUIET + 30)
        cpu = _cpu(target.pid) - cpu
    return Latency(
        p50_ms=received["latency_p50_ms"],
        p99_ms=received["latency_p99_ms"],
        samples=received["latency_samples"],
        lost=max(0, count - received["received"]),
        behind_ms=published.get("behind_ms", 0.0),
        broker_cpu=cpu / max(shape.duration, 1e-9),
    )


def idle(
    target: MqttTarget, count: int, folder: Path, run: str, say: Callable[[str], None]
) -> Idle:
    """``count`` idle connections held at once by a fresh broker: its memory with them."""
    settle(target.pid)
    figures = Idle(asked=count, rss_before_mib=(rss_kib(target.pid) or 0.0) / 1024)
    processes = max(1, math.ceil(count / IDLE_PER_PROCESS))
    shares = [count // processes + (i < count % processes) for i in range(processes)]
    started = time.monotonic()
    with _Clients(folder) as clients:
        holders = [
            clients.start(
                {"role": "idle", "host": target.host, "port": target.mqtt_port}
                | {"client_id": f"{run}-i{i}", "count": share, "batch": 200}
            )
            for i, share in enumerate(shares)
        ]
        for i, holder in enumerate(holders):
            ready = _expect(holder, "ready", 60 + count / 200)
            figures.opened += ready["open"]
            figures.failed += ready["failed"]
            figures.error = figures.error or ready["error"]
            say(f"{figures.opened:,} of {count:,} open ({i + 1}/{len(holders)} processes)")
        figures.open_seconds = time.monotonic() - started
        settle(target.pid)
        figures.rss_mib = (rss_kib(target.pid) or 0.0) / 1024
        for holder in holders:
            holder.stop()
        figures.dropped = sum(_expect(h, "done", 30)["dropped"] for h in holders)
    if figures.opened:
        grown = figures.rss_mib - figures.rss_before_mib
        figures.per_connection_kib = grown * 1024 / figures.opened
    return figures


# -- the lab -------------------------------------------------------------------------------


def run_mqtt_bench(
    *,
    console: Console,
    messages: int = 50_000,
    publishers: int = 2,
    subscribers: int = 1,
    in_flight: int = 64,
    size: int = 100,
    rate: float = 1000.0,
    duration: float = 5.0,
    idle_connections: int = 10_000,
    topics: str = "typed",
    repeats: int = 3,
    output: Path = Path("bench-results"),
) -> dict[str, Any]:
    """Run ``repeats`` paired rounds; print the figures and goals; write ``mqtt.json``."""
    if not (100 <= messages <= 5_000_000 and 1 <= publishers <= 16 and 1 <= subscribers <= 16):
        raise ConfigError("messages 100-5,000,000, publishers 1-16, subscribers 1-16")
    if not (1 <= in_flight <= 65535 and 0 <= size <= 60_000 and 1 <= repeats <= 20):
        raise ConfigError("in-flight 1-65,535, size 0-60,000 bytes, repeats 1-20")
    if not (1 <= rate <= 100_000 and 0.1 <= duration <= 600 and 0 <= idle_connections <= 100_000):
        raise ConfigError("rate 1-100,000 per second, duration 0.1-600 s, idle 0-100,000")
    if topics not in TOPICS:
        raise ConfigError(f"topics: one of {', '.join(TOPICS)}")
    mosquitto_binary()  # a one-line error before anything starts
    raise_open_files_limit()  # inherited by the brokers and the clients
    shape = Shape(
        messages - messages % publishers,
        publishers,
        subscribers,
        in_flight,
        size,
        rate,
        duration,
        idle_connections,
    )
    machine = machine_info(PACKAGES)
    rounds: list[dict[str, Round]] = []
    token = uuid.uuid4().hex[:6]
    console.print(
        f"[bold]polyport bench mqtt[/]: polyport ({topics} topics) against Mosquitto; "
        f"{shape.messages:,} messages of ~{size} B per throughput phase "
        f"({publishers} publisher{'s' * (publishers > 1)}, {subscribers} subscriber"
        f"{'s' * (subscribers > 1)}), {rate:,.0f}/s for {duration:g} s timed, "
        f"{idle_connections:,} idle connections; {repeats} round{'s' * (repeats > 1)}"
    )
    with tempfile.TemporaryDirectory(prefix="polyport-bench-mqtt-") as scratch:
        folder = Path(scratch)
        for number in range(repeats):
            order = NAMES if number % 2 == 0 else NAMES[::-1]
            rounds.append(_round(console, shape, topics, order, folder, f"{token}r{number}"))
            _say_round(console, number, repeats, rounds[-1])
    summary = {name: _medians([r[name] for r in rounds]) for name in NAMES}
    ratios = _ratios(rounds)
    goal = _verdicts(summary, ratios, shape)
    mosquitto_version = MosquittoTarget(1000).version()
    record: dict[str, Any] = {
        "bench": "mqtt",
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine | {"mosquitto": mosquitto_version},
        "options": asdict(shape) | {"topics": topics, "repeats": repeats, "protocol": "MQTT 5"},
        "goal": goal,
        "targets": summary,
        "ratios": ratios,
        "rounds": [{name: asdict(r[name]) for name in NAMES} for r in rounds],
    }
    console.print(_table(summary, ratios))
    for line, verdict in goal.items():
        mark = "[green]PASS[/]" if verdict["met"] else "[red]MISS[/]"
        if verdict["met"] is None:
            mark = "[yellow]NOT JUDGED[/]"
        console.print(f"{mark} {line}: {verdict['measured']}")
    output.mkdir(parents=True, exist_ok=True)
    (output / "mqtt.json").write_bytes(orjson.dumps(record, option=orjson.OPT_INDENT_2))
    console.print(f"[dim]written: {output / 'mqtt.json'}[/]")
    return record


def _round(
    console: Console, shape: Shape, topics: str, order: tuple[str, ...], folder: Path, tag: str
) -> dict[str, Round]:
    figures = {name: Round() for name in NAMES}
    polyport = PolyportTarget(topics=topics, max_connections=shape.idle + 1000)
    mosquitto = MosquittoTarget(max(10_000, shape.messages * 2))
    with polyport, mosquitto:
        targets: dict[str, MqttTarget] = {"polyport": polyport, "mosquitto": mosquitto}

        def each(what: str, measure: Callable[[MqttTarget, str], Any], attribute: str) -> None:
            for name in order:
                console.print(f"[dim]  {tag} · {targets[name].label} · {what}…[/]")
                result = measure(targets[name], f"{tag}{name[0]}{attribute}")
                setattr(figures[name], attribute, result)

        if shape.idle:
            each(
                f"{shape.idle:,} idle connections",
                lambda t, run: idle(
                    t, shape.idle, folder, run, lambda s: console.print(f"[dim]    {s}[/]")
                ),
                "idle",
            )
        each("QoS 0 throughput", lambda t, run: throughput(t, 0, shape, folder, run), "qos0")
        each("QoS 1 throughput", lambda t, run: throughput(t, 1, shape, folder, run), "qos1")
        each("QoS 0 latency", lambda t, run: latency(t, 0, shape, folder, run), "latency0")
        each("QoS 1 latency", lambda t, run: latency(t, 1, shape, folder, run), "latency1")
    return figures


def _say_round(console: Console, number: int, repeats: int, figures: dict[str, Round]) -> None:
    mine, theirs = figures["polyport"], figures["mosquitto"]
    console.print(
        f"round {number + 1} of {repeats}: QoS 0 {mine.qos0.delivered_per_second:,.0f}/s vs "
        f"{theirs.qos0.delivered_per_second:,.0f}/s, QoS 1 {mine.qos1.delivered_per_second:,.0f}/s"
        f" vs {theirs.qos1.delivered_per_second:,.0f}/s"
    )


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def _medians(rounds: list[Round]) -> dict[str, Any]:
    """A broker's medians over its rounds, and the busiest a client was (in cores)."""
    out: dict[str, Any] = {}
    for phase in ("qos0", "qos1"):
        runs: list[Throughput] = [getattr(r, phase) for r in rounds]
        out[phase] = {
            "delivered_per_second": _median([t.delivered_per_second for t in runs]),
            "published_per_second": _median([t.published_per_second for t in runs]),
            "lost": sum(t.lost for t in runs),
            "refused": sum(t.refused for t in runs),
            "broker_cpu": _median([t.broker_cpu for t in runs]),
            "publisher_cpu": _median([t.publisher_cpu for t in runs]),
            "subscriber_cpu": _median([t.subscriber_cpu for t in runs]),
        }
    for phase in ("latency0", "latency1"):
        timed: list[Latency] = [getattr(r, phase) for r in rounds]
        out[phase] = {
            "p50_ms": _median([t.p50_ms for t in timed]),
            "p99_ms": _median([t.p99_ms for t in timed]),
            "lost": sum(t.lost for t in timed),
            "broker_cpu": _median([t.broker_cpu for t in timed]),
        }
    held = [r.idle for r in rounds if r.idle is not None]
    if held:
        out["idle"] = {
            "asked": held[0].asked,
            "opened": min(i.opened for i in held),
            "rss_mib": _median([i.rss_mib for i in held]),
            "rss_before_mib": _median([i.rss_before_mib for i in held]),
            "per_connection_kib": _median([i.per_connection_kib for i in held]),
            "open_seconds": _median([i.open_seconds for i in held]),
            "error": next((i.error for i in held if i.error), None),
        }
    return out


def _ratios(rounds: list[dict[str, Round]]) -> dict[str, float]:
    """Each round's polyport figure over Mosquitto's, the median over the rounds."""

    def ratio(phase: str) -> float:
        values = [
            getattr(r["polyport"], phase).delivered_per_second
            / getattr(r["mosquitto"], phase).delivered_per_second
            for r in rounds
            if getattr(r["mosquitto"], phase).delivered_per_second
        ]
        return _median(values)

    return {"qos0": ratio("qos0"), "qos1": ratio("qos1")}


def _verdicts(
    summary: dict[str, dict[str, Any]], ratios: dict[str, float], shape: Shape
) -> dict[str, dict[str, Any]]:
    mine, theirs = summary["polyport"], summary["mosquitto"]

    def versus(phase: str) -> str:
        return (
            f"{ratios[phase]:.2f}{TIMES} ({mine[phase]['delivered_per_second']:,.0f}/s against "
            f"{theirs[phase]['delivered_per_second']:,.0f}/s)"
        )

    verdicts: dict[str, dict[str, Any]] = {
        f"QoS 0 ≥ {GOAL_QOS0}{TIMES} Mosquitto": {
            "met": ratios["qos0"] >= GOAL_QOS0,
            "measured": versus("qos0"),
        },
        f"QoS 1 ≥ {GOAL_QOS1}{TIMES} Mosquitto": {
            "met": ratios["qos1"] >= GOAL_QOS1,
            "measured": versus("qos1"),
        },
    }
    held = mine.get("idle")
    line = f"{GOAL_IDLE:,} idle connections < {GOAL_IDLE_MIB:g} MiB of node memory"
    if held is None:
        verdicts[line] = {"met": None, "measured": "not measured (--idle 0)"}
    else:
        measured = (
            f"{held['rss_mib']:.0f} MiB with {held['opened']:,} of {held['asked']:,} open "
            f"({held['per_connection_kib']:.1f} KiB each; Mosquitto "
            f"{theirs['idle']['rss_mib']:.1f} MiB)"
        )
        complete = held["opened"] >= GOAL_IDLE and shape.idle >= GOAL_IDLE
        verdicts[line] = {
            "met": (held["rss_mib"] < GOAL_IDLE_MIB) if complete else None,
            "measured": measured if complete else f"{measured}: fewer than {GOAL_IDLE:,}",
        }
    return verdicts


def _table(summary: dict[str, dict[str, Any]], ratios: dict[str, float]) -> Table:
    table = Table(title="mqtt: publish → subscriber, polyport against Mosquitto (medians)")
    columns = (
        "broker",
        "QoS 0 msg/s",
        "QoS 1 msg/s",
        "QoS 0 p50/p99 ms",
        "QoS 1 p50/p99 ms",
        "idle RSS MiB",
        "KiB/conn",
        "lost",
    )
    for column in columns:
        table.add_column(column, justify="left" if column == "broker" else "right")
    for name, label in (("polyport", "polyport"), ("mosquitto", "Mosquitto")):
        s = summary[name]
        held = s.get("idle")
        table.add_row(
            label,
            f"{s['qos0']['delivered_per_second']:,.0f}",
            f"{s['qos1']['delivered_per_second']:,.0f}",
            f"{s['latency0']['p50_ms']:.2f} / {s['latency0']['p99_ms']:.2f}",
            f"{s['latency1']['p50_ms']:.2f} / {s['latency1']['p99_ms']:.2f}",
            f"{held['rss_mib']:.1f}" if held else "-",
            f"{held['per_connection_kib']:.1f}" if held else "-",
            str(sum(s[p]["lost"] for p in ("qos0", "qos1", "latency0", "latency1"))),
        )
    table.add_row(
        "polyport ÷ Mosquitto", f"{ratios['qos0']:.2f}{TIMES}", f"{ratios['qos1']:.2f}{TIMES}"
    )
    return table

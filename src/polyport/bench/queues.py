"""``polyport bench queues``: durable enqueue/s, consume+ack/s and enqueue→handler latency.

Each **target** is one way of keeping a queue, measured in the lab's own
process on uvloop, three phases each:

1. **enqueue**: ``messages`` sends, ``in_flight`` at a time, each one durable
   before it returns (``queue.send`` through the node's queue runner, or the
   bare client's publish-and-confirm) — messages per second;
2. **consume**: the queue those sends filled, drained by a consumer that
   acknowledges each message after a handler that does nothing (polyport's
   consumer with ``concurrency`` 64 and ``prefetch`` 256, or the bare
   client's receive-and-ack loop) — messages per second from the consumer's
   start to the last ack;
3. **latency**: with the consumer running, sends at a steady ``rate`` (1,000/s)
   for ``duration`` seconds (the cluster bench's pacer), each carrying
   ``time.monotonic()`` at its send; the handler subtracts it on arrival —
   enqueue→handler p50 and p99.

Targets: ``sqlite`` (the embedded default: the node's work queue in a SQLite
file, group-committed), and the engines' work queues (``postgresql``,
``redis``, ``nats``) when asked for — each a :class:`WorkQueueBroker` as a node
on that engine runs it. Every target runs in a namespace of its own (a
temporary file, a schema, a key prefix, a bucket name) removed afterwards.

The native brokers (``redis-streams``, ``nats-jetstream``, ``rabbitmq``) are
each paired, round by round, with their bare client doing the same three
phases (see :mod:`.queues_bare`); ``nats-jetstream`` also with a second
baseline, the bare client confirming what the port confirms (sends
deduplicated by id, acks confirmed), whose ratios are reported beside the
first and not judged. ``rabbitmq`` is the broker an ``amqp://`` URL names
(its options too: ``?queue_type=classic``), under a prefix of the round's own.

The goals (issue 16): the embedded queue ≥ 10,000 durable messages/s
enqueued and consumed, each broker backend ≥ 0.7 times its bare client, and p50
enqueue→handler < 5 ms at 1,000 messages/s.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import orjson
from pydantic import BaseModel
from rich.console import Console
from rich.table import Table

from polyport.bench.cluster_ticks import pace
from polyport.bench.report import TIMES, machine_info
from polyport.core.broker import Broker
from polyport.core.config import QueuesConfig
from polyport.core.errors import ConfigError
from polyport.core.metrics import Metrics
from polyport.core.queuebroker import WorkQueueBroker
from polyport.core.queuerunner import QueueRunner
from polyport.core.workqueue import WorkQueue

if TYPE_CHECKING:
    from polyport.backends.rabbitmq.rabbitbroker import RabbitBroker

GOAL_RATE = 10_000.0
GOAL_P50_MS = 5.0
GOAL_VS_BARE = 0.7
#: The node's work queue on each engine, and the native brokers.
WORK_QUEUE_TARGETS = ("sqlite", "postgresql", "redis", "nats")
BROKER_TARGETS = ("redis-streams", "nats-jetstream", "rabbitmq")
TARGETS = (*WORK_QUEUE_TARGETS, *BROKER_TARGETS)
#: A broker target's bare client doing the same work, measured in the same run.
BARE = {"redis-streams": "redis-py", "nats-jetstream": "nats-py", "rabbitmq": "aio-pika"}
#: A second baseline, reported beside the first and outside the goal: the bare client
#: with the port's wire guarantees (sends deduplicated by id, acks confirmed).
BARE_CONFIRMED = {"nats-jetstream": "nats-py, msg ids + ack_sync"}
PACKAGES = ("polyport", "uvloop", "psycopg", "redis", "nats-py", "aio-pika")
DEFAULT_URLS = {
    "postgresql": "postgresql://postgres@127.0.0.1:5432/test",
    "redis": "redis://127.0.0.1:6379/0",
    "nats": "nats://127.0.0.1:4222",
    "redis-streams": "redis://127.0.0.1:6379/0",
    "nats-jetstream": "nats://127.0.0.1:4222",
    "rabbitmq": "amqp://guest:guest@127.0.0.1:5672/",
}
#: The bench service's one queue.
QUEUE = "ticks"


class Tick(BaseModel):
    """A bench message: its number, and when it was sent (for the latency phase)."""

    n: int
    ts: float


@dataclass
class RunFigures:
    """One round of one target."""

    enqueue_per_second: float = 0.0
    consume_per_second: float = 0.0
    latency_p50_ms: float = 0.0
    latency_p99_ms: float = 0.0
    latency_samples: int = 0
    sent_per_second: float = 0.0
    lost: int = 0


@dataclass
class TargetFigures:
    """A target's medians over its rounds, and every round."""

    target: str
    enqueue_per_second: float
    consume_per_second: float
    latency_p50_ms: float
    latency_p99_ms: float
    lost: int
    runs: list[RunFigures] = field(default_factory=list)
    error: str | None = None
    #: Against its bare client (medians of the rounds' ratios): enqueue, consume.
    ratios: dict[str, float] | None = None
    #: Against the second baseline (:data:`BARE_CONFIRMED`), where there is one.
    ratios_confirmed: dict[str, float] | None = None


# -- where each target keeps its queue ----------------------------------------------------


@contextlib.asynccontextmanager
async def work_queue_of(target: str, url: str | None) -> AsyncIterator[WorkQueue]:
    """A work queue of ``target`` in a namespace of its own, removed afterwards."""
    token = uuid.uuid4().hex[:10]
    if target == "sqlite":
        from polyport.backends.sqlite import SqliteDatabase, SqliteWorkQueue

        with tempfile.TemporaryDirectory(prefix="ppbench-queues-") as folder:
            yield SqliteWorkQueue(SqliteDatabase(Path(folder) / "queues.sqlite3"))
        return
    if target == "postgresql":
        import psycopg

        from polyport.backends.postgresql import PostgresDatabase, PostgresWorkQueue

        base = url or DEFAULT_URLS["postgresql"]
        schema = f"ppbench_{token}"
        try:
            yield PostgresWorkQueue(PostgresDatabase(base, schema=schema, max_size=8))
        finally:
            async with await psycopg.AsyncConnection.connect(base, autocommit=True) as conn:
                await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        return
    if target == "redis":
        from polyport.backends.redis import RedisWorkQueue

        base = url or DEFAULT_URLS["redis"]
        prefix = f"ppbench-{token}"
        try:
            yield RedisWorkQueue(base, prefix=prefix)
        finally:
            await _drop_redis_keys(base, prefix)
        return
    if target == "nats":
        from polyport.backends.nats import NatsWorkQueue

        base = url or DEFAULT_URLS["nats"]
        name = f"ppbench-{token}"
        try:
            yield NatsWorkQueue(base, name=name)
        finally:
            await _drop_nats_streams(base, f"KV_{name}")
        return
    raise ConfigError(f"unknown target {target!r}; known: {', '.join(TARGETS)}")


@contextlib.asynccontextmanager
async def broker_of(target: str, url: str | None) -> AsyncIterator[Broker]:
    """The broker ``target`` keeps queues in, in a namespace of its own removed afterwards."""
    if target in WORK_QUEUE_TARGETS:
        async with work_queue_of(target, url) as work_queue:
            yield WorkQueueBroker(work_queue, kind=target, owner="bench", poll_interval=0.05)
        return
    token = uuid.uuid4().hex[:10]
    if target == "redis-streams":
        from polyport.backends.redis.broker import RedisStreamsBroker

        base = url or DEFAULT_URLS[target]
        prefix = f"ppbench-{token}"
        try:
            yield RedisStreamsBroker(base, prefix=prefix, owner="bench", poll_interval=0.05)
        finally:
            await _drop_redis_keys(base, prefix)
        return
    if target == "nats-jetstream":
        from polyport.backends.nats.broker import NatsJetStreamBroker

        prefix = f"ppbench-{token}"
        broker = NatsJetStreamBroker(url or DEFAULT_URLS[target], prefix=prefix, owner="bench")
        try:
            yield broker
        finally:
            await _drop_nats_streams(url or DEFAULT_URLS[target], prefix)
        return
    if target == "rabbitmq":
        from polyport.brokers import build_broker

        prefix = f"ppbench-{token}"
        where = with_query(url or DEFAULT_URLS[target], prefix=prefix)
        rabbit = cast("RabbitBroker", build_broker(where, owner="bench", poll_interval=0.05))
        try:
            yield rabbit
        finally:
            await _drop_rabbit_queues(rabbit)
        return
    raise ConfigError(f"unknown target {target!r}; known: {', '.join(TARGETS)}")


def with_query(url: str, **options: str) -> str:
    """``url`` with ``options`` in its query, in place of any it had of those names."""
    parts = urlsplit(url)
    kept = [(k, v) for k, v in parse_qsl(parts.query) if k not in options]
    return urlunsplit(parts._replace(query=urlencode([*kept, *options.items()])))


async def _drop_rabbit_queues(broker: RabbitBroker) -> None:
    """Delete the queues, streams and exchanges of the bench queue under the broker's
    prefix (those of every queue it declared, and the bench's, declared or not)."""
    import aio_pika

    from polyport.backends.rabbitmq.layout import Layout
    from polyport.backends.rabbitmq.topology import delete

    layouts = {Layout(broker.prefix, QUEUE, broker.partitions)}
    layouts |= {state.layout for state in broker.queues.values() if not state.layout.temporary}
    connection = await aio_pika.connect(broker.url)
    try:
        assert connection.transport is not None
        channel = await connection.transport.connection.channel()
        for layout in layouts:
            await delete(channel, layout)
    finally:
        await connection.close()


async def _drop_nats_streams(url: str, prefix: str) -> None:
    """Delete the streams whose name starts with ``prefix``."""
    import nats

    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        for info in await js.streams_info():
            stream = info.config.name or ""
            if stream.startswith(prefix):
                with contextlib.suppress(Exception):
                    await js.delete_stream(stream)
    finally:
        await nc.close()


async def _drop_redis_keys(url: str, prefix: str) -> None:
    """Delete the keys whose name holds ``prefix``."""
    from redis.asyncio import Redis

    client = Redis.from_url(url)
    try:
        keys = [k async for k in client.scan_iter(match=f"*{prefix}*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


# -- one round ---------------------------------------------------------------------------


def _service(on_tick: Callable[[Tick], None]) -> Any:
    from polyport import Service

    svc = Service("benchq")
    queue = svc.queue(QUEUE, Tick)

    @queue.consumer(concurrency=64, prefetch=256, max_attempts=3)
    async def handle(tick: Tick) -> None:
        on_tick(tick)

    return svc, queue


@dataclass(frozen=True, slots=True)
class _Shape:
    """What a round does: how many messages, how many sends at once, the steady phase."""

    messages: int
    in_flight: int
    rate: float
    duration: float


async def _round(target: str, url: str | None, shape: _Shape) -> RunFigures:
    messages, in_flight, rate, duration = (
        shape.messages,
        shape.in_flight,
        shape.rate,
        shape.duration,
    )
    figures = RunFigures()
    arrivals: list[float] = []
    seen: set[int] = set()
    drained = asyncio.Event()
    measured = asyncio.Event()
    want = messages
    total = int(rate * duration)

    def on_tick(tick: Tick) -> None:
        now = time.monotonic()
        if tick.n >= 0:
            seen.add(tick.n)
            if len(seen) >= want:
                drained.set()
        else:
            arrivals.append((now - tick.ts) * 1000.0)
            if len(arrivals) >= total:
                measured.set()

    svc, queue = _service(on_tick)
    from polyport.core.spec import build_spec

    spec = build_spec(svc)
    async with broker_of(target, url) as broker:
        runner = QueueRunner(spec, broker, Metrics(), QueuesConfig(poll_interval=0.05))
        await runner.open()
        try:
            # 1. enqueue
            gate = asyncio.Semaphore(in_flight)

            async def send(n: int) -> None:
                async with gate:
                    await runner.send(queue, Tick(n=n, ts=0.0))

            started = time.perf_counter()
            await asyncio.gather(*(send(n) for n in range(messages)))
            figures.enqueue_per_second = messages / (time.perf_counter() - started)
            # 2. consume
            started = time.perf_counter()
            await runner.start()
            try:
                async with asyncio.timeout(max(60.0, messages / 500)):
                    await drained.wait()
            except TimeoutError:
                figures.lost = want - len(seen)
            figures.consume_per_second = len(seen) / (time.perf_counter() - started)
            # 3. latency at a steady rate
            await steady_phase(
                figures,
                lambda n, ts: runner.send(queue, Tick(n=n, ts=ts)),
                arrivals,
                asyncio.ensure_future(measured.wait()),
                rate=rate,
                duration=duration,
            )
        finally:
            await runner.stop()
    return figures


async def steady_phase(
    figures: RunFigures,
    send: Callable[[int, float], Awaitable[object]],
    arrivals: list[float],
    arrived: asyncio.Future[Any],
    *,
    rate: float,
    duration: float,
) -> None:
    """The latency phase: ``send(n, ts)`` for ``n`` = -1, -2, … at ``rate`` per second for
    ``duration`` seconds, through the cluster bench's pacer
    (:func:`~polyport.bench.cluster_ticks.pace`), ``ts`` the send's ``time.monotonic()``;
    then up to 10 s for ``arrived`` (the consumer started before, which fills
    ``arrivals`` with each arrival's latency in ms). Records the rate achieved and the
    latencies; a failed send fails the round."""
    paced = await pace(
        lambda seq, ts_ns: send(-1 - seq, ts_ns / 1e9),
        first=0,
        count=int(rate * duration),
        rate=rate,
        start_ns=time.monotonic_ns() + 50_000_000,
    )
    if paced.error is not None:
        raise RuntimeError(f"a send of the latency phase failed: {paced.error}")
    span = (paced.last_ns - paced.first_ns) / 1e9
    figures.sent_per_second = paced.published / span if span > 0 else 0.0
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(10):
            await arrived
    arrived.cancel()
    latencies(figures, arrivals, paced.published)


def latencies(figures: RunFigures, arrivals: list[float], total: int) -> None:
    """Record the latency phase's p50 and p99 (ms), and the sends that never arrived."""
    figures.latency_samples = len(arrivals)
    figures.lost += total - len(arrivals)
    if arrivals:
        ordered = sorted(arrivals)
        figures.latency_p50_ms = ordered[len(ordered) // 2]
        figures.latency_p99_ms = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


async def _bare_round(
    target: str, url: str | None, shape: _Shape, *, confirmed: bool = False
) -> RunFigures:
    from polyport.bench import queues_bare

    if target == "redis-streams":
        return await queues_bare.redis_round(
            url or DEFAULT_URLS[target],
            messages=shape.messages,
            in_flight=shape.in_flight,
            rate=shape.rate,
            duration=shape.duration,
        )
    if target == "nats-jetstream":
        return await queues_bare.nats_round(
            url or DEFAULT_URLS[target],
            messages=shape.messages,
            in_flight=shape.in_flight,
            rate=shape.rate,
            duration=shape.duration,
            confirmed=confirmed,
        )
    if target == "rabbitmq":
        return await queues_bare.rabbitmq_round(
            url or DEFAULT_URLS[target],
            messages=shape.messages,
            in_flight=shape.in_flight,
            rate=shape.rate,
            duration=shape.duration,
        )
    raise ConfigError(f"{target} has no bare client in this lab")


# -- the lab -----------------------------------------------------------------------------


def run_queues_bench(
    *,
    console: Console,
    targets: list[str] | None = None,
    urls: dict[str, str] | None = None,
    messages: int = 20_000,
    in_flight: int = 256,
    rate: float = 1000.0,
    duration: float = 5.0,
    repeats: int = 3,
    output: Path = Path("bench-results"),
) -> dict[str, Any]:
    """Run every target ``repeats`` times; print the figures, write ``queues.json``."""
    chosen = targets or ["sqlite"]
    unknown = [t for t in chosen if t not in TARGETS]
    if unknown:
        raise ConfigError(f"unknown target {unknown[0]!r}; known: {', '.join(TARGETS)}")
    if not (100 <= messages <= 10_000_000 and 1 <= in_flight <= 10_000 and 1 <= repeats <= 20):
        raise ConfigError("messages 100-10,000,000, in-flight 1-10,000, repeats 1-20")
    if not (1 <= rate <= 100_000 and 0.5 <= duration <= 600):
        raise ConfigError("rate 1-100,000 per second, duration 0.5-600 s")
    machine = machine_info(PACKAGES)
    results: list[TargetFigures] = []
    for target in chosen:
        runs: list[RunFigures] = []
        error = None
        bare_runs: list[RunFigures] = []
        confirmed_runs: list[RunFigures] = []
        for round_ in range(repeats):
            console.print(f"[dim]{target}: round {round_ + 1} of {repeats}…[/]")
            shape = _Shape(messages, in_flight, rate, duration)
            url = (urls or {}).get(target)
            try:
                runs.append(_run(_round(target, url, shape)))
                if target in BARE:
                    # Paired: the bare client right after, on the same machine state.
                    bare_runs.append(_run(_bare_round(target, url, shape)))
                if target in BARE_CONFIRMED:
                    confirmed_runs.append(_run(_bare_round(target, url, shape, confirmed=True)))
            except (OSError, ImportError) as exc:
                error = f"not available: {type(exc).__name__}: {exc}"
                console.print(f"[yellow]{target}: {error}[/]")
                break
        results.append(_summary(target, runs, error))
        mine = results[-1]
        if target in BARE:
            results.append(_summary(f"{target} (bare {BARE[target]})", bare_runs, error))
            mine.ratios = _ratios(runs, bare_runs)
        if target in BARE_CONFIRMED:
            name = f"{target} (bare {BARE_CONFIRMED[target]})"
            results.append(_summary(name, confirmed_runs, error))
            mine.ratios_confirmed = _ratios(runs, confirmed_runs)
    goal = _verdicts(results)
    record: dict[str, Any] = {
        "bench": "queues",
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine,
        "options": {
            "targets": chosen,
            "messages": messages,
            "in_flight": in_flight,
            "rate": rate,
            "duration": duration,
            "repeats": repeats,
        },
        "goal": goal,
        "targets": [asdict(r) for r in results],
    }
    console.print(_table(results))
    for line, verdict in goal.items():
        mark = "[green]MET[/]" if verdict["met"] else "[red]MISSED[/]"
        console.print(f"{mark} {line}: {verdict['measured']}")
    output.mkdir(parents=True, exist_ok=True)
    (output / "queues.json").write_bytes(orjson.dumps(record, option=orjson.OPT_INDENT_2))
    console.print(f"[dim]written: {output / 'queues.json'}[/]")
    return record


def _run(coro: Any) -> RunFigures:
    try:
        import uvloop
    except ImportError:
        result: RunFigures = asyncio.run(coro)
        return result
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        done: RunFigures = runner.run(coro)
        return done


def _summary(target: str, runs: list[RunFigures], error: str | None) -> TargetFigures:
    def median(values: list[float]) -> float:
        return statistics.median(values) if values else 0.0

    return TargetFigures(
        target=target,
        enqueue_per_second=median([r.enqueue_per_second for r in runs]),
        consume_per_second=median([r.consume_per_second for r in runs]),
        latency_p50_ms=median([r.latency_p50_ms for r in runs]),
        latency_p99_ms=median([r.latency_p99_ms for r in runs]),
        lost=sum(r.lost for r in runs),
        runs=runs,
        error=error,
    )


def _ratios(runs: list[RunFigures], bare: list[RunFigures]) -> dict[str, float]:
    """Each round's polyport figure over the bare client's, the median over the rounds."""
    pairs = list(zip(runs, bare, strict=False))
    if not pairs:
        return {}
    return {
        "enqueue": statistics.median(
            p.enqueue_per_second / b.enqueue_per_second for p, b in pairs if b.enqueue_per_second
        ),
        "consume": statistics.median(
            p.consume_per_second / b.consume_per_second for p, b in pairs if b.consume_per_second
        ),
    }


def _verdicts(results: list[TargetFigures]) -> dict[str, dict[str, Any]]:
    verdicts: dict[str, dict[str, Any]] = {}
    embedded = next((r for r in results if r.target == "sqlite" and r.runs), None)
    if embedded is not None:
        slower = min(embedded.enqueue_per_second, embedded.consume_per_second)
        verdicts["embedded SQLite queue ≥ 10,000 durable messages/s enqueued and consumed"] = {
            "met": slower >= GOAL_RATE,
            "measured": f"enqueue {embedded.enqueue_per_second:,.0f}/s, "
            f"consume+ack {embedded.consume_per_second:,.0f}/s",
        }
    compared = [r for r in results if r.ratios]
    if compared:
        verdicts[f"each broker backend ≥ 0.7{TIMES} its bare client (enqueue and consume)"] = {
            "met": all(min(r.ratios.values()) >= GOAL_VS_BARE for r in compared if r.ratios),
            "measured": ", ".join(
                f"{r.target} enqueue {r.ratios['enqueue']:.2f}{TIMES}, "
                f"consume {r.ratios['consume']:.2f}{TIMES}"
                for r in compared
                if r.ratios
            ),
        }
    measured = [r for r in results if r.runs and "(bare" not in r.target]
    if measured:
        verdicts["p50 enqueue→handler < 5 ms at the steady rate"] = {
            "met": all(r.latency_p50_ms < GOAL_P50_MS for r in measured),
            "measured": ", ".join(f"{r.target} {r.latency_p50_ms:.2f} ms" for r in measured),
        }
        verdicts["no message lost"] = {
            "met": all(r.lost == 0 for r in measured),
            "measured": ", ".join(f"{r.target} {r.lost}" for r in measured),
        }
    return verdicts


def _table(results: list[TargetFigures]) -> Table:
    table = Table(title="queues: durable enqueue, consume+ack, enqueue→handler")
    for column in ("target", "enqueue/s", "consume+ack/s", "p50 ms", "p99 ms", "lost", "vs bare"):
        table.add_column(column, justify="right" if column != "target" else "left")
    for r in results:
        if not r.runs:
            table.add_row(r.target, "-", "-", "-", "-", r.error or "", "")
            continue
        versus = (
            f"{r.ratios['enqueue']:.2f}{TIMES} / {r.ratios['consume']:.2f}{TIMES}"
            if r.ratios
            else ""
        )
        if r.ratios_confirmed:
            versus += (
                f"\nconfirmed: {r.ratios_confirmed['enqueue']:.2f}{TIMES} / "
                f"{r.ratios_confirmed['consume']:.2f}{TIMES}"
            )
        table.add_row(
            r.target,
            f"{r.enqueue_per_second:,.0f}",
            f"{r.consume_per_second:,.0f}",
            f"{r.latency_p50_ms:.2f}",
            f"{r.latency_p99_ms:.2f}",
            str(r.lost),
            versus,
        )
    return table

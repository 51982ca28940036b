"""The bare clients of ``polyport bench queues``: each broker's own library doing the same
three phases as polyport's queue runner, so each ratio compares like with like.

* **redis-py** (against ``redis-streams``): ``XADD`` per message, ``in_flight`` at
  a time on a pool; a consumer group read with ``XREADGROUP … COUNT 256`` and one
  ``XACK`` per message after decoding it, up to 64 acks at once (the consumer's
  concurrency); the latency phase reads with ``BLOCK``.
* **nats-py** (against ``nats-jetstream``): ``js.publish`` awaiting its
  acknowledgement, ``in_flight`` at a time, to a work-queue stream on file storage;
  a durable pull consumer fetching 256 at a time and acknowledging each message.
  Its acks are ``msg.ack()``: sent, never confirmed, and its sends carry no id.
* **nats-py, confirmed** (a second baseline for ``nats-jetstream``, reported
  beside the first, not in its goal): the same, with what the broker port asks
  of every backend on the wire — each send carries a ``Nats-Msg-Id`` (deduplicated
  within the stream's window) and each ack is confirmed (``ack_sync``, a fetched
  batch's acks all in flight at once). polyport confirms its settlements by its
  lease record's compare-and-set rather than by ``ack_sync``; this measures what
  confirming costs nats-py itself.
* **aio-pika** (against ``rabbitmq``): persistent messages (``message_id``,
  ``content_type`` JSON) published to the default exchange on a channel with
  publisher confirms, each awaiting its confirm, ``in_flight`` at a time, to a
  durable queue of the kind the broker makes (quorum, unless the URL says
  ``queue_type=classic`` or RabbitMQ is older than 3.10); a consumer on a
  channel of its own with the same prefetch (256), its callback decoding each
  message and acknowledging it. The same consumer runs through the latency phase.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import orjson

if TYPE_CHECKING:
    from aio_pika.abc import AbstractIncomingMessage

    from polyport.bench.queues import RunFigures

GROUP = "bench"
BATCH = 256
ACKS_AT_ONCE = 64


async def redis_round(
    url: str, *, messages: int, in_flight: int, rate: float, duration: float
) -> RunFigures:
    """One round of bare redis-py on a stream of its own, deleted afterwards."""
    from redis.asyncio import BlockingConnectionPool, Redis

    from polyport.bench.queues import RunFigures, steady_phase

    figures = RunFigures()
    stream = f"ppbench-bare-{uuid.uuid4().hex[:10]}"
    pool = BlockingConnectionPool.from_url(url, max_connections=64)
    client = Redis(connection_pool=pool)
    try:
        await client.xgroup_create(stream, GROUP, id="0", mkstream=True)
        gate = asyncio.Semaphore(in_flight)

        async def send(n: int, ts: float) -> None:
            async with gate:
                await client.xadd(stream, {"body": orjson.dumps({"n": n, "ts": ts})})

        started = time.perf_counter()
        await asyncio.gather(*(send(n, 0.0) for n in range(messages)))
        figures.enqueue_per_second = messages / (time.perf_counter() - started)

        arrivals: list[float] = []
        acks = asyncio.Semaphore(ACKS_AT_ONCE)

        async def ack(entry: bytes) -> None:
            async with acks:
                await client.xack(stream, GROUP, entry)

        async def consume(until: int, *, measure: bool) -> int:
            got = 0
            pending: set[asyncio.Task[None]] = set()
            while got < until:
                answer = await client.xreadgroup(GROUP, "c", {stream: ">"}, count=BATCH, block=100)
                read: Any = answer or []
                for _, entries in read:
                    for entry, fields in entries:
                        tick = orjson.loads(fields[b"body"])
                        if measure:
                            arrivals.append((time.monotonic() - tick["ts"]) * 1000.0)
                        task = asyncio.ensure_future(ack(entry))
                        pending.add(task)
                        task.add_done_callback(pending.discard)
                        got += 1
            await asyncio.gather(*pending)
            return got

        started = time.perf_counter()
        consumed = await consume(messages, measure=False)
        figures.consume_per_second = consumed / (time.perf_counter() - started)

        reader = asyncio.ensure_future(consume(int(rate * duration), measure=True))
        await steady_phase(figures, send, arrivals, reader, rate=rate, duration=duration)
    finally:
        with contextlib.suppress(Exception):
            await client.delete(stream)
        await client.aclose()
        await pool.disconnect()
    return figures


async def nats_round(
    url: str,
    *,
    messages: int,
    in_flight: int,
    rate: float,
    duration: float,
    confirmed: bool = False,
) -> RunFigures:
    """One round of bare nats-py: a work-queue stream of its own (file storage, as the
    broker's), publishes awaiting their acknowledgement, a durable pull consumer fetching
    256 at a time and acknowledging each message; deleted afterwards. ``confirmed``: each
    publish with a ``Nats-Msg-Id``, each ack an ``ack_sync`` (a batch's all at once)."""
    import nats
    from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StorageType

    from polyport.bench.queues import RunFigures, steady_phase

    figures = RunFigures()
    name = f"ppbench-bare-{uuid.uuid4().hex[:10]}"
    subject = f"{name}.ticks"
    nc = await nats.connect(url)
    js = nc.jetstream()
    try:
        await js.add_stream(
            name=name,
            subjects=[subject],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
        )
        gate = asyncio.Semaphore(in_flight)

        async def send(n: int, ts: float) -> None:
            body = orjson.dumps({"n": n, "ts": ts})
            async with gate:
                if confirmed:
                    await js.publish(subject, body, headers={"Nats-Msg-Id": uuid.uuid4().hex})
                else:
                    await js.publish(subject, body)

        started = time.perf_counter()
        await asyncio.gather(*(send(n, 0.0) for n in range(messages)))
        figures.enqueue_per_second = messages / (time.perf_counter() - started)

        consumer = await js.pull_subscribe(
            subject, "bench", config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT)
        )
        arrivals: list[float] = []

        async def consume(until: int, *, measure: bool) -> int:
            got = 0
            while got < until:
                try:
                    batch = await consumer.fetch(BATCH, timeout=0.1)
                except nats.errors.TimeoutError:
                    continue
                if confirmed:
                    for msg in batch:
                        tick = orjson.loads(msg.data)
                        if measure:
                            arrivals.append((time.monotonic() - tick["ts"]) * 1000.0)
                    await asyncio.gather(*(msg.ack_sync() for msg in batch))
                    got += len(batch)
                    continue
                for msg in batch:
                    tick = orjson.loads(msg.data)
                    if measure:
                        arrivals.append((time.monotonic() - tick["ts"]) * 1000.0)
                    await msg.ack()
                    got += 1
            return got

        started = time.perf_counter()
        consumed = await consume(messages, measure=False)
        figures.consume_per_second = consumed / (time.perf_counter() - started)

        reader = asyncio.ensure_future(consume(int(rate * duration), measure=True))
        await steady_phase(figures, send, arrivals, reader, rate=rate, duration=duration)
    finally:
        with contextlib.suppress(Exception):
            await js.delete_stream(name)
        await nc.close()
    return figures


def amqp_address(url: str) -> tuple[str, str | None]:
    """A broker URL as aio-pika reads it (polyport's options taken out of its query), and
    the ``queue_type`` it asks for (None: the server's default)."""
    from polyport.backends.rabbitmq.broker import OPTIONS

    parts = urlsplit(url)
    pairs = parse_qsl(parts.query)
    queue_type = dict(pairs).get("queue_type")
    rest = [(k, v) for k, v in pairs if k not in OPTIONS]
    return urlunsplit(parts._replace(query=urlencode(rest))), queue_type


async def rabbitmq_round(
    url: str, *, messages: int, in_flight: int, rate: float, duration: float
) -> RunFigures:
    """One round of bare aio-pika: a durable queue of its own, of the kind the broker
    makes (quorum from RabbitMQ 3.10 on, unless the URL says ``queue_type=classic``),
    persistent publishes awaiting their confirms, a consumer with prefetch 256
    acknowledging each message; deleted afterwards."""
    import aio_pika

    from polyport.backends.rabbitmq.connection import server_version
    from polyport.backends.rabbitmq.rabbitbroker import QUORUM_SINCE
    from polyport.bench.queues import RunFigures, steady_phase

    figures = RunFigures()
    address, queue_type = amqp_address(url)
    name = f"ppbench-bare-{uuid.uuid4().hex[:10]}"
    connection = await aio_pika.connect(address)
    try:
        if queue_type is None:
            assert connection.transport is not None
            version = server_version(dict(connection.transport.connection.server_properties))
            queue_type = "classic" if version < QUORUM_SINCE else "quorum"
        arguments: dict[str, Any] = {"x-queue-type": "quorum"} if queue_type == "quorum" else {}
        publishing = await connection.channel(publisher_confirms=True)
        receiving = await connection.channel(publisher_confirms=False)
        await receiving.set_qos(prefetch_count=BATCH)
        queue = await receiving.declare_queue(name, durable=True, arguments=arguments)
        exchange = publishing.default_exchange
        gate = asyncio.Semaphore(in_flight)

        async def send(n: int, ts: float) -> None:
            message = aio_pika.Message(
                orjson.dumps({"n": n, "ts": ts}),
                message_id=os.urandom(16).hex(),
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            )
            async with gate:
                await exchange.publish(message, routing_key=name)

        started = time.perf_counter()
        await asyncio.gather(*(send(n, 0.0) for n in range(messages)))
        figures.enqueue_per_second = messages / (time.perf_counter() - started)

        arrivals: list[float] = []
        total = int(rate * duration)
        drained, measured = asyncio.Event(), asyncio.Event()
        seen = 0

        async def handle(message: AbstractIncomingMessage) -> None:
            nonlocal seen
            tick = orjson.loads(message.body)
            if tick["n"] >= 0:
                seen += 1
                if seen >= messages:
                    drained.set()
            else:
                arrivals.append((time.monotonic() - tick["ts"]) * 1000.0)
                if len(arrivals) >= total:
                    measured.set()
            await message.ack()

        started = time.perf_counter()
        consuming = await queue.consume(handle)
        try:
            async with asyncio.timeout(max(60.0, messages / 500)):
                await drained.wait()
        except TimeoutError:
            figures.lost = messages - seen
        figures.consume_per_second = seen / (time.perf_counter() - started)

        arrived = asyncio.ensure_future(measured.wait())
        await steady_phase(figures, send, arrivals, arrived, rate=rate, duration=duration)
        await queue.cancel(consuming)
    finally:
        with contextlib.suppress(Exception):
            channel = await connection.channel()
            await channel.queue_delete(name)
        await connection.close()
    return figures

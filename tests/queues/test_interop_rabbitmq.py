"""Queues on RabbitMQ with clients polyport did not write: plain aio-pika, both ways.

What a foreign publisher puts in ``{prefix}.{queue}`` (with or without a
``message_id`` — aio-pika then makes one; a client that sends none gets one
made by polyport, see ``tests/backends/test_rabbitmq_wire.py``) is handled
by a polyport consumer; a foreign message that
does not validate becomes a dead letter with the validation error; and what
polyport sends — ``queue.send`` and ``POST /v1/queues/{name}`` — a plain
consumer reads with the properties ``docs/queues.md`` documents.
"""

from __future__ import annotations

import asyncio
import datetime
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from pydantic import BaseModel
from tests.contract.rabbitmq_names import Names, rabbit

from polyport import Service, Settings
from polyport.core.errors import Internal
from polyport.core.queues import Backoff, Queue, QueueMessage
from polyport.node import Node
from polyport.testing import serve_in_thread

pytestmark = [pytest.mark.services, pytest.mark.timeout(120)]
__all__ = ["rabbit"]  # the fixture: a prefix of the test's own, its queues deleted after

TRACE = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


class Order(BaseModel):
    order: int


def settings(folder: Path, rabbit: Names) -> Settings:
    folder.mkdir(parents=True, exist_ok=True)
    return Settings.model_validate(
        {
            "dev": True,
            "database": str(folder / "db.sqlite3"),
            "rate_limit": {"enabled": False},
            "queues": {"poll_interval": 0.1, "broker": rabbit.url()},
        }
    )


def wait_until(predicate: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


async def publish(queue: str, messages: list[dict[str, Any]]) -> None:
    """Publish with plain aio-pika to the default exchange, persistent, confirmed."""
    import aio_pika

    connection = await aio_pika.connect(rabbit_url())
    async with connection:
        channel = await connection.channel()
        for m in messages:
            await channel.default_exchange.publish(
                aio_pika.Message(
                    m["body"],
                    message_id=m.get("id"),
                    content_type="application/json",
                    headers=m.get("headers"),
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                ),
                routing_key=queue,
            )


async def take(queue: str, count: int, *, ack: bool = True) -> list[Any]:
    """Read ``count`` messages of ``queue`` with plain aio-pika (waiting up to 10 s)."""
    import aio_pika

    connection = await aio_pika.connect(rabbit_url())
    got: list[Any] = []
    async with connection:
        channel = await connection.channel()
        found = await channel.get_queue(queue, ensure=True)
        deadline = time.monotonic() + 10
        while len(got) < count and time.monotonic() < deadline:
            message = await found.get(fail=False)
            if message is None:
                await asyncio.sleep(0.05)
                continue
            got.append(message)
            if ack:
                await message.ack()
            else:
                await message.nack(requeue=True)
    return got


def rabbit_url() -> str:
    from tests.contract.rabbitmq_names import URL

    return URL


def test_what_plain_aio_pika_publishes_is_consumed_and_the_invalid_dead_lettered(
    tmp_path: Path, rabbit: Names
) -> None:
    """With and without a message id; an invalid body goes to the dead letters, named."""
    handled: list[QueueMessage] = []
    svc = Service("interop")
    orders = svc.queue("orders", Order)

    @orders.consumer(max_attempts=2, backoff=Backoff(initial=0.05, max=0.05))
    async def handle(order: Order, message: QueueMessage) -> None:
        handled.append(message)

    layout = rabbit.made("orders")
    with serve_in_thread(svc, settings(tmp_path, rabbit), edges=["queues"]) as node:
        asyncio.run(
            publish(
                layout.main,
                [
                    {"id": "ext-1", "body": b'{"order": 1}', "headers": {"traceparent": TRACE}},
                    {"body": b'{"order": 2}'},
                    {"id": "ext-bad", "body": b'{"order": "one"}'},
                ],
            )
        )
        wait_until(lambda: len(handled) == 2)
        [first] = [m for m in handled if m.id == "ext-1"]
        assert first.attempt == 1 and first.headers["traceparent"] == TRACE
        assert first.headers["content-type"] == "application/json"
        # Without a message_id, aio-pika names the message itself (a random hex id).
        [other] = [m for m in handled if m.id != "ext-1"]
        assert len(other.id) == 32 and other.attempt == 1

        def dead() -> list[dict[str, Any]]:
            answer = httpx.get(f"{node.url}/v1/queues/orders/dead", timeout=10)
            assert answer.status_code == 200, answer.text
            found: list[dict[str, Any]] = answer.json()["items"]
            return found

        wait_until(lambda: len(dead()) == 1)
        [bad] = dead()
        assert bad["id"] == "ext-bad" and "invalid message" in bad["error"]
        assert "order" in bad["error"]
        assert len(handled) == 2  # never reached the handler
    # Read with plain aio-pika too: the dead letter keeps its body and says why.
    [letter] = asyncio.run(take(layout.dead, 1, ack=False))
    assert letter.message_id == "ext-bad" and letter.body == b'{"order": "one"}'
    assert "invalid message" in letter.headers["x-polyport-error"]


def test_what_polyport_sends_is_read_by_plain_aio_pika(tmp_path: Path, rabbit: Names) -> None:
    """queue.send and POST /v1/queues/{name}: the documented properties and headers."""
    svc = Service("interop")
    outbox = svc.queue("outbox", Order, public=True)  # no consumer: a foreign one reads it
    layout = rabbit.made("outbox")
    before = time.time()
    with serve_in_thread(svc, settings(tmp_path, rabbit), edges=["queues"]) as node:
        sent = node.call(outbox.send(Order(order=1), id="p-1", headers={"traceparent": TRACE}))
        assert sent.id == "p-1" and not sent.duplicate
        answer = httpx.post(
            f"{node.url}/v1/queues/outbox", json={"order": 2}, headers={"idempotency-key": "p-2"}
        )
        assert answer.status_code == 202, answer.text
        keyed = httpx.post(
            f"{node.url}/v1/queues/outbox?key=customer-7",
            json={"order": 3},
            headers={"idempotency-key": "p-3"},
        )
        assert keyed.status_code == 202, keyed.text
    got = asyncio.run(take(layout.main, 2))
    assert [m.message_id for m in got] == ["p-1", "p-2"]
    for message, order in zip(got, (1, 2), strict=True):
        assert orjson.loads(message.body) == {"order": order}
        assert message.content_type == "application/json"
        assert message.type == "interop.outbox"
        assert message.delivery_mode == 2
        assert isinstance(message.timestamp, datetime.datetime)
        assert abs(message.timestamp.timestamp() - before) < 60
        sent_ms = message.headers["x-polyport-sent"]
        assert isinstance(sent_ms, int) and abs(sent_ms / 1000 - before) < 60
        assert message.headers["x-polyport-send"]
        assert "x-polyport-attempts" not in message.headers  # none failed yet
    assert got[0].headers["traceparent"] == TRACE
    # A keyed message waits in its key's partition, the key in a header.
    partition = layout.part(zlib.crc32(b"customer-7") % layout.partitions)
    [in_partition] = asyncio.run(take(partition, 1))
    assert in_partition.message_id == "p-3"
    assert in_partition.headers["x-polyport-key"] == "customer-7"


# -- request and reply over the queue --------------------------------------------------


class Ask(BaseModel):
    n: int


class Answer(BaseModel):
    twice: int


def maths(*, answering: bool) -> tuple[Service, Queue]:
    svc = Service("maths")
    asks = svc.queue("asks", Ask)
    if answering:

        @asks.consumer(max_attempts=2, backoff=Backoff(initial=0.01, max=0.01))
        async def double(ask: Ask) -> Answer:
            if ask.n == 13:
                raise ValueError("unlucky")
            return Answer(twice=2 * ask.n)

    return svc, asks


async def exists(queue: str) -> bool:
    """Whether RabbitMQ has ``queue`` (a passive declare on a channel of its own)."""
    import aio_pika
    import aiormq

    connection = await aio_pika.connect(rabbit_url())
    async with connection:
        channel = await connection.channel()
        try:
            await channel.declare_queue(queue, passive=True)
        except aiormq.ChannelNotFoundEntity:
            return False
        except aiormq.ChannelLockedResource:
            return True  # exclusive to another connection: it is there
        return True


async def test_a_call_is_answered_by_another_node_and_its_reply_queue_goes(
    tmp_path: Path, rabbit: Names
) -> None:
    """queue.call: the answer comes back on the caller's reply queue (AMQP reply_to and
    correlation_id); a failed call names its dead letter; the reply queue is exclusive to
    the caller's connection, so it is gone once the caller stops."""
    rabbit.made("asks")
    answering, _ = maths(answering=True)
    calling, asks = maths(answering=False)
    worker = Node(answering, settings(tmp_path / "worker", rabbit), edges=[])
    caller = Node(calling, settings(tmp_path / "caller", rabbit), edges=[])
    async with worker.running():
        async with caller.running():
            with caller.publishing():
                # The caller has no consumer of its own, so no model to read the answer with.
                assert await asks.call({"n": 21}, timeout=10) == {"twice": 42}
                with pytest.raises(Internal, match="dead letter"):
                    await asks.call({"n": 13}, timeout=10)
            replies = caller.runtime.queues._replies
            assert replies is not None and await exists(f"{rabbit.prefix}.{replies}")
        assert not await exists(f"{rabbit.prefix}.{replies}")


async def test_a_plain_aio_pika_client_calls_a_polyport_consumer(
    tmp_path: Path, rabbit: Names
) -> None:
    """AMQP request/reply as any client does it: its own exclusive reply queue in
    reply_to, a correlation_id; the answer comes with both, status ok, the result's JSON."""
    import aio_pika

    layout = rabbit.made("asks")
    answering, _ = maths(answering=True)
    worker = Node(answering, settings(tmp_path / "worker", rabbit), edges=[])
    async with worker.running():
        connection = await aio_pika.connect(rabbit_url())
        async with connection:
            channel = await connection.channel()
            replies = await channel.declare_queue(exclusive=True)
            await channel.default_exchange.publish(
                aio_pika.Message(
                    b'{"n": 4}',
                    content_type="application/json",
                    correlation_id="call-1",
                    reply_to=replies.name,
                ),
                routing_key=layout.main,
            )
            async with replies.iterator(timeout=10) as answers:
                async for answer in answers:
                    async with answer.process():
                        assert answer.correlation_id == "call-1"
                        assert answer.headers["status"] == "ok"
                        assert orjson.loads(answer.body) == {"twice": 8}
                        assert answer.type == "maths.asks.reply"
                        break

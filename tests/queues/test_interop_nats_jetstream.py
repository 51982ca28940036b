"""Queues on NATS JetStream against a client polyport did not write: plain nats-py, both ways.

A node serves ``shop`` with ``queues.broker = nats://…?prefix=…``. What plain
``js.publish`` puts on a queue's subject — with a ``Nats-Msg-Id`` or without,
keyed by subject — is handled by the node's consumer; a foreign message that
does not validate becomes a dead letter with the validation error; and what
the node sends (``queue.send``, ``POST /v1/queues/{name}``) a plain nats-py
consumer reads with the documented subject and headers (docs/queues.md),
``traceparent`` among them when the request had one. And RPC over the queue:
another node answers on the caller's reply queue, whose streams are gone once
the caller stops.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from pydantic import BaseModel
from tests.conftest import require_service
from tests.contract.test_broker_nats_jetstream import URL, delete_streams

from polyport import Service, Settings
from polyport.core.errors import Internal
from polyport.core.queues import Backoff, Queue, QueueMessage
from polyport.node import Node
from polyport.testing import RunningNode, serve_in_thread

pytestmark = [pytest.mark.services, pytest.mark.timeout(60)]


class Order(BaseModel):
    order: int


def make_service(handled: list[tuple[Order, QueueMessage]]) -> Service:
    svc = Service("shop")
    orders = svc.queue("orders", Order)

    @orders.consumer(max_attempts=2, backoff=Backoff(initial=0.05, max=0.05))
    async def handle(order: Order, message: QueueMessage) -> None:
        handled.append((order, message))

    svc.queue("outbox", Order)  # no consumer here: a foreign consumer reads it
    return svc


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[RunningNode, str, list[tuple[Order, QueueMessage]]]]:
    require_service("NATS", 4222)
    prefix = f"pptest-interop-{uuid.uuid4().hex[:12]}"
    handled: list[tuple[Order, QueueMessage]] = []
    settings = Settings(
        dev=True,
        database=str(tmp_path / "db.sqlite3"),
        queues={"broker": f"{URL}?prefix={prefix}", "poll_interval": 0.1},
    )
    try:
        with serve_in_thread(make_service(handled), settings) as node:
            yield node, prefix, handled
    finally:
        asyncio.run(delete_streams(prefix))


def wait_until(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


async def plain_publish(subject: str, body: bytes, headers: dict[str, str] | None = None) -> int:
    """Publish as any nats-py program would; the stream sequence it got."""
    import nats

    nc = await nats.connect(URL)
    try:
        ack = await nc.jetstream().publish(subject, body, headers=headers)
        return ack.seq
    finally:
        await nc.close()


def test_a_plain_nats_py_publish_is_handled_by_a_polyport_consumer(served: Any) -> None:
    """With and without Nats-Msg-Id, on the queue's subject and on a key's: each is
    handled once, its id the Nats-Msg-Id (or #seq), its key the subject's, its headers kept."""
    node, prefix, handled = served
    trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    asyncio.run(plain_publish(f"{prefix}.orders", b'{"order": 1}', {"Nats-Msg-Id": "ext-1"}))
    seq = asyncio.run(plain_publish(f"{prefix}.orders", b'{"order": 2}'))
    asyncio.run(plain_publish(f"{prefix}.orders.k.cust-9", b'{"order": 3}', {"traceparent": trace}))
    # A second publish of a known Nats-Msg-Id is JetStream's duplicate: never handled twice.
    asyncio.run(plain_publish(f"{prefix}.orders", b'{"order": 1}', {"Nats-Msg-Id": "ext-1"}))
    wait_until(lambda: len(handled) == 3)
    time.sleep(0.3)
    by_order = {order.order: message for order, message in handled}
    assert sorted(by_order) == [1, 2, 3]
    assert by_order[1].id == "ext-1" and by_order[1].attempt == 1
    assert by_order[2].id == f"#{seq}" and by_order[2].key is None
    assert by_order[3].key == "cust-9" and by_order[3].headers["traceparent"] == trace
    stats = httpx.get(f"{node.url}/v1/queues/orders").json()
    assert (stats["waiting"], stats["in_flight"], stats["dead"]) == (0, 0, 0)


def test_a_foreign_message_that_does_not_validate_is_a_dead_letter(served: Any) -> None:
    """Invalid JSON and a wrong field never reach the handler: dead letters at once, the
    error naming what is wrong, the body kept as it came."""
    node, prefix, handled = served
    asyncio.run(plain_publish(f"{prefix}.orders", b'{"order": "many"}', {"Nats-Msg-Id": "bad"}))
    asyncio.run(plain_publish(f"{prefix}.orders", b"not json", {"Nats-Msg-Id": "worse"}))

    def dead() -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = httpx.get(f"{node.url}/v1/queues/orders/dead").json()["items"]
        return items

    wait_until(lambda: len(dead()) == 2)
    letters = {letter["id"]: letter for letter in dead()}
    assert letters["bad"]["error"].startswith("invalid message")
    assert "order" in letters["bad"]["error"]
    assert letters["bad"]["body"] == {"order": "many"} and letters["bad"]["attempts"] == 1
    assert letters["worse"]["error"].startswith("invalid message")
    assert letters["worse"]["body"] == "not json"
    assert handled == []


def test_what_polyport_sends_a_plain_nats_py_consumer_reads(served: Any) -> None:
    """queue.send and POST /v1/queues/{name}: the subject, the body (the model's JSON)
    and the documented headers, as a plain durable consumer of the stream sees them."""
    node, prefix, _ = served
    outbox = node.node.service.queues["outbox"]
    sent = node.call(outbox.send(Order(order=5), id="o-5", key="k-1"))
    assert not sent.duplicate
    trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    answer = httpx.post(
        f"{node.url}/v1/queues/outbox?delay=0.5",
        json={"order": 6},
        headers={"idempotency-key": "o-6", "traceparent": trace},
    )
    assert answer.status_code == 202
    before = time.time()

    async def read() -> list[Any]:
        import nats
        from nats.js.api import AckPolicy, ConsumerConfig

        nc = await nats.connect(URL)
        try:
            js = nc.jetstream()
            stream = f"{prefix}_outbox"
            await js.add_consumer(
                stream, ConsumerConfig(durable_name="plain", ack_policy=AckPolicy.EXPLICIT)
            )
            sub = await js.pull_subscribe_bind("plain", stream)
            msgs = await sub.fetch(2, timeout=5)
            for msg in msgs:
                await msg.ack()
            return msgs
        finally:
            await nc.close()

    first, second = asyncio.run(read())
    assert first.subject == f"{prefix}.outbox.k.k-1"
    assert orjson.loads(first.data) == {"order": 5}
    headers = first.headers or {}
    assert headers["Nats-Msg-Id"] == "o-5"
    assert headers["Content-Type"] == "application/json"
    assert headers["Polyport-Type"] == "shop.outbox"
    assert headers["Polyport-Key"] == "k-1"
    assert second.subject == f"{prefix}.outbox"
    assert orjson.loads(second.data) == {"order": 6}
    headers = second.headers or {}
    assert headers["Nats-Msg-Id"] == "o-6" and headers["Polyport-Type"] == "shop.outbox"
    assert headers["traceparent"].split("-")[1] == trace.split("-")[1]
    assert before - 1 < float(headers["Polyport-Not-Before"]) < before + 1


# -- request and reply over the queue --------------------------------------------------


class Ask(BaseModel):
    n: int


class Answer(BaseModel):
    twice: int


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    require_service("NATS", 4222)
    name = f"pptest-calls-{uuid.uuid4().hex[:12]}"
    yield name
    await delete_streams(name)


async def stream_names(prefix: str) -> list[str]:
    import nats

    nc = await nats.connect(URL)
    try:
        return sorted(
            info.config.name or ""
            for info in await nc.jetstream().streams_info()
            if (info.config.name or "").startswith(f"{prefix}_")
        )
    finally:
        await nc.close()


def service(*, answering: bool) -> tuple[Service, Queue]:
    svc = Service("maths")
    asks = svc.queue("asks", Ask)
    if answering:

        @asks.consumer(max_attempts=2, backoff=Backoff(initial=0.01, max=0.01))
        async def double(ask: Ask) -> Answer:
            if ask.n == 13:
                raise ValueError("unlucky")
            return Answer(twice=2 * ask.n)

    return svc, asks


async def test_a_call_is_answered_by_another_node_and_its_reply_queue_goes(
    tmp_path: Path, prefix: str
) -> None:
    """The answer comes back on the caller's reply queue; a failed call says dead letter;
    once the caller stops, its reply queue's streams are gone."""

    def settings(name: str) -> Settings:
        return Settings(
            dev=True,
            database=str(tmp_path / f"{name}.sqlite3"),
            queues={"broker": f"{URL}?prefix={prefix}", "poll_interval": 0.1},
        )

    answering, _ = service(answering=True)
    calling, asks = service(answering=False)
    worker = Node(answering, settings("worker"), edges=[])
    caller = Node(calling, settings("caller"), edges=[])
    async with worker.running():
        async with caller.running():
            with caller.publishing():
                # The caller has no consumer of its own, so no model to read the answer with.
                assert await asks.call({"n": 21}, timeout=10) == {"twice": 42}
                with pytest.raises(Internal, match="dead letter"):
                    await asks.call({"n": 13}, timeout=10)
            replies = [name for name in await stream_names(prefix) if "replies-" in name]
            assert len(replies) == 3
        assert [name for name in await stream_names(prefix) if "replies-" in name] == []

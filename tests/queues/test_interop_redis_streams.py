"""Redis Streams queues with a client polyport did not write, both ways: plain redis-py
``XADD`` entries are consumed by a node's consumer (an invalid one ends as a dead letter
with the validation error), and what a node sends (``queue.send`` and ``POST
/v1/queues/{name}``) is read by a plain ``XREADGROUP`` consumer of its own group with the
fields docs/queues.md lists (``traceparent`` among them when the request had one). And RPC
over the queue on the broker: the node's reply queue is a stream too, gone once it stops.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from pydantic import BaseModel
from tests.conftest import require_service

from polyport import Service, Settings
from polyport.backends.redis.broker import stream_key
from polyport.core.queues import Backoff, QueueMessage
from polyport.node import Node
from polyport.testing import RunningNode, serve_in_thread

pytestmark = [pytest.mark.services, pytest.mark.timeout(60)]

URL = "redis://127.0.0.1:6379/0"
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


class Work(BaseModel):
    n: int


def make_service(handled: list[QueueMessage]) -> Service:
    svc = Service("interop")
    work = svc.queue("work", Work, public=True)

    @work.consumer(max_attempts=2, backoff=Backoff(initial=0.05, max=0.05))
    async def handle(item: Work, message: QueueMessage) -> None:
        handled.append(message)

    svc.queue("outbox", Work, public=True)  # no consumer here: another program reads it
    return svc


@pytest.fixture
def redis() -> Iterator[Any]:
    """A plain, synchronous redis-py client, as another program would use."""
    require_service("Redis", 6379)
    from redis import Redis

    client = Redis.from_url(URL)
    yield client
    client.close()


@pytest.fixture
def prefix(redis: Any) -> Iterator[str]:
    """A key prefix of the test's own; its keys are deleted after it."""
    base = f"polyport-test-{uuid.uuid4().hex}"
    yield base
    keys = list(redis.scan_iter(match=f"*{base}*", count=1000))
    if keys:
        redis.delete(*keys)


@pytest.fixture
def served(tmp_path: Path, prefix: str) -> Iterator[tuple[RunningNode, list[QueueMessage]]]:
    handled: list[QueueMessage] = []
    settings = Settings(
        dev=True,
        database=str(tmp_path / "db.sqlite3"),
        queues={"poll_interval": 0.2, "broker": f"{URL}?prefix={prefix}"},
    )
    with serve_in_thread(make_service(handled), settings, edges=["queues"]) as node:
        yield node, handled


def wait_for(predicate: Callable[[], Any], seconds: float = 10.0) -> Any:
    deadline = time.monotonic() + seconds
    while not (found := predicate()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)
    return found


def test_plain_xadd_entries_are_consumed(
    served: tuple[RunningNode, list[QueueMessage]], redis: Any, prefix: str
) -> None:
    """An entry with only ``body`` is handled under its entry ID; one with ``id``, ``key``
    and a field of its own (``traceparent``) has them as id, key and header. Handled
    entries leave the stream."""
    node, handled = served
    stream = stream_key(prefix, "work")
    bare = redis.xadd(stream, {"body": b'{"n": 1}'}).decode()
    redis.xadd(
        stream,
        {"id": "ext-2", "body": b'{"n": 2}', "key": "c-7", "traceparent": "00-aa-bb-01"},
    )
    wait_for(lambda: len(handled) == 2)
    first, second = sorted(handled, key=lambda m: m.id != bare)
    assert first.id == bare and first.attempt == 1 and first.key is None
    assert first.queue == "work" and abs(first.sent - int(bare.split("-")[0]) / 1000) < 0.01
    assert second.id == "ext-2" and second.key == "c-7"
    assert second.headers == {"traceparent": "00-aa-bb-01"}
    stats = wait_for(
        lambda: (s := httpx.get(f"{node.url}/v1/queues/work").json())["in_flight"] == 0 and s
    )
    assert (stats["waiting"], stats["dead"], stats["broker"]) == (0, 0, "redis-streams")
    assert redis.xlen(stream) == 0


def test_a_foreign_entry_that_does_not_validate_is_a_dead_letter(
    served: tuple[RunningNode, list[QueueMessage]], redis: Any, prefix: str
) -> None:
    """A body that is not the queue's model, or no body at all, never reaches the handler:
    each ends in the dead letters with the validation error."""
    node, handled = served
    stream = stream_key(prefix, "work")
    redis.xadd(stream, {"id": "bad", "body": b'{"n": "not a number"}'})
    redis.xadd(stream, {"id": "empty", "type": "interop.work"})
    dead = wait_for(
        lambda: (
            (items := httpx.get(f"{node.url}/v1/queues/work/dead").json()["items"])
            and len(items) == 2
            and items
        )
    )
    by_id = {item["id"]: item for item in dead}
    assert by_id["bad"]["error"].startswith("invalid message")
    assert '"n"' in by_id["bad"]["error"] and by_id["bad"]["attempts"] == 1
    assert by_id["bad"]["body"] == {"n": "not a number"}
    assert by_id["empty"]["error"].startswith("invalid message")
    assert handled == []
    # On the dead stream, with the fields a foreign reader finds there.
    [(_, fields), _] = redis.xrange(stream + ":dead")
    assert fields[b"id"] == b"bad" and fields[b"attempts"] == b"1"
    assert fields[b"error"].startswith(b"invalid message") and float(fields[b"died"]) > 0


def test_what_a_node_sends_is_read_by_a_plain_consumer_group(
    served: tuple[RunningNode, list[QueueMessage]], redis: Any, prefix: str
) -> None:
    """``queue.send`` and ``POST /v1/queues/outbox`` write entries that a plain
    ``XREADGROUP`` consumer of its own group reads, with the documented fields."""
    node, _ = served
    stream = stream_key(prefix, "outbox")
    redis.xgroup_create(stream, "reporting", id="0", mkstream=True)
    outbox = node.node.service.queues["outbox"]
    sent = node.call(outbox.send(Work(n=5), id="p-5", key="customer-1"))
    assert not sent.duplicate
    answer = httpx.post(
        f"{node.url}/v1/queues/outbox?key=customer-2",
        json={"n": 6},
        headers={"Idempotency-Key": "p-6", "traceparent": TRACEPARENT},
    )
    assert answer.status_code == 202
    [(_, entries)] = redis.xreadgroup("reporting", "reader-1", {stream: ">"}, count=10)
    assert len(entries) == 2
    for (entry_id, fields), (id_, n, key) in zip(
        entries, [("p-5", 5, "customer-1"), ("p-6", 6, "customer-2")], strict=True
    ):
        assert fields[b"id"] == id_.encode()
        assert orjson.loads(fields[b"body"]) == {"n": n}
        assert fields[b"type"] == b"interop.outbox"
        assert fields[b"content-type"] == b"application/json"
        assert fields[b"attempts"] == b"0" and fields[b"key"] == key.encode()
        assert abs(float(fields[b"sent"]) - time.time()) < 30
        documented = {b"id", b"body", b"type", b"content-type", b"attempts", b"key", b"sent"}
        if id_ == "p-6":
            # The request's trace goes on with the message (same trace id, its own span).
            traced = fields.pop(b"traceparent").decode()
            assert traced.split("-")[1] == TRACEPARENT.split("-")[1]
        assert set(fields) == documented
        assert redis.xack(stream, "reporting", entry_id) == 1
    # polyport's own group has not received them: they wait for a polyport consumer.
    stats = httpx.get(f"{node.url}/v1/queues/outbox").json()
    assert (stats["waiting"], stats["in_flight"]) == (2, 0)


class Quote(BaseModel):
    cents: int


async def test_a_call_over_the_queue_gets_its_reply(
    tmp_path: Path, redis: Any, prefix: str
) -> None:
    """RPC over the broker on Redis Streams: the consumer's result comes back through the
    calling node's one reply queue, a stream of its own, deleted when the node stops."""
    svc = Service("pricing")
    quotes = svc.queue("quotes", Work)

    @quotes.consumer()
    async def price(item: Work) -> Quote:
        return Quote(cents=item.n * 2)

    settings = Settings(
        dev=True,
        database=str(tmp_path / "db.sqlite3"),
        queues={"poll_interval": 0.2, "broker": f"{URL}?prefix={prefix}"},
    )
    node = Node(svc, settings, edges=[])
    async with node.running():
        with node.publishing():
            results = await asyncio.gather(*(quotes.call({"n": n}, timeout=10) for n in range(5)))
        assert results == [Quote(cents=2 * n) for n in range(5)]
        # Calls made at once share the node's one reply queue.
        found = redis.scan_iter(match=f"*{prefix}*:queue:replies-*")
        assert len([key for key in found if b":" not in key.rsplit(b"replies-", 1)[1]]) == 1
    assert list(redis.scan_iter(match=f"*{prefix}*:queue:replies-*")) == []

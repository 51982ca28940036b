"""The message broker contract on Redis Streams (``queues.broker = redis://…``), and what the
streams add: entries other clients wrote, trimming, the consumer group, an unreachable or
lost Redis, one hash slot.

Each test gets a key prefix of its own and deletes its keys afterwards (the
``prefix`` fixture); no test flushes the database, which others may use.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from typing import Any

import pytest
from tests.contract.broker_contract import (
    LONG,
    SHORT,
    BrokerContract,
    BrokerFactory,
    message,
    nothing_for,
    receive_all,
)
from tests.contract.private_servers import closed_port
from tests.contract.test_workqueue_redis import URL, _keys, prefix

from polyport.backends.redis import broker as redis_broker
from polyport.backends.redis.broker import GROUP, RedisStreamsBroker, build, stream_key
from polyport.brokers import build_broker
from polyport.core.broker import Broker, OutgoingMessage, QueueOptions
from polyport.core.errors import Unavailable

pytestmark = [pytest.mark.services, pytest.mark.timeout(90)]
__all__ = ["prefix"]  # the fixture: a key prefix of the test's own, deleted after it


class TestRedisStreamsBroker(BrokerContract):
    """Every node a client of its own, and a consumer of its own in the group."""

    @pytest.fixture
    def make_broker(self, prefix: str) -> BrokerFactory:
        numbers = itertools.count(1)

        def make() -> Broker:
            return RedisStreamsBroker(
                URL, prefix=prefix, owner=f"node-{next(numbers)}", poll_interval=0.2
            )

        return make


@pytest.fixture
def make_broker(prefix: str) -> BrokerFactory:
    numbers = itertools.count(1)

    def make() -> Broker:
        return RedisStreamsBroker(
            URL, prefix=prefix, owner=f"node-{next(numbers)}", poll_interval=0.2
        )

    return make


@pytest.fixture
async def broker(make_broker: BrokerFactory) -> AsyncIterator[Broker]:
    opened = make_broker()
    await opened.open()
    await opened.declare(QueueOptions("q", dedup_window=3600))
    yield opened
    await opened.close()


@pytest.fixture
async def redis() -> AsyncIterator[Any]:
    """A plain redis-py client, as another program would use."""
    from redis.asyncio import Redis

    client = Redis.from_url(URL)
    yield client
    await client.aclose()


def test_the_registry_builds_it_for_both_schemes(prefix: str) -> None:
    """``redis://`` and ``rediss://`` name this broker; ``?prefix=`` names its keys."""
    for scheme in ("redis", "rediss"):
        made = build_broker(
            f"{scheme}://127.0.0.1:6379/0?prefix={prefix}", owner="o", poll_interval=1
        )
        assert isinstance(made, RedisStreamsBroker)
        assert made.prefix == prefix and made.owner == "o" and made.kind == "redis-streams"
    made = build("redis://127.0.0.1:6379/0", {}, owner="o", poll_interval=1)
    assert isinstance(made, RedisStreamsBroker) and made.prefix == "polyport"


async def test_a_queue_is_a_stream_with_the_documented_fields(
    broker: Broker, redis: Any, prefix: str
) -> None:
    """A send is an entry of ``{prefix}:queue:{name}`` with the fields docs/queues.md lists,
    read here with plain ``XRANGE``; the group ``polyport`` exists."""
    plain = message(1)
    headers = {**plain.headers, "traceparent": "00-ab-cd-01", "id": "x"}
    sent = OutgoingMessage(plain.id, plain.body, headers, key="k")
    await broker.send("q", [sent])
    stream = stream_key(prefix, "q")
    [(entry_id, fields)] = await redis.xrange(stream)
    assert fields[b"id"] == b"m1" and fields[b"body"] == b'{"n": "1"}'
    assert fields[b"type"] == b"test.q" and fields[b"content-type"] == b"application/json"
    assert fields[b"attempts"] == b"0" and fields[b"key"] == b"k"
    assert fields[b"traceparent"] == b"00-ab-cd-01"
    # A header named like a reserved field travels under header.{name}.
    assert fields[b"header.id"] == b"x"
    assert abs(float(fields[b"sent"]) - int(entry_id.split(b"-")[0]) / 1000) < 1
    groups = await redis.xinfo_groups(stream)
    assert [g["name"] for g in groups] == [GROUP.encode()]
    [got] = await receive_all(broker, want=1)
    assert got.headers["id"] == "x" and got.headers["traceparent"] == "00-ab-cd-01"


async def test_settled_entries_leave_the_stream(broker: Broker, redis: Any, prefix: str) -> None:
    """Trimming: an acknowledged (or retried, or dead) entry is deleted from the stream,
    which holds only what is ready or in flight."""
    stream = stream_key(prefix, "q")
    await broker.send("q", [message(n) for n in range(4)])
    got = await receive_all(broker, want=4)
    assert await redis.xlen(stream) == 4
    await broker.ack(got[0])
    await broker.retry(got[1], delay=30, error="x")
    await broker.dead_letter(got[2], error="x")
    assert await redis.xlen(stream) == 1
    assert (await redis.xpending(stream, GROUP))["pending"] == 1
    await broker.ack(got[3])
    assert await redis.xlen(stream) == 0
    stats = await broker.stats("q")
    assert (stats.waiting, stats.in_flight, stats.dead) == (1, 0, 1)


async def test_a_foreign_entry_is_received(broker: Broker, redis: Any, prefix: str) -> None:
    """An entry with only ``body`` is named by its entry ID, attempt 1, sent at its time;
    one with ``id``, ``key`` and fields of its own has them as id, key and headers."""
    stream = stream_key(prefix, "q")
    bare = (await redis.xadd(stream, {"body": b'{"n": 1}'})).decode()
    await redis.xadd(stream, {"id": "f-2", "body": b"{}", "key": "k", "x-mine": "yes"})
    first, second = await receive_all(broker, want=2)
    assert first.id == bare and first.body == b'{"n": 1}' and first.attempt == 1
    assert first.key is None and first.headers == {}
    assert abs(first.sent - int(bare.split("-")[0]) / 1000) < 0.01
    assert second.id == "f-2" and second.key == "k" and second.headers == {"x-mine": "yes"}
    # A retried foreign entry keeps its id.
    assert await broker.retry(first, delay=0, error="boom")
    [again] = await receive_all(broker, want=1)
    assert again.id == bare and again.attempt == 2 and again.error == "boom"


async def test_a_foreign_entry_waits_for_its_keys_head(
    broker: Broker, redis: Any, prefix: str
) -> None:
    """An entry another client added with a key that has a message in flight goes behind
    it, and comes once the head is acknowledged."""
    await broker.send("q", [message("a1", key="a")])
    [a1] = await receive_all(broker, want=1)
    await redis.xadd(stream_key(prefix, "q"), {"id": "a2", "body": b"{}", "key": "a"})
    await nothing_for(broker, 0.3)
    assert (await broker.stats("q")).waiting == 1
    assert [m.id for m in await broker.peek("q")] == ["ma1", "a2"]
    assert await broker.ack(a1)
    [a2] = await receive_all(broker, want=1)
    assert a2.id == "a2" and a2.key == "a"


async def test_a_head_another_client_deleted_does_not_block_its_key(
    broker: Broker, redis: Any, prefix: str
) -> None:
    """Deleting a key's message in flight from the stream (``XDEL`` by another client) loses
    that message, and the key's next message takes its place at the key's next send."""
    await broker.send("q", [message("a1", key="a"), message("a2", key="a")])
    [a1] = await receive_all(broker, want=1)
    await redis.xdel(stream_key(prefix, "q"), a1.token.entry)
    assert not await broker.ack(a1)
    await broker.send("q", [message("a3", key="a")])
    [a2] = await receive_all(broker, want=1)
    assert a2.id == "ma2"
    await nothing_for(broker, 0.2)
    assert await broker.ack(a2)
    [a3] = await receive_all(broker, want=1)
    assert a3.id == "ma3"


async def test_the_same_node_taking_its_message_back_cannot_settle_the_old_receipt(
    broker: Broker,
) -> None:
    """A node whose lease ran out and that received the message again holds a new receipt
    (one more delivery): the old one is refused."""
    await broker.send("q", [message(1)])
    [old] = await receive_all(broker, want=1, lease=SHORT)
    [new] = await receive_all(broker, want=1, within=10)
    assert new.attempt == 2
    assert not await broker.ack(old)
    assert await broker.extend([old], LONG) == 0
    assert await broker.ack(new)


async def test_ids_are_forgotten_after_their_window(make_broker: BrokerFactory) -> None:
    """An acknowledged id is known for the window from its acknowledgement; a dead
    letter's stays known until it is redriven or purged."""
    broker = make_broker()
    await broker.open()
    try:
        await broker.declare(QueueOptions("q", dedup_window=0.5))
        await broker.send("q", [message(1), message(2)])
        one, two = await receive_all(broker, want=2)
        await broker.ack(one)
        await broker.dead_letter(two, error="x")
        assert await broker.send("q", [message(1), message(2)]) == [False, False]
        await asyncio.sleep(0.6)
        assert await broker.expire("q") == 1
        assert await broker.send("q", [message(1), message(2)]) == [True, False]
    finally:
        await broker.close()


async def test_expire_deletes_quiet_consumers_that_hold_nothing(
    make_broker: BrokerFactory, redis: Any, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nodes come and go, each a consumer of the group: expire deletes the consumers that
    hold nothing and were quiet long enough, never one holding a message."""
    monkeypatch.setattr(redis_broker, "QUIET_CONSUMER_MS", 50)
    holder, idle = make_broker(), make_broker()
    for broker in (holder, idle):
        await broker.open()
        await broker.declare(QueueOptions("q"))
    try:
        await holder.send("q", [message(1)])
        await receive_all(holder, want=1)
        assert await idle.receive("q", limit=1, lease=LONG, wait=0) == []
        await asyncio.sleep(0.1)
        await idle.expire("q")
        consumers = await redis.xinfo_consumers(stream_key(prefix, "q"), GROUP)
        assert [(c["name"], c["pending"]) for c in consumers] == [(b"node-1", 1)]
    finally:
        await holder.close()
        await idle.close()


async def test_a_released_head_keeps_its_key(broker: Broker) -> None:
    """A released message of a key is received again before the key's next one."""
    await broker.send("q", [message("a1", key="a"), message("a2", key="a")])
    [a1] = await receive_all(broker, want=1)
    assert await broker.release(a1)
    [again] = await receive_all(broker, want=1)
    assert again.id == "ma1" and again.attempt == 1
    await nothing_for(broker, 0.2)
    assert await broker.ack(again)
    [a2] = await receive_all(broker, want=1)
    assert a2.id == "ma2"


async def test_a_redriven_message_of_a_key_goes_behind_it(broker: Broker) -> None:
    """A dead letter redriven while its key has messages waits behind them."""
    await broker.send("q", [message("a1", key="a"), message("a2", key="a")])
    [a1] = await receive_all(broker, want=1)
    assert await broker.dead_letter(a1, error="x")
    [a2] = await receive_all(broker, want=1)
    assert await broker.redrive("q", ["ma1"]) == 1
    await nothing_for(broker, 0.2)
    assert await broker.ack(a2)
    [back] = await receive_all(broker, want=1)
    assert back.id == "ma1" and back.attempt == 1 and back.error == "x"


async def test_a_receive_wakes_at_once_for_another_nodes_send(
    broker: Broker, make_broker: BrokerFactory, prefix: str
) -> None:
    """A waiting receive blocks on the stream: another node's send wakes it well before
    its poll interval."""
    slow = RedisStreamsBroker(URL, prefix=prefix, owner="slow", poll_interval=5.0)
    producer = make_broker()
    await slow.open()
    await producer.open()
    try:
        waiting = asyncio.ensure_future(slow.receive("q", limit=1, lease=LONG, wait=4.0))
        await asyncio.sleep(0.3)
        started = asyncio.get_running_loop().time()
        await producer.send("q", [message(1)])
        [got] = await asyncio.wait_for(waiting, 5)
        assert got.id == "m1"
        assert asyncio.get_running_loop().time() - started < 0.5
    finally:
        await slow.close()
        await producer.close()


async def test_an_unreachable_redis_is_unavailable() -> None:
    """Nothing listens on the port: opening, sending and receiving answer Unavailable."""
    broker = RedisStreamsBroker(
        f"redis://127.0.0.1:{closed_port()}/0", prefix="polyport-test-gone", owner="o"
    )
    try:
        with pytest.raises(Unavailable) as failed:
            await broker.open()
        assert failed.value.retry_after
        with pytest.raises(Unavailable):
            await broker.send("q", [message(1)])
        with pytest.raises(Unavailable):
            await broker.receive("q", limit=1, lease=LONG, wait=0.1)
    finally:
        await broker.close()


class _Relay:
    """A TCP relay to Redis on a fixed port of its own that can cut every connection and
    refuse new ones until restored: Redis going away and coming back."""

    def __init__(self) -> None:
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accepted, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        self._writers = []
        await self._server.wait_closed()

    async def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", 6379)
        self._writers += [writer, up_writer]

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            sink.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


async def test_a_lost_connection_is_unavailable_and_consumers_recover(prefix: str) -> None:
    """Redis going away: calls answer Unavailable (never a silent loss), a message whose
    ack could not be recorded comes back after its lease, and the same broker works
    again once Redis is back."""
    relay = _Relay()
    await relay.start()
    broker = RedisStreamsBroker(
        f"redis://127.0.0.1:{relay.port}/0", prefix=prefix, owner="o", poll_interval=0.2
    )
    await broker.open()
    try:
        await broker.declare(QueueOptions("q"))
        await broker.send("q", [message(1)])
        [held] = await receive_all(broker, want=1, lease=SHORT)
        await relay.cut()
        with pytest.raises(Unavailable):
            await broker.ack(held)
        with pytest.raises(Unavailable):
            await broker.send("q", [message(2)])
        with pytest.raises(Unavailable):
            await broker.receive("q", limit=1, lease=LONG, wait=0.5)
        await relay.start()
        assert await broker.send("q", [message(2)]) == [True]
        got = await receive_all(broker, want=2, within=10)
        assert sorted((d.id, d.attempt) for d in got) == [("m1", 2), ("m2", 1)]
    finally:
        await broker.close()
        with contextlib.suppress(Exception):
            await relay.cut()


async def test_every_key_is_in_the_prefixs_hash_slot(broker: Broker, prefix: str) -> None:
    """Whatever the ordering keys hold (braces too), every key of a queue is in the slot
    of its stream's hash tag, so a Redis Cluster keeps them together."""
    from redis.crc import key_slot

    keys = ["{x}", "a}b{c", "with space"]
    await broker.send("q", [message(f"k{n}", key=key) for n in range(2) for key in keys])
    await broker.send("q", [message("later", delay=60)])
    [first] = await receive_all(broker, want=1)
    await broker.dead_letter(first, error="x")
    found = await _keys(prefix)
    assert len(found) >= 6
    assert {key_slot(key) for key in found} == {key_slot(stream_key(prefix, "q").encode())}


async def test_purge_leaves_no_key_behind(broker: Broker, prefix: str) -> None:
    """Purging a queue no other client reads deletes every key of it (a node's reply queue,
    purged when the node stops, leaves nothing); the queue works again at once."""
    await broker.send("q", [message(1), message("k", key="a"), message("k2", key="a")])
    await broker.send("q", [message(2, delay=60)])
    [held] = await receive_all(broker, want=1)
    await broker.dead_letter(held, error="x")
    assert await broker.purge("q") == 4
    assert await _keys(prefix) == []
    assert await broker.send("q", [message(1)]) == [True]
    [got] = await receive_all(broker, want=1)
    assert got.id == "m1" and got.attempt == 1


async def test_purge_keeps_other_groups_and_starts_the_group_over(
    broker: Broker, redis: Any, prefix: str
) -> None:
    """A purge deletes polyport's messages and state; another client's group on the stream
    stays, and the queue works as new."""
    stream = stream_key(prefix, "q")
    await redis.xgroup_create(stream, "theirs", id="0")
    await broker.send("q", [message(1), message("k", key="a"), message("k2", key="a")])
    await broker.send("q", [message(2, delay=60)])
    assert await broker.purge("q") == 4
    assert [g["name"] for g in await redis.xinfo_groups(stream)] == [GROUP.encode(), b"theirs"]
    assert [key for key in await _keys(prefix) if key != stream.encode()] == []
    assert await broker.send("q", [message("k2", key="a")]) == [True]
    [got] = await receive_all(broker, want=1)
    assert got.id == "mk2"

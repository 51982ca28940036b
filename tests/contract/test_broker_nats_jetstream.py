"""The message broker contract on NATS JetStream's own work queues (``--broker nats://…``),
and what JetStream needs checked beside it: stale holders, attempts, keys across nodes.

Each test gets a stream prefix of its own; its streams are deleted afterwards, and
no test touches a stream it did not make.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import pytest
from tests.conftest import require_service
from tests.contract.broker_contract import (
    LONG,
    SHORT,
    BrokerContract,
    BrokerFactory,
    message,
    nothing_for,
    receive_all,
)
from tests.contract.private_servers import PrivateServer
from tests.contract.test_workqueue_nats import _nats_server as nats_server

from polyport.backends.nats.broker import NatsJetStreamBroker
from polyport.backends.nats.broker_wire import QueueNames, check_prefix, header_text, text_of
from polyport.core.broker import Broker, QueueOptions
from polyport.core.errors import InvalidArgument, Unavailable

pytestmark = [pytest.mark.services, pytest.mark.timeout(90)]

URL = "nats://127.0.0.1:4222"


async def delete_streams(prefix: str) -> None:
    """Delete every stream named under ``prefix`` (``{prefix}_…``)."""
    import nats

    nc = await nats.connect(URL)
    try:
        js = nc.jetstream()
        for info in await js.streams_info():
            name = info.config.name or ""
            if name.startswith(f"{prefix}_"):
                await js.delete_stream(name)
    finally:
        await nc.close()


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    """A stream prefix no one else uses; its streams are deleted afterwards."""
    require_service("NATS", 4222)
    name = f"pptest-{uuid.uuid4().hex[:12]}"
    yield name
    await delete_streams(name)


class TestNatsJetStreamBroker(BrokerContract):
    """Each node a broker of its own connection on the test's prefix."""

    @pytest.fixture
    def make_broker(self, prefix: str) -> BrokerFactory:
        def make() -> Broker:
            return NatsJetStreamBroker(URL, prefix=prefix, owner="test")

        return make


# -- what JetStream needs checked beside the contract ----------------------------------------


Opener = Callable[[], AbstractAsyncContextManager[NatsJetStreamBroker]]


@pytest.fixture
def node(prefix: str) -> Opener:
    """Opens a broker (a node) on the test's prefix, with the queue ``q`` declared."""

    @asynccontextmanager
    async def opened() -> AsyncIterator[NatsJetStreamBroker]:
        broker = NatsJetStreamBroker(URL, prefix=prefix, owner="test")
        await broker.open()
        try:
            await broker.declare(QueueOptions("q", dedup_window=3600))
            yield broker
        finally:
            await broker.close()

    return opened


async def test_a_stale_holders_ack_does_not_remove_what_another_node_holds(node: Opener) -> None:
    """JetStream would take the old holder's ack and drop the message under the new
    holder; the lease record refuses it first, so the new holder's retry brings it back."""
    async with node() as first, node() as second:
        await first.send("q", [message(1)])
        [old] = await receive_all(first, want=1, lease=SHORT)
        [new] = await receive_all(second, want=1, within=10)
        assert new.attempt == 2
        assert not await first.ack(old)
        assert await first.extend([old], LONG) == 0
        assert await second.retry(new, delay=0, error="again")
        [back] = await receive_all(first, want=1, within=10)
        assert back.id == "m1" and back.attempt == 3 and back.error == "again"
        assert await first.ack(back)
        assert (await first.stats("q")).waiting == 0


@pytest.mark.parametrize("state", ["done", "dead"])
async def test_a_settlement_cut_off_before_jetstream_heard_is_finished_by_the_next_receipt(
    node: Opener, state: str
) -> None:
    """A holder that wrote its outcome in the lease record and died before acking (or
    terming) leaves the message to come back: the next receipt finishes the job instead
    of handing the message out again."""
    async with node() as first, node() as second:
        await first.send("q", [message(1), message(2)])
        [held, _] = await receive_all(first, want=2, lease=SHORT)
        token = held.token
        change = {"state": state, "error": "gave up", "died": time.time()}
        written = await first.records.write(
            token.names, token.received.seq, token.record.but(**change), token.revision
        )
        assert written is not None
        # The first node is gone: m1 and m2 come back after the ack wait; only m2 is handed out.
        got = await receive_all(second, want=2, within=4)
        assert [d.id for d in got] == ["m2"]
        assert await second.ack(got[0])
        stats = await second.stats("q")
        assert (stats.waiting, stats.in_flight) == (0, 0)
        dead = await second.dead("q")
        if state == "dead":
            assert [(m.id, m.error, m.attempts) for m in dead] == [("m1", "gave up", 1)]
        else:
            assert dead == []


async def test_an_ack_removes_its_record_once_jetstream_answered_it(node: Opener) -> None:
    """The ack returns at its record's compare-and-set; JetStream's answer then deletes the
    record (the revision that settlement wrote), so records do not pile up."""
    async with node() as first:
        await first.send("q", [message(n) for n in range(5)])
        got = await receive_all(first, want=5)
        names = first.names("q")
        assert len(await first.records.scan(names)) == 5
        for delivery in got:
            assert await first.ack(delivery)
        await first.settlements.acks_answered()
        deadline = time.monotonic() + 5
        while await first.records.scan(names) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert await first.records.scan(names) == []


async def test_expire_sweeps_the_lease_records_of_messages_gone(node: Opener) -> None:
    """A record left behind (its removal was lost after the ack) goes at the next
    expire; the records of messages still there stay."""
    async with node() as first:
        await first.send("q", [message(1), message(2)])
        [done, kept] = await receive_all(first, want=2)
        seq = done.token.received.seq
        assert await first.ack(done)
        # The ack returns once the record says done; its removal follows JetStream's answer.
        await first.settlements.acks_answered()
        names = first.names("q")
        _, revision = await first.records.read(names, seq)  # 0, or not removed yet
        assert await first.records.write(names, seq, done.token.record, revision) is not None
        assert sorted(s for s, _ in await first.records.scan(names)) == [
            seq,
            kept.token.received.seq,
        ]
        assert await first.expire("q") == 0  # ids are JetStream's to forget
        assert [s for s, _ in await first.records.scan(names)] == [kept.token.received.seq]
        assert await first.ack(kept)


async def test_a_lease_longer_than_the_ack_wait_is_kept_by_its_node(node: Opener) -> None:
    """The consumer's AckWait is the first receive's lease; a longer lease asked later is
    kept by the node itself (in-progress acks), so no other node receives the message."""
    async with node() as first, node() as second:
        await first.send("q", [message(1), message(2)])
        [short] = await first.receive("q", limit=1, lease=SHORT, wait=5)
        assert await first.ack(short)
        [long] = await receive_all(first, want=1, lease=4.0)
        assert long.lease_until >= time.time() + 3.5
        await nothing_for(second, 2.5)
        assert await first.ack(long)


async def test_a_first_delivery_of_a_consumer_made_again_finds_the_old_record(
    node: Opener,
) -> None:
    """A consumer deleted and made again delivers its messages as first deliveries again,
    whose records are written without reading (one round trip for a pull's): the write
    finds the old consumer's record, so the receipt reads it, takes the message over as
    its second attempt, and the old holder is refused."""
    import nats

    async with node() as first, node() as second:
        await first.send("q", [message(1), message(2)])
        old = await receive_all(first, want=2)
        nc = await nats.connect(URL)
        try:
            await nc.jetstream().delete_consumer(first.names("q").stream, "polyport")
        finally:
            await nc.close()
        again = await receive_all(second, want=2, within=10)
        assert sorted((d.id, d.attempt) for d in again) == [("m1", 2), ("m2", 2)]
        assert not await first.ack(old[0])
        assert not await first.dead_letter(old[1], error="late")
        for delivery in again:
            assert await second.ack(delivery)
        stats = await second.stats("q")
        assert (stats.waiting, stats.in_flight, stats.dead) == (0, 0, 0)


async def test_messages_set_aside_count_no_attempt(node: Opener) -> None:
    """A keyed message delivered again and again while its key's head runs, and a
    delayed one offered before its time, are received at last as their first attempt."""
    async with node() as first, node() as second:
        await first.send("q", [message("a1", key="a"), message("a2", key="a")])
        await first.send("q", [message("later", delay=2.0)])
        [a1] = await receive_all(first, want=1)
        # a2 and "later" are delivered to the second node again and again meanwhile.
        await nothing_for(second, 1.5)
        assert await first.ack(a1)
        got = await receive_all(second, want=2, within=10)
        assert {(d.id, d.attempt) for d in got} == {("ma2", 1), ("mlater", 1)}


async def test_the_next_message_of_a_key_is_woken_when_its_head_goes(node: Opener) -> None:
    """Messages set aside behind their key's head are naked again at once when the head
    is acked on any node: a backlog of one key drains in order, not a delay per message
    (each set aside up to 1 s: some 10 s for these 20 without the wake)."""
    async with node() as first, node() as second:
        await first.send("q", [message(n, key="a") for n in range(20)])
        order: list[str] = []
        started = time.monotonic()

        async def consume(broker: NatsJetStreamBroker) -> None:
            while len(order) < 20:
                for delivery in await broker.receive("q", limit=4, lease=LONG, wait=0.2):
                    order.append(delivery.id)
                    assert await broker.ack(delivery)

        await asyncio.wait_for(asyncio.gather(consume(first), consume(second)), 30)
        assert order == [f"m{n}" for n in range(20)]
        assert time.monotonic() - started < 5


async def test_another_nodes_purge_is_survived(node: Opener) -> None:
    """A purge deletes the streams and the consumer under every node and makes nothing
    again itself: a node waiting in a receive makes them again at once and goes on, and
    a node that held a message of before is refused its ack."""
    async with node() as first, node() as second:
        await first.send("q", [message(1), message(2)])
        [held, _] = await receive_all(second, want=2)
        waiting = asyncio.ensure_future(second.receive("q", limit=5, lease=LONG, wait=8))
        await asyncio.sleep(0.3)
        assert await first.purge("q") == 2
        names = first.names("q")
        async with asyncio.timeout(3):  # made again by the waiting receive, not by first
            while await first.streams.missing(names):
                await asyncio.sleep(0.05)
        assert not await second.ack(held)
        await first.send("q", [message(3)])
        got = await asyncio.wait_for(waiting, 10)
        got += await receive_all(second, want=1 - len(got))
        assert [(d.id, d.attempt) for d in got] == [("m3", 1)]
        assert await second.ack(got[0])


async def test_jetstreams_own_purge_keeps_the_ids_so_a_purge_deletes_the_streams(
    node: Opener,
) -> None:
    """Why purge deletes the streams: after JetStream's STREAM.PURGE the stream still
    knows the ids of its dedup window (2.9.10), so a purged queue would refuse them."""
    async with node() as first:
        await first.send("q", [message(1)])
        names = first.names("q")
        await first.client.api(f"STREAM.PURGE.{names.stream}")
        assert (await first.stats("q")).waiting == 0
        assert await first.send("q", [message(1)]) == [False]
        await first.purge("q")
        assert await first.send("q", [message(1)]) == [True]


async def test_a_purged_queue_listed_by_another_node_is_made_again(node: Opener) -> None:
    """Listings and stats of a node that knew the streams before a purge find them again."""
    async with node() as first, node() as second:
        await first.send("q", [message(1)])
        assert (await second.stats("q")).waiting == 1
        assert await first.purge("q") == 1
        stats = await second.stats("q")
        assert (stats.waiting, stats.in_flight, stats.dead) == (0, 0, 0)
        assert await second.peek("q") == [] and await second.dead("q") == []


async def test_a_lost_server_is_unavailable_and_nothing_is_lost(tmp_path: Path) -> None:
    """While its server is down a node's calls are Unavailable; once it is back (same
    files) the messages sent before are received, and the node goes on consuming.

    What a restarted server remembers is JetStream's, and not asserted here: 2.9.10
    may bring back messages acked shortly before a SIGKILL (handled again), and rebuilds
    a stream's dedup ids from the messages it still stores, so the ids of messages acked
    before the restart are forgotten (docs/queues.md says so)."""
    server = PrivateServer(nats_server(tmp_path / "js"), tmp_path / "nats.log")
    await server.start()
    broker = NatsJetStreamBroker(f"nats://127.0.0.1:{server.port}", prefix="outage", timeout=2)
    try:
        await broker.open()
        await broker.declare(QueueOptions("q"))
        assert await broker.send("q", [message(1)]) == [True]
        await server.stop()
        with pytest.raises(Unavailable):
            await broker.send("q", [message(2)])
        with pytest.raises(Unavailable):
            await broker.receive("q", limit=5, lease=LONG, wait=0.5)
        await server.start()
        async with asyncio.timeout(30):
            while True:
                with contextlib.suppress(Unavailable):
                    got = await broker.receive("q", limit=5, lease=LONG, wait=0.5)
                    if got:
                        break
                await asyncio.sleep(0.2)
        assert [d.id for d in got] == ["m1"]
        assert await broker.ack(got[0])
        assert await broker.send("q", [message(3)]) == [True]
        [after] = await receive_all(broker, want=1)
        assert after.id == "m3"
    finally:
        await broker.close()
        await server.close()


def test_the_wire_names_and_headers_round_trip() -> None:
    """Streams, subjects and header values as the docs give them; escaped text comes back."""
    names = QueueNames.of("shop", "payments")
    assert (names.stream, names.dead_stream, names.lease_stream) == (
        "shop_payments",
        "shop_payments_DEAD",
        "shop_payments_LEASES",
    )
    assert names.subject_for(None) == "shop.payments"
    assert names.subject_for("order-3") == "shop.payments.k.order-3"
    odd = "user 7/é.x"
    assert names.key_of(names.subject_for(odd)) == odd
    for text in ["plain", " spaced ", "two\nlines\r\n", "back\\slash \\x41", "tab\there"]:
        assert text_of(header_text(text)) == text
        assert "\n" not in header_text(text) and header_text(text) == header_text(text).strip()
    with pytest.raises(InvalidArgument):
        QueueNames.of("shop", "Bad.Name")
    with pytest.raises(InvalidArgument):
        check_prefix("with_underscore")

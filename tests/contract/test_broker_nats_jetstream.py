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
    """The ack of a receipt with a lease record (keyed messages have one) returns at its
    record's compare-and-set; JetStream's answer then deletes the record (the revision that
    settlement wrote), so records do not pile up."""
    async with node() as first:
        await first.send("q", [message(n, key=f"k{n}") for n in range(5)])
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
        await first.send("q", [message(1, key="a"), message(2, key="b")])
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


async def delete_consumer(broker: NatsJetStreamBroker) -> None:
    """Delete the queue's consumer by hand, as an operator would."""
    import nats

    nc = await nats.connect(URL)
    try:
        await nc.jetstream().delete_consumer(broker.names("q").stream, "polyport")
    finally:
        await nc.close()


async def test_a_first_delivery_of_a_consumer_made_again_finds_the_old_record(
    node: Opener,
) -> None:
    """A consumer deleted and made again delivers its messages as first deliveries again.
    Those of messages sent with a delay (now passed) have their records written without
    reading (one round trip for a pull's): the write finds the old consumer's record, so
    the receipt reads it, takes the message over as its second attempt, and the old holder
    is refused."""
    async with node() as first, node() as second:
        await first.send("q", [message(1, delay=0.05), message(2, delay=0.05)])
        await asyncio.sleep(0.1)
        old = await receive_all(first, want=2)
        assert not any(d.token.fast for d in old)
        await delete_consumer(first)
        again = await receive_all(second, want=2, within=10)
        assert sorted((d.id, d.attempt) for d in again) == [("m1", 2), ("m2", 2)]
        assert not await first.ack(old[0])
        assert not await first.dead_letter(old[1], error="late")
        for delivery in again:
            assert await second.ack(delivery)
        stats = await second.stats("q")
        assert (stats.waiting, stats.in_flight, stats.dead) == (0, 0, 0)


# -- the fast path: a first delivery without key or delay has no lease record ---------------


async def held_nothing_fast(broker: NatsJetStreamBroker, within: float = 2.0) -> None:
    """Wait until ``broker`` holds no fast receipt of ``q`` (a reset notice let them go)."""
    async with asyncio.timeout(within):
        while broker.leases.fast_held("q"):
            await asyncio.sleep(0.01)


async def test_a_first_delivery_is_received_and_acked_without_a_lease_record(
    node: Opener,
) -> None:
    """The usual case costs JetStream's own pull and ack: no record is written at the
    receipt nor at an ack within the lease, and the message is gone when the ack returns."""
    async with node() as first:
        await first.send("q", [message(n) for n in range(3)])
        got = await receive_all(first, want=3)
        assert [d.token.fast for d in got] == [True, True, True]
        assert [d.attempt for d in got] == [1, 1, 1]
        names = first.names("q")
        assert await first.records.scan(names) == []
        for delivery in got:
            assert await first.ack(delivery)
        assert await first.records.scan(names) == []
        stats = await first.stats("q")
        assert (stats.waiting, stats.in_flight, stats.dead) == (0, 0, 0)


@pytest.mark.parametrize("settle", ["ack", "retry", "release", "dead_letter"])
async def test_a_fast_holder_received_over_is_refused_whatever_it_settles(
    node: Opener, settle: str
) -> None:
    """A fast receipt's lease ran out (AckWait 1 s) and another node received the message:
    past its lease, the old holder's settlement writes the record first, on "none yet",
    finds the new receipt's and is refused, before JetStream hears anything; the new
    holder's message stays in flight, and is settled by it."""
    async with node() as first, node() as second:
        await first.send("q", [message(1)])
        [old] = await receive_all(first, want=1, lease=SHORT)
        assert old.token.fast
        [new] = await receive_all(second, want=1, within=10)
        assert new.attempt == 2 and not new.token.fast
        settlements = {
            "ack": lambda: first.ack(old),
            "retry": lambda: first.retry(old, delay=0, error="late"),
            "release": lambda: first.release(old),
            "dead_letter": lambda: first.dead_letter(old, error="late"),
        }
        assert not await settlements[settle]()
        stats = await second.stats("q")
        assert (stats.waiting, stats.in_flight, stats.dead) == (0, 1, 0)
        assert await second.ack(new)
        await nothing_for(first, 0.3)
        assert (await second.stats("q")).dead == 0


async def test_a_fast_holder_that_died_leaves_one_attempt_counted(node: Opener) -> None:
    """A node that received a message fast and died left no record of it: the message comes
    back after the ack wait as its second attempt (no record on a later delivery of such a
    message means one attempt so far), and a retry then counts the third."""
    async with node() as second:
        async with node() as first:
            await first.send("q", [message(1)])
            [lost] = await receive_all(first, want=1, lease=SHORT)
            assert lost.token.fast and lost.attempt == 1
        [again] = await receive_all(second, want=1, within=10)
        assert again.attempt == 2 and again.error is None
        assert await second.retry(again, delay=0, error="boom")
        [third] = await receive_all(second, want=1, within=10)
        assert third.attempt == 3 and third.error == "boom"
        assert await second.ack(third)


async def test_a_first_delivery_given_up_unhandled_counts_no_attempt(node: Opener) -> None:
    """A delivery that reaches a receive which gave up is given back with a record that
    counts no attempt, so its next receipt — JetStream's second delivery — is its first."""
    async with node() as first:
        assert await first.receive("q", limit=1, lease=LONG, wait=0.05) == []  # the consumer
        await first.send("q", [message(1)])
        names = first.names("q")
        [msg] = await first.puller.pull(names.stream, "polyport", 1, 5.0)
        await first.puller.give_back(msg)
        async with asyncio.timeout(5):
            while first._giving_back:
                await asyncio.sleep(0.01)
        [got] = await receive_all(first, want=1, within=10)
        assert got.token.received.delivered == 2
        assert got.attempt == 1 and not got.token.fast
        assert await first.ack(got)


async def test_a_fast_ack_answered_too_late_is_settled_by_the_record(node: Opener) -> None:
    """An ack whose answer comes after the lease could have ended on the server (a stalled
    connection, a reconnection that sent it late) cannot tell whether another node received
    the message first: the record decides — written done on "none yet" (True), or found
    written by a later receipt (False)."""
    from polyport.backends.nats.broker_records import LeaseRecord

    async with node() as first:
        await first.send("q", [message(1), message(2)])
        [one, two] = await receive_all(first, want=2)
        assert one.token.fast and two.token.fast
        names = first.names("q")
        request = first.client.request

        async def answered_late(
            subject: str, payload: bytes = b"", headers: dict[str, str] | None = None
        ) -> object:
            answer = await request(subject, payload, headers)
            if payload == b"+ACK":  # as if the answer had taken longer than the lease
                for delivery in (one, two):
                    delivery.token.since -= 2 * delivery.token.ack_wait
            return answer

        first.client.request = answered_late  # type: ignore[method-assign]
        assert await first.ack(one)
        # Another receipt's record, as if the message had been received again meanwhile.
        created = two.token.record.consumer
        other = LeaseRecord("held", 2, 2, created)
        assert await first.records.write(names, two.token.received.seq, other, 0) is not None
        assert not await first.ack(two)
        await first.settlements.acks_answered()
        assert [seq for seq, _ in await first.records.scan(names)] == [two.token.received.seq]


async def test_stats_count_the_fast_receipts_of_this_node_only(node: Opener) -> None:
    """A fast receipt has no record: the node that holds it counts it in flight (stats and
    peek); another node cannot see it and counts it waiting, as docs/queues.md says."""
    async with node() as first, node() as second:
        await first.send("q", [message(1), message(2)])
        [held] = await first.receive("q", limit=1, lease=LONG, wait=5)
        assert held.token.fast
        here, there = await first.stats("q"), await second.stats("q")
        assert (here.waiting, here.in_flight) == (1, 1)
        assert (there.waiting, there.in_flight) == (2, 0)
        peeked = {m.id: (m.state, m.attempts) for m in await first.peek("q")}
        assert peeked == {"m1": ("in_flight", 1), "m2": ("waiting", 0)}
        assert {m.id: m.state for m in await second.peek("q")} == {
            "m1": "waiting",
            "m2": "waiting",
        }
        assert await first.ack(held)
        assert (await first.stats("q")).in_flight == 0


async def test_a_purge_lets_go_every_nodes_receipts_of_the_queue(node: Opener) -> None:
    """The streams made again after a purge count their sequences from 1, and JetStream takes
    an ack for a sequence from anyone: an ack of a purged message would remove the new
    message that has its sequence. So the purging node tells every node first, and their
    receipts of the queue are refused — even on a node with no pull under way to see its
    consumer go."""
    async with node() as first, node() as second:
        await first.send("q", [message(1)])
        [held] = await receive_all(second, want=1)
        assert held.token.fast
        assert await first.purge("q") == 1
        await held_nothing_fast(second)
        await first.send("q", [message(2)])
        assert not await second.ack(held)
        [new] = await receive_all(first, want=1)
        assert new.id == "m2" and new.token.received.seq == held.token.received.seq
        assert await first.ack(new)


async def test_a_consumer_made_again_lets_go_the_old_fast_receipts(node: Opener) -> None:
    """A consumer deleted by hand and made again delivers its messages as first deliveries
    again; those its predecessor handed out fast left no record, so their attempt is not
    counted (docs/queues.md says so). The node that makes the consumer tells the others,
    whose receipts of the old one are then refused: their acks would reach the new one."""
    async with node() as first, node() as second:
        await first.send("q", [message(1), message(2)])
        old = await receive_all(first, want=2)
        assert all(d.token.fast for d in old)
        await delete_consumer(first)
        again = await receive_all(second, want=2, within=10)
        assert sorted((d.id, d.attempt) for d in again) == [("m1", 1), ("m2", 1)]
        await held_nothing_fast(first)
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

"""The contract every message broker backend passes, written once and subclassed per backend.

A backend's test module subclasses :class:`BrokerContract` and gives the
``make_broker`` fixture: a factory of brokers over queues of the test's own
(a fresh namespace per test), where every broker the factory makes reaches
the same queues — so a second broker is a second node, or the node
restarted. Each test declares the queues it uses.

Times are the brokers' own (real seconds): leases and delays are short, and
the waits for them bounded.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Protocol

import pytest

from polyport.core.broker import Broker, Delivery, OutgoingMessage, QueueOptions

#: A lease long enough never to end by itself within a test.
LONG = 60.0
#: A lease meant to run out within a test.
SHORT = 1.0


class BrokerFactory(Protocol):
    def __call__(self) -> Broker: ...


class BrokerOpener(Protocol):
    def __call__(self, *queues: str) -> AbstractAsyncContextManager[Broker]: ...


def message(n: int | str, *, key: str | None = None, delay: float = 0.0) -> OutgoingMessage:
    return OutgoingMessage(
        f"m{n}",
        b'{"n": "%s"}' % str(n).encode(),
        {"content-type": "application/json", "type": "test.q"},
        key=key,
        delay=delay,
    )


async def receive_all(
    broker: Broker,
    queue: str = "q",
    *,
    want: int,
    lease: float = LONG,
    within: float = 10.0,
) -> list[Delivery]:
    """Receive until ``want`` deliveries arrived (or ``within`` seconds passed)."""
    got: list[Delivery] = []
    deadline = time.monotonic() + within
    while len(got) < want and time.monotonic() < deadline:
        got += await broker.receive(
            queue, limit=want - len(got), lease=lease, wait=min(1.0, within)
        )
    return got


async def nothing_for(broker: Broker, seconds: float, queue: str = "q") -> None:
    """Nothing can be received for ``seconds``."""
    got = await broker.receive(queue, limit=10, lease=LONG, wait=seconds)
    assert got == [], [d.id for d in got]


class BrokerContract:
    """Sends, dedup, leases, settling once, retries, delays, dead letters, redrive, keys."""

    @pytest.fixture
    def make_broker(self) -> BrokerFactory:
        raise NotImplementedError("a backend's subclass gives make_broker")

    @pytest.fixture
    def node(self, make_broker: BrokerFactory) -> BrokerOpener:
        """A node's broker, opened with ``queues`` declared, for the length of a ``with``."""

        @asynccontextmanager
        async def opened(*queues: str) -> AsyncIterator[Broker]:
            broker = make_broker()
            await broker.open()
            try:
                for name in queues or ("q",):
                    await broker.declare(QueueOptions(name, dedup_window=3600))
                yield broker
            finally:
                await broker.close()

        return opened

    @pytest.fixture
    async def broker(self, node: BrokerOpener) -> AsyncIterator[Broker]:
        async with node("q", "other") as found:
            yield found

    # -- sending and receiving ----------------------------------------------------------

    async def test_sent_messages_are_received_in_order_with_their_fields(
        self, broker: Broker
    ) -> None:
        assert await broker.send("q", [message(1), message(2)]) == [True, True]
        assert await broker.send("q", [message(3, key="k")]) == [True]
        got = await receive_all(broker, want=3)
        assert [d.id for d in got] == ["m1", "m2", "m3"]
        first = got[0]
        assert first.queue == "q" and first.body == b'{"n": "1"}'
        assert first.headers["content-type"] == "application/json"
        assert first.headers["type"] == "test.q"
        assert first.attempt == 1 and first.error is None and first.key is None
        assert got[2].key == "k"
        assert abs(first.sent - time.time()) < 30
        assert first.lease_until > time.time() + LONG / 2

    async def test_queues_are_separate(self, broker: Broker) -> None:
        await broker.send("other", [message(1)])
        await nothing_for(broker, 0.2)
        [got] = await receive_all(broker, "other", want=1)
        assert got.queue == "other"

    async def test_a_known_id_is_not_stored_again(self, broker: Broker) -> None:
        assert await broker.send("q", [message(1), message(1)]) == [True, False]
        [got] = await receive_all(broker, want=1)
        assert await broker.ack(got)
        # Handled and gone, but its id is still known within the window.
        assert await broker.send("q", [message(1)]) == [False]
        await nothing_for(broker, 0.3)
        # The same id in another queue is another message.
        assert await broker.send("other", [message(1)]) == [True]

    async def test_receive_waits_for_a_send(self, broker: Broker, node: BrokerOpener) -> None:
        async with node() as producer:
            started = time.monotonic()
            waiting = asyncio.ensure_future(broker.receive("q", limit=5, lease=LONG, wait=5.0))
            await asyncio.sleep(0.2)
            await producer.send("q", [message(1)])
            got = await asyncio.wait_for(waiting, 10)
        assert [d.id for d in got] == ["m1"]
        # Another node's send is found within the poll interval, well before the wait.
        assert time.monotonic() - started < 4.0

    async def test_receive_gives_up_after_its_wait(self, broker: Broker) -> None:
        started = time.monotonic()
        assert await broker.receive("q", limit=5, lease=LONG, wait=0.3) == []
        assert 0.2 <= time.monotonic() - started < 3.0

    async def test_limit_caps_a_receive(self, broker: Broker) -> None:
        await broker.send("q", [message(n) for n in range(5)])
        got = await broker.receive("q", limit=2, lease=LONG, wait=2.0)
        assert 1 <= len(got) <= 2
        rest = await receive_all(broker, want=5 - len(got))
        assert sorted(d.id for d in got + rest) == [f"m{n}" for n in range(5)]

    # -- leases ----------------------------------------------------------------------------

    async def test_a_lost_lease_delivers_again_and_the_old_holder_cannot_settle(
        self, broker: Broker, node: BrokerOpener
    ) -> None:
        await broker.send("q", [message(1)])
        [first] = await receive_all(broker, want=1, lease=SHORT)
        async with node() as other:
            [again] = await receive_all(other, want=1, within=10)
            assert again.id == "m1" and again.attempt == 2
            assert not await broker.ack(first)
            assert not await broker.retry(first, delay=0, error="late")
            assert not await broker.dead_letter(first, error="late")
            assert await other.ack(again)
        assert (await broker.stats("q")).in_flight == 0

    async def test_extend_keeps_a_lease(self, broker: Broker) -> None:
        await broker.send("q", [message(1)])
        [held] = await receive_all(broker, want=1, lease=SHORT)
        for _ in range(3):
            await asyncio.sleep(SHORT / 2)
            assert await broker.extend([held], SHORT) == 1
        await nothing_for(broker, 0.1)
        assert await broker.ack(held)

    async def test_release_gives_back_without_counting(self, broker: Broker) -> None:
        await broker.send("q", [message(1)])
        [held] = await receive_all(broker, want=1)
        assert await broker.release(held)
        [again] = await receive_all(broker, want=1, within=5)
        assert again.id == "m1" and again.attempt == 1

    async def test_a_settled_message_settles_once(self, broker: Broker) -> None:
        await broker.send("q", [message(1)])
        [held] = await receive_all(broker, want=1)
        assert await broker.ack(held)
        assert not await broker.ack(held)
        assert not await broker.retry(held, delay=0, error="x")
        assert await broker.extend([held], LONG) == 0

    # -- retries, delays, dead letters -----------------------------------------------------

    async def test_retry_waits_its_delay_and_counts_the_attempt(self, broker: Broker) -> None:
        await broker.send("q", [message(1)])
        [held] = await receive_all(broker, want=1)
        started = time.monotonic()
        assert await broker.retry(held, delay=1.0, error="ValueError: boom")
        [again] = await receive_all(broker, want=1, within=10)
        assert time.monotonic() - started >= 0.9
        assert again.attempt == 2 and again.error == "ValueError: boom"
        assert again.body == held.body and again.headers["type"] == "test.q"

    async def test_a_delayed_message_waits(self, broker: Broker) -> None:
        started = time.monotonic()
        await broker.send("q", [message(1, delay=1.0), message(2)])
        [now] = await receive_all(broker, want=1)
        assert now.id == "m2"
        assert (await broker.stats("q")).waiting == 1
        [later] = await receive_all(broker, want=1, within=10)
        assert later.id == "m1" and later.attempt == 1
        assert time.monotonic() - started >= 0.9

    async def test_dead_letters_keep_their_story_and_redrive(self, broker: Broker) -> None:
        await broker.send("q", [message(1), message(2), message(3)])
        got = await receive_all(broker, want=3)
        for delivery in got:
            assert await broker.dead_letter(delivery, error=f"failed {delivery.id}")
        stats = await broker.stats("q")
        assert (stats.waiting, stats.in_flight, stats.dead) == (0, 0, 3)
        dead = await broker.dead("q", limit=10)
        assert sorted(m.id for m in dead) == ["m1", "m2", "m3"]
        one = next(m for m in dead if m.id == "m2")
        assert one.error == "failed m2" and one.attempts == 1 and one.state == "dead"
        assert one.body == b'{"n": "2"}' and one.died is not None and one.died >= one.sent
        # A dead letter's id is still known: a resend is a duplicate.
        assert await broker.send("q", [message(2)]) == [False]

        assert await broker.redrive("q", ["m2", "nope"]) == 1
        [back] = await receive_all(broker, want=1)
        assert back.id == "m2" and back.attempt == 1
        assert await broker.ack(back)
        assert await broker.redrive("q") == 2
        rest = await receive_all(broker, want=2)
        assert sorted(d.id for d in rest) == ["m1", "m3"]
        assert (await broker.stats("q")).dead == 0

    async def test_dead_letters_page(self, broker: Broker) -> None:
        await broker.send("q", [message(n) for n in range(5)])
        for delivery in await receive_all(broker, want=5):
            await broker.dead_letter(delivery, error="x")
        seen: list[str] = []
        after = None
        for _ in range(5):
            page = await broker.dead("q", limit=2, after=after)
            seen += [m.id for m in page]
            if len(page) < 2:
                break
            after = page[-1].cursor
        assert sorted(seen) == [f"m{n}" for n in range(5)]

    # -- operations -------------------------------------------------------------------------

    async def test_stats_and_peek(self, broker: Broker) -> None:
        await broker.send("q", [message(1), message(2), message(3, delay=60)])
        [held] = await receive_all(broker, want=1)
        stats = await broker.stats("q")
        assert (stats.waiting, stats.in_flight, stats.dead) == (2, 1, 0)
        peeked = await broker.peek("q", limit=10)
        states = {m.id: m.state for m in peeked}
        assert states == {"m1": "in_flight", "m2": "waiting", "m3": "waiting"}
        assert held.id == "m1"

    async def test_purge_deletes_everything(self, broker: Broker) -> None:
        await broker.send("q", [message(1), message(2), message(3)])
        [held] = await receive_all(broker, want=1)
        await broker.dead_letter(held, error="x")
        assert await broker.purge("q") == 3
        stats = await broker.stats("q")
        assert (stats.waiting, stats.in_flight, stats.dead) == (0, 0, 0)
        await nothing_for(broker, 0.2)
        # Its ids are forgotten with it.
        assert await broker.send("q", [message(1)]) == [True]

    async def test_a_restarted_node_finds_what_was_sent(self, node: BrokerOpener) -> None:
        async with node() as first:
            await first.send("q", [message(1), message(2, delay=0.5)])
        async with node() as second:
            got = await receive_all(second, want=2, within=10)
            assert [d.id for d in got] == ["m1", "m2"]

    # -- ordering keys ---------------------------------------------------------------------

    async def test_one_at_a_time_per_key_in_order(self, broker: Broker, node: BrokerOpener) -> None:
        await broker.send(
            "q",
            [
                message("a1", key="a"),
                message("b1", key="b"),
                message("a2", key="a"),
                message("free"),
                message("a3", key="a"),
            ],
        )
        async with node() as other:
            got = await receive_all(broker, want=3, within=3)
            got += await other.receive("q", limit=10, lease=LONG, wait=0.5)
            # a2 and a3 wait for a1, whoever asks.
            assert sorted(d.id for d in got) == ["ma1", "mb1", "mfree"]
            a1 = next(d for d in got if d.id == "ma1")
            assert await broker.ack(a1)
            [a2] = await receive_all(other, want=1)
            assert a2.id == "ma2"
            await nothing_for(broker, 0.3)

    async def test_a_retry_holds_its_key_back(self, broker: Broker) -> None:
        await broker.send("q", [message("a1", key="a"), message("a2", key="a")])
        [a1] = await receive_all(broker, want=1)
        retried = time.monotonic()
        assert await broker.retry(a1, delay=1.0, error="later")
        # a2 does not overtake a1 while a1 waits for its retry. (a1 itself may come back
        # in this look, but only after its delay: a busy machine can stretch a 0.5 s wait.)
        early = await broker.receive("q", limit=10, lease=LONG, wait=0.5)
        assert [d.id for d in early] in ([], ["ma1"]), [d.id for d in early]
        assert not early or time.monotonic() - retried >= 1.0
        [again] = early or await receive_all(broker, want=1, within=10)
        assert again.id == "ma1" and again.attempt == 2
        await broker.dead_letter(again, error="gave up")
        # A dead letter no longer holds its key.
        [a2] = await receive_all(broker, want=1)
        assert a2.id == "ma2"

    async def test_many_keys_many_receivers_never_overlap(self, node: BrokerOpener) -> None:
        keys = [f"k{n}" for n in range(4)]
        async with node() as producer:
            await producer.send(
                "q", [message(f"{key}-{i}", key=key) for i in range(5) for key in keys]
            )
        running: dict[str, str] = {}
        order: dict[str, list[int]] = {key: [] for key in keys}

        async def consume(broker: Broker) -> None:
            while sum(len(v) for v in order.values()) < 20:
                for delivery in await broker.receive("q", limit=4, lease=LONG, wait=0.3):
                    assert delivery.key is not None
                    assert delivery.key not in running, "two messages of one key at once"
                    running[delivery.key] = delivery.id
                    await asyncio.sleep(0.01)
                    order[delivery.key].append(int(delivery.id.rsplit("-", 1)[1]))
                    del running[delivery.key]
                    assert await broker.ack(delivery)

        async with node() as one, node() as two:
            await asyncio.wait_for(asyncio.gather(consume(one), consume(two)), 60)
        assert all(order[key] == [0, 1, 2, 3, 4] for key in keys), order

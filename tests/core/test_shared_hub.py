"""Several hubs on one log: every node's subscribers get every node's events, in log order.

Two hubs in one process share one log and a LocalBus, as two nodes share an
engine and its bus: what holds here holds for any engine whose log passes the
shared contract (tests/contract) and whose bus may lose announcements.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from polyport.backends.memory import MemoryEventLog
from polyport.core.bus import Announcement, LocalBus
from polyport.core.errors import RecoveryFailed
from polyport.core.eventlog import History, ReadResult
from polyport.core.events import Event, Pattern, new_epoch
from polyport.core.hub import EventHub, Subscription


def p(*texts: str) -> list[Pattern]:
    return [Pattern.parse(t) for t in texts]


async def take(subscription: Subscription, n: int, seconds: float = 5.0) -> list[Event]:
    out: list[Event] = []
    async with asyncio.timeout(seconds):
        while len(out) < n:
            out.extend(await subscription.batch())
    return out


class SilentBus(LocalBus):
    """A bus that loses every announcement: delivery must not depend on it."""

    def announce(self, grown: Announcement) -> None:
        return None


@pytest.fixture
async def nodes() -> AsyncIterator[tuple[EventHub, EventHub]]:
    log = MemoryEventLog(History(max_events=10_000))
    bus = LocalBus()
    a = EventHub(log, bus=bus, poll_interval=5.0)
    b = EventHub(log, bus=bus, poll_interval=5.0)
    await a.start()
    await b.start()
    yield a, b
    await a.stop()
    await b.stop()


async def test_an_event_published_on_one_node_reaches_a_subscriber_on_another(
    nodes: tuple[EventHub, EventHub],
) -> None:
    """Publish on A; B's subscriber gets it (the bus woke B; the log gave it the event)."""
    a, b = nodes
    subscription = await b.subscribe(p("orders/#"))
    event = await a.publish("orders/created", "orders.created", b'{"id":1}')
    assert [e.id for e in await take(subscription, 1, seconds=1.0)] == [event.id]


async def test_interleaved_writers_reach_every_subscriber_in_log_order(
    nodes: tuple[EventHub, EventHub],
) -> None:
    """Both nodes publish at once, singles and batches: everyone gets all of it, in seq order."""
    a, b = nodes
    subs = [await hub.subscribe(p("c/#")) for hub in (a, b, a, b)]
    total = 2 * (30 + 3 * 7)
    # Readers run while the writers do, so they take live deliveries, not a catch-up.
    readers = [asyncio.create_task(take(subscription, total)) for subscription in subs]
    await asyncio.sleep(0.01)  # each has caught up (nothing yet) and now reads live
    assert all(not s._catching_up for s in subs)

    async def write(hub: EventHub, who: str) -> list[Event]:
        out = []
        for i in range(30):
            out.append(await hub.publish(f"c/{i % 3}", "t", b'"%s%d"' % (who.encode(), i)))
            await asyncio.sleep(0)  # let the other node and the readers run in between
            if i % 10 == 9:
                items = [(f"c/{k % 3}", "t", b'"%s-b%d"' % (who.encode(), k)) for k in range(7)]
                out.extend(await hub.publish_many(items))
        return out

    written = await asyncio.gather(write(a, "a"), write(b, "b"))
    everything = sorted((e for batch in written for e in batch), key=lambda e: e.seq)
    assert len(everything) == total
    for reader, subscription in zip(readers, subs, strict=True):
        got = await reader
        assert [e.seq for e in got] == [e.seq for e in everything]
        assert subscription._drops == 0  # all of it came live, none from a catch-up


async def test_a_long_poll_on_one_node_wakes_for_another_nodes_event(
    nodes: tuple[EventHub, EventHub],
) -> None:
    """A long poll held on B answers as soon as A publishes, not at its timeout."""
    a, b = nodes
    first = await a.publish("inbox/1", "t", b"1")
    waiting = asyncio.create_task(b.poll(p("inbox/1"), after=first.id, wait=10.0))
    await asyncio.sleep(0.05)
    second = await a.publish("inbox/1", "t", b"2")
    async with asyncio.timeout(2.0):
        answer = await waiting
    assert [e.id for e in answer.events] == [second.id]


async def test_an_id_from_one_node_resumes_on_another(nodes: tuple[EventHub, EventHub]) -> None:
    """A client reconnecting to B with A's id gets exactly what it missed, then live events."""
    a, b = nodes
    seen = [await a.publish("room", "t", b"%d" % i) for i in range(3)]
    missed = [await a.publish("room", "t", b"%d" % i) for i in range(3, 6)]
    subscription = await b.subscribe(p("room"), after=seen[-1].id)
    live = await a.publish("room", "t", b"6")
    got = await take(subscription, 4)
    assert [e.id for e in got] == [e.id for e in [*missed, live]]


async def test_lost_announcements_only_delay_delivery() -> None:
    """With a bus that loses everything, the poll of the log still delivers every event."""
    log = MemoryEventLog()
    bus = SilentBus()
    a = EventHub(log, bus=bus, poll_interval=0.1)
    b = EventHub(log, bus=bus, poll_interval=0.1)
    await a.start()
    await b.start()
    try:
        subscription = await b.subscribe(p("x"))
        sent = [await a.publish("x", "t", b"%d" % i) for i in range(5)]
        assert [e.id for e in await take(subscription, 5, seconds=2.0)] == [e.id for e in sent]
    finally:
        await a.stop()
        await b.stop()


class FlakyLog(MemoryEventLog):
    """A log whose reads fail while ``down`` is set, as an engine that went away."""

    down = False

    async def read(
        self, patterns: Sequence[Pattern], after_seq: int, limit: int, *, check: bool = True
    ) -> ReadResult:
        if self.down:
            raise ConnectionError("the engine is away")
        return await super().read(patterns, after_seq, limit, check=check)


async def test_subscribers_outlive_an_engine_that_goes_away(caplog: Any) -> None:
    """Reads fail for a while: subscribers stay, and get everything once the engine is back."""
    log = FlakyLog()
    bus = LocalBus()
    a = EventHub(log, bus=bus, poll_interval=0.1)
    b = EventHub(log, bus=bus, poll_interval=0.1)
    await a.start()
    await b.start()
    try:
        subscription = await b.subscribe(p("y"))
        log.down = True
        sent = [await a.publish("y", "t", b"%d" % i) for i in range(3)]
        await asyncio.sleep(0.3)  # b's tail tries, fails, backs off
        log.down = False
        assert [e.id for e in await take(subscription, 3, seconds=5.0)] == [e.id for e in sent]
        assert b.subscriber_count == 1
    finally:
        await a.stop()
        await b.stop()


class LosableLog(MemoryEventLog):
    """A log whose engine can lose everything, as a Redis without persistence restarting."""

    def lose(self) -> None:
        self._epoch = new_epoch()
        self._channels.clear()
        self._by_epoch.clear()
        self._seq = 0


async def test_a_log_that_lost_its_history_tells_every_subscriber() -> None:
    """The engine lost its data: subscribers get RecoveryFailed once, then the new log's events."""
    log = LosableLog()
    bus = LocalBus()
    a = EventHub(log, bus=bus, poll_interval=0.1)
    b = EventHub(log, bus=bus, poll_interval=0.1)
    await a.start()
    await b.start()
    try:
        subscription = await b.subscribe(p("z"))
        before = [await a.publish("z", "t", b"%d" % i) for i in range(3)]
        assert [e.id for e in await take(subscription, 3)] == [e.id for e in before]
        log.lose()
        after = [await a.publish("z", "t", b"new%d" % i) for i in range(2)]
        with pytest.raises(RecoveryFailed) as failed:
            await take(subscription, 1)
        assert failed.value.latest is not None and failed.value.latest.startswith(log.epoch)
        more = await a.publish("z", "t", b"later")
        got = await take(subscription, 1)
        assert [e.id for e in got] == [more.id]
        assert all(e.epoch != before[0].epoch for e in [*after, more])
    finally:
        await a.stop()
        await b.stop()


class CountingBus(LocalBus):
    """A LocalBus that keeps what the hubs announce on it."""

    def __init__(self) -> None:
        super().__init__()
        self.announced: list[list[tuple[str, int]]] = []

    def announce(self, grown: Announcement) -> None:
        self.announced.append(list(grown))
        super().announce(grown)


class SelfAnnouncingLog(MemoryEventLog):
    """A log whose appends announce themselves, as PostgreSQL's commits do."""

    announces_appends = True


@pytest.mark.parametrize("log_announces", [False, True])
async def test_the_hub_announces_only_what_its_log_does_not(log_announces: bool) -> None:
    """A node announces each publish's newest seq per channel on the bus, unless its log
    announces its own appends: then the bus carries nothing from the node."""
    log = SelfAnnouncingLog() if log_announces else MemoryEventLog()
    bus = CountingBus()
    hub = EventHub(log, bus=bus, poll_interval=5.0)
    await hub.start()
    try:
        one = await hub.publish("a", "t", b"1")
        batch = await hub.publish_many([("a", "t", b"2"), ("b", "t", b"3"), ("a", "t", b"4")])
        wanted = [[("a", one.seq)], [("a", batch[2].seq), ("b", batch[1].seq)]]
        assert bus.announced == ([] if log_announces else wanted)
    finally:
        await hub.stop()

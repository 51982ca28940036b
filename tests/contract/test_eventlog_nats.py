"""The event log on NATS JetStream: the shared contract, and what JetStream adds.

Each test gets stream and bucket names of its own and deletes them afterwards;
no test touches a stream or bucket it did not make.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from tests.conftest import require_service
from tests.contract.eventlog_contract import Factory, SharedEventLogContract, fill, p
from tests.contract.freezing_proxy import FreezingProxy
from tests.contract.private_servers import closed_port

from polyport.backends.nats import NatsEventLog
from polyport.backends.nats.messages import stream_seq_of
from polyport.backends.nats.subjects import Subjects, channel_tokens, tokens_channel
from polyport.core.bus import LocalBus
from polyport.core.errors import MissingExtra, PayloadTooLarge, RecoveryFailed, Unavailable
from polyport.core.eventlog import EventLog, History, ReadResult
from polyport.core.events import Cursor, Event, Pattern, position
from polyport.core.hub import EventHub, Subscription

pytestmark = [pytest.mark.services, pytest.mark.timeout(60)]

URL = "nats://127.0.0.1:4222"


async def _delete(names: list[str]) -> None:
    """Delete the streams and KV buckets of the logs named ``names`` (and only those)."""
    import nats
    from nats.js.errors import NotFoundError

    nc = await nats.connect(URL)
    try:
        js = nc.jetstream()
        for name in names:
            for stream in (name, f"KV_{name}-meta"):
                with contextlib.suppress(NotFoundError):
                    await js.delete_stream(stream)
    finally:
        await nc.close()


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    """A log name prefix no one else uses; the logs made under it are deleted afterwards."""
    require_service("NATS", 4222)
    base = f"pptest-{uuid.uuid4().hex[:12]}"
    yield base
    import nats

    nc = await nats.connect(URL)
    try:
        infos = await nc.jetstream().streams_info()
    finally:
        await nc.close()
    await _delete([i.config.name for i in infos if i.config.name.startswith(base)])


class TestNatsEventLog(SharedEventLogContract):
    consecutive_seqs = False

    @pytest.fixture
    def make_log(self, prefix: str) -> Factory:
        def make(history: History, name: str = "log") -> EventLog:
            return NatsEventLog(URL, history, name=f"{prefix}-{name}")

        return make


@pytest.fixture
async def log(prefix: str) -> AsyncIterator[NatsEventLog]:
    event_log = NatsEventLog(URL, History(max_events=1000, max_age=3600), name=prefix)
    await event_log.open()
    yield event_log
    await event_log.close()


def test_channels_map_onto_subjects_and_patterns_onto_one_filter() -> None:
    """Segments with subject separators are escaped; '#' also matches the parent, as in MQTT."""
    subjects = Subjects("polyport.x")
    assert subjects.subject("orders/created") == "polyport.x.orders.created.$"
    assert subjects.subject("a.b/c:d=e") == "polyport.x.a=2Eb.c=3Ad=3De.$"
    for channel in ("a.b/c:d=e", "x~y@z/._-", "=2E/=", "plain"):
        assert tokens_channel(channel_tokens(channel)) == channel
    assert subjects.filter(Pattern.parse("orders/#")) == "polyport.x.orders.>"
    assert subjects.filter(Pattern.parse("orders/+")) == "polyport.x.orders.*.$"
    assert subjects.filter(Pattern.parse("+/created")) == "polyport.x.*.created.$"
    assert subjects.filters([Pattern.parse("a"), Pattern.parse("#")]) == ["polyport.x.>"]


async def test_channels_with_dots_do_not_collide(log: NatsEventLog) -> None:
    """'a.b' and 'a/b' are different channels, and '+' does not match across a dot."""
    dotted = await log.append("a.b", "t", b"1", 1.0)
    nested = await log.append("a/b", "t", b"2", 2.0)
    assert (dotted.offset, nested.offset) == (1, 1)
    assert [e.channel for e in (await log.read(p("a/+"), 0, 10)).events] == ["a/b"]
    assert [e.channel for e in (await log.read(p("a.b"), 0, 10)).events] == ["a.b"]
    assert [e.channel for e in (await log.read(p("+"), 0, 10)).events] == ["a.b"]


async def test_a_deleted_and_recreated_stream_is_a_new_epoch(
    log: NatsEventLog, prefix: str
) -> None:
    """Every old cursor fails after the stream is deleted; the log makes a new one and goes on."""
    ids = await fill(log, "c", 3)
    old_epoch, head = log.epoch, await log.head()
    await _delete([prefix])
    with pytest.raises(RecoveryFailed):
        await log.resolve(Cursor.parse(position(old_epoch, head)))
    assert log.epoch != old_epoch
    event = await log.append("c", "t", b"{}", 5.0)
    assert (event.offset, stream_seq_of(event.seq)) == (1, 1)  # the new stream's first
    with pytest.raises(RecoveryFailed):
        await log.resolve(Cursor.parse(ids[-1]))
    assert await log.resolve(Cursor.parse(event.id)) == event.seq


async def test_reads_large_and_wildcard_pages_through_consumers(log: NatsEventLog) -> None:
    """Past the direct-get window a read pages through a consumer, in order, across patterns."""
    items = [(f"k/{i % 3}", "t", b'{"i":%d}' % i) for i in range(300)]
    written = []
    for start in range(0, 300, 3):  # a message per channel per call: 300 messages
        written += await log.append_many(items[start : start + 3], 1.0)
    wanted = [e for e in sorted(written, key=lambda e: e.seq) if e.channel != "k/2"]
    page = await log.read(p("k/0", "k/1"), 0, 150)
    assert [e.id for e in page.events] == [e.id for e in wanted[:150]]
    assert page.last_seq == page.events[-1].seq
    rest = await log.read(p("k/0", "k/1"), page.last_seq, 1000)
    assert [e.id for e in rest.events] == [e.id for e in wanted[150:]]
    assert rest.last_seq == await log.head()
    offsets = [e.offset for e in page.events + rest.events if e.channel == "k/1"]
    assert offsets == list(range(1, 101))


async def test_a_call_on_one_channel_is_one_message_read_back_from_any_cursor(
    log: NatsEventLog,
) -> None:
    """One call's events on a channel travel in one message: their positions are consecutive,
    and a read, a resolve or a page may start or end anywhere inside the message."""
    events = await log.append_many([("pk", "t", b'{"n":%d}' % i) for i in range(300)], 1.0)
    assert len({stream_seq_of(e.seq) for e in events}) == 1
    assert [e.seq for e in events] == list(range(events[0].seq, events[0].seq + 300))
    assert [e.offset for e in events] == list(range(1, 301))
    middle = await log.read(p("pk"), events[99].seq, 50)
    assert [e.id for e in middle.events] == [e.id for e in events[100:150]]
    assert [e.data for e in middle.events] == [e.data for e in events[100:150]]
    assert await log.resolve(Cursor.parse(events[123].id)) == events[123].seq
    assert await log.resolve(Cursor.parse(events[-1].id)) == events[-1].seq
    assert (await log.read(p("pk"), events[-1].seq, 10)).events == []
    assert log.is_next(events[0].seq, events[1].seq)
    assert log.is_next(events[-1].seq, events[-1].seq + (1 << 10) - 299)  # the next message's first


async def test_packed_messages_page_through_consumers_from_inside_a_message(
    log: NatsEventLog,
) -> None:
    """Pages that end inside packed messages (many of them: past the direct-get window)
    go on with the rest of the message: every event once, in order, and a resume from an
    id in the middle of a message gets exactly what followed."""
    written = []
    for call in range(80):
        items = [("pp", "t", b'{"c":%d,"i":%d}' % (call, i)) for i in range(5)]
        written += await log.append_many(items, 1.0)
    assert len({stream_seq_of(e.seq) for e in written}) == 80
    seen = []
    cursor = 0
    while True:
        page = await log.read(p("pp"), cursor, 7)
        seen += page.events
        cursor = page.last_seq
        if len(page.events) < 7:
            break
    assert [e.id for e in seen] == [e.id for e in written]
    assert [e.data for e in seen] == [e.data for e in written]
    resumed = await log.read(p("pp"), await log.resolve(Cursor.parse(written[12].id)), 1000)
    assert [e.id for e in resumed.events] == [e.id for e in written[13:]]


async def test_a_busy_channel_keeps_offsets_gapless_across_three_nodes(prefix: str) -> None:
    """Three nodes append batches to the same channels at once: one order, no gap, no repeat."""
    history = History(max_events=10_000, max_age=3600)
    nodes = [NatsEventLog(URL, history, name=prefix) for _ in range(3)]
    for node in nodes:
        await node.open()
    try:

        async def write(node: NatsEventLog, who: int) -> None:
            for round_ in range(10):
                first = who * 1000 + round_ * 10
                batch = [(f"hot/{i % 2}", "t", b"%d" % (first + i)) for i in range(10)]
                await node.append_many(batch, 1.0)

        await asyncio.gather(*(write(node, i) for i, node in enumerate(nodes)))
        events = (await nodes[0].read(p("hot/#"), 0, 1000)).events
        assert len(events) == 300
        for channel in ("hot/0", "hot/1"):
            assert [e.offset for e in events if e.channel == channel] == list(range(1, 151))
        for who in range(3):  # each node's own order is kept on each channel
            for channel in ("hot/0", "hot/1"):
                mine = [int(e.data) for e in events if e.channel == channel]
                mine = [n for n in mine if n // 1000 == who]
                assert mine == sorted(mine)
        for event in events[::7]:  # ids resolve on every node (through the events' headers)
            assert await nodes[2].resolve(Cursor.parse(event.id)) == event.seq
    finally:
        for node in nodes:
            await node.close()


async def test_resolve_finds_any_held_offset(log: NatsEventLog) -> None:
    """An id anywhere in a channel's history resolves to its seq, between other channels' events."""
    ids = []
    for i in range(60):
        event = await log.append("r", "t", b"%d" % i, 1.0)
        ids.append((event.id, event.seq))
        await log.append_many([("noise", "t", b"0")] * (i % 4), 1.0)
    for event_id, seq in ids:
        assert await log.resolve(Cursor.parse(event_id)) == seq


async def test_channels_reports_offsets_and_trims(log: NatsEventLog) -> None:
    """channels() lists every channel with its last offset and what was trimmed."""
    await fill(log, "a", 3, t=1.0)
    await fill(log, "b", 2, t=100.0)
    await log.trim_older_than(2.5)
    infos = {c.name: c for c in await log.channels()}
    assert (infos["a"].last_offset, infos["a"].trimmed_offset) == (3, 2)
    assert (infos["b"].last_offset, infos["b"].trimmed_offset) == (2, 0)


async def test_without_the_driver_opening_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """nats-py is imported when a log opens; without it the error names the extra to install."""
    monkeypatch.setitem(sys.modules, "nats", None)
    event_log = NatsEventLog(URL, name="never-made")
    with pytest.raises(MissingExtra, match=r"polyport\[nats\]"):
        await event_log.open()


async def test_one_nodes_trims_are_another_nodes_gaps(prefix: str) -> None:
    """Trims by node A (by count, by age) are recovery failed on node B, never a silent gap,
    and B numbers a channel A emptied after what A dropped."""
    history = History(max_events=10, max_age=3600)
    a, b = NatsEventLog(URL, history, name=prefix), NatsEventLog(URL, history, name=prefix)
    await a.open()
    await b.open()
    try:
        await b.append("e", "t", b"0", 1.0)  # B now knows channel e's end
        ids = await fill(a, "c", 30)
        with pytest.raises(RecoveryFailed):
            await b.read(p("c"), 0, 100)
        with pytest.raises(RecoveryFailed):
            await b.resolve(Cursor.parse(ids[0]))
        kept = (await b.read(p("c"), 0, 100, check=False)).events[0]
        assert await b.resolve(Cursor.parse(kept.id)) == kept.seq
        await fill(a, "e", 5, t=2.0)
        assert await a.trim_older_than(100.0) == 6  # all of e
        event = await b.append("e", "t", b"7", 200.0)
        assert event.offset == 7
        with pytest.raises(RecoveryFailed):
            await b.read(p("e"), 0, 10)
    finally:
        await a.close()
        await b.close()


async def test_an_unreachable_server_is_unavailable_at_open() -> None:
    """nats-py would retry a first connection forever; opening gives up after the timeout."""
    event_log = NatsEventLog(f"nats://127.0.0.1:{closed_port()}", name="unreachable", timeout=1)
    with pytest.raises(Unavailable):
        await event_log.open()


async def test_an_event_larger_than_a_message_is_refused_and_the_log_goes_on(
    log: NatsEventLog,
) -> None:
    """An event the server would not take in one message is refused before it is sent
    (sent, it would close the connection under every other append); the next is fine."""
    too_big = b"x" * (1024 * 1024)
    with pytest.raises(PayloadTooLarge):
        await log.append("big", "t", too_big, 1000.0)
    event = await log.append("big", "t", b"x" * (512 * 1024), 1000.0)
    assert event.offset == 1


async def test_nodes_racing_on_one_channel_store_each_acknowledged_event_once(
    prefix: str,
) -> None:
    """Three nodes, each with many appends in flight on one channel at once (packed, and
    losing rounds to each other): every acknowledged event is stored exactly once with
    the seq and offset it was acknowledged with, offsets are gapless, each writer's events
    keep its order, and one call's events stay together."""
    history = History(max_events=100_000, max_age=3600)
    nodes = [NatsEventLog(URL, history, name=prefix) for _ in range(3)]
    for node in nodes:
        await node.open()
    try:

        async def write(node: NatsEventLog, writer: str) -> list[list[Event]]:
            calls = []
            for i in range(30):
                if i % 5 == 0:
                    items = [
                        ("hot", "t", b'"%s-%d-%d"' % (writer.encode(), i, j)) for j in range(4)
                    ]
                    calls.append(await node.append_many(items, 1.0))
                else:
                    data = b'"%s-%d"' % (writer.encode(), i)
                    calls.append([await node.append("hot", "t", data, 1.0)])
            return calls

        writers = [(node, f"{who}.{task}") for who, node in enumerate(nodes) for task in range(10)]
        results = await asyncio.gather(*(write(node, writer) for node, writer in writers))
        acked = [event for calls in results for call in calls for event in call]
        stored = (await nodes[1].read(p("hot"), 0, 10_000)).events
        assert len(stored) == len(acked) == 30 * 48
        assert [e.offset for e in stored] == list(range(1, len(stored) + 1))
        assert {(e.data, e.offset, e.seq) for e in stored} == {
            (e.data, e.offset, e.seq) for e in acked
        }
        for calls in results:
            offsets = [e.offset for call in calls for e in call]
            assert offsets == sorted(offsets)  # each writer's order
            for call in calls:
                assert [e.offset for e in call] == list(range(call[0].offset, call[-1].offset + 1))
        assert len({stream_seq_of(e.seq) for e in stored}) < len(stored)  # packed
    finally:
        for node in nodes:
            await node.close()


@pytest.fixture
async def proxy() -> AsyncIterator[FreezingProxy]:
    """A relay to NATS that can hold either direction and cut every connection."""
    async with FreezingProxy(4222).running() as relay:
        yield relay


async def _stored_data(prefix: str, channel: str) -> list[bytes]:
    """The data of ``channel`` as the stream holds it, read on a connection of its own."""
    observer = NatsEventLog(URL, name=prefix)
    await observer.open()
    try:
        events = (await observer.read(p(channel), 0, 1000)).events
        assert [e.offset for e in events] == list(range(1, len(events) + 1))
        return [e.data for e in events]
    finally:
        await observer.close()


async def test_a_message_stored_when_the_connection_broke_is_acknowledged_once(
    prefix: str, proxy: FreezingProxy
) -> None:
    """The server stores messages (one per channel) and their answers are lost with the
    connection: once connected again the writer finds each by its id and acknowledges
    its appends (not sent again), then sends what queued behind."""
    log = NatsEventLog(f"nats://127.0.0.1:{proxy.port}", name=prefix, timeout=5)
    await log.open()
    try:
        await log.append_many([("r", "t", b"0"), ("s", "t", b"s0")], 1.0)  # both ends known
        proxy.freeze(up=False)  # requests arrive, answers are held
        in_flight = asyncio.create_task(log.append_many([("r", "t", b"1"), ("r", "t", b"2")], 1.0))
        other = asyncio.create_task(log.append("s", "t", b"s1", 1.0))
        async with asyncio.timeout(5):
            while (
                len(await _stored_data(prefix, "r")) < 3 or len(await _stored_data(prefix, "s")) < 2
            ):
                await asyncio.sleep(0.05)
        queued = asyncio.create_task(log.append("r", "t", b"3", 1.0))
        await asyncio.sleep(0.1)
        proxy.sever()
        proxy.thaw()
        events = await in_flight
        assert [(e.offset, e.data) for e in events] == [(2, b"1"), (3, b"2")]
        assert (await other).offset == 2
        assert (await queued).offset == 4
        assert await _stored_data(prefix, "r") == [b"0", b"1", b"2", b"3"]
        assert await _stored_data(prefix, "s") == [b"s0", b"s1"]
        stored = (await log.read(p("r"), 0, 10)).events
        assert [e.seq for e in stored[1:3]] == [e.seq for e in events]
    finally:
        await log.close()


async def test_a_message_lost_with_the_connection_is_sent_again_once(
    prefix: str, proxy: FreezingProxy
) -> None:
    """A message that never reached the server (held, then the connection broke) is not
    found in the stream once connected again: it is sent again, and stored once."""
    log = NatsEventLog(f"nats://127.0.0.1:{proxy.port}", name=prefix, timeout=5)
    await log.open()
    try:
        await log.append("r", "t", b"0", 1.0)
        proxy.freeze(down=False)  # nothing reaches the server
        in_flight = asyncio.create_task(log.append_many([("r", "t", b"1"), ("r", "t", b"2")], 1.0))
        await asyncio.sleep(0.2)
        assert await _stored_data(prefix, "r") == [b"0"]
        proxy.sever()
        proxy.thaw()
        events = await in_flight
        assert [(e.offset, e.data) for e in events] == [(2, b"1"), (3, b"2")]
        assert await _stored_data(prefix, "r") == [b"0", b"1", b"2"]
    finally:
        await log.close()


async def test_a_stream_of_one_event_per_message_is_not_read(prefix: str) -> None:
    """A stream an older polyport wrote (one event per message, its description says so)
    is refused at open with what to do, not misread."""
    import nats

    nc = await nats.connect(URL)
    try:
        await nc.jetstream().add_stream(
            name=prefix,
            subjects=[f"polyport.{prefix}.>"],
            description="polyport event log, epoch abcdefghij",
        )
    finally:
        await nc.close()
    event_log = NatsEventLog(URL, name=prefix)
    with pytest.raises(Unavailable, match="older polyport"):
        await event_log.open()


async def test_hubs_on_one_stream_deliver_every_event_in_log_order(prefix: str) -> None:
    """Two hubs (two nodes) publish singles and batches over several channels at once:
    every subscriber gets everything in seq order, although a batch's channels are
    stored apart and seqs skip between messages."""
    bus = LocalBus()
    hubs = [EventHub(NatsEventLog(URL, name=prefix), bus=bus, poll_interval=5.0) for _ in "ab"]
    for hub in hubs:
        await hub.start()
    try:
        subscriptions = [await hub.subscribe(p("c/#")) for hub in (*hubs, *hubs)]
        total = 2 * (30 + 3 * 7)

        async def take(subscription: Subscription) -> list[Event]:
            out: list[Event] = []
            async with asyncio.timeout(20):
                while len(out) < total:
                    out += await subscription.batch()
            return out

        readers = [asyncio.create_task(take(s)) for s in subscriptions]

        async def write(hub: EventHub, who: str) -> list[Event]:
            out = []
            for i in range(30):
                out.append(await hub.publish(f"c/{i % 3}", "t", b'"%s%d"' % (who.encode(), i)))
                if i % 10 == 9:
                    items = [(f"c/{k % 3}", "t", b'"%s-b%d"' % (who.encode(), k)) for k in range(7)]
                    out += await hub.publish_many(items)
            return out

        written = await asyncio.gather(write(hubs[0], "a"), write(hubs[1], "b"))
        everything = sorted(e.seq for batch in written for e in batch)
        for reader in readers:
            assert [e.seq for e in await reader] == everything
    finally:
        for hub in hubs:
            await hub.stop()


async def test_a_hub_alone_hands_its_events_over_without_reading_them_back(prefix: str) -> None:
    """Alone on the stream, a hub's own events (singles, and batches over channels stored
    as messages of their own) are known to follow one another: its subscribers get them
    at once, with no read of the log."""
    log = NatsEventLog(URL, name=prefix)
    hub = EventHub(log, bus=LocalBus(), poll_interval=30.0)
    await hub.start()
    reads = 0
    read = log.read

    async def counted(*args: Any, **kwargs: Any) -> ReadResult:
        nonlocal reads
        reads += 1
        return await read(*args, **kwargs)

    log.read = counted  # type: ignore[method-assign]
    try:
        subscription = await hub.subscribe(p("c/#"))
        first = asyncio.create_task(subscription.batch())
        async with asyncio.timeout(5):
            while subscription._catching_up:  # its first look at the log: nothing yet
                await asyncio.sleep(0.01)
        reads = 0
        published = [await hub.publish("c/a", "t", b"%d" % i) for i in range(5)]
        published += await hub.publish_many([("c/a", "t", b"5"), ("c/b", "t", b"6")] * 3)
        published += [await hub.publish("c/b", "t", b"%d" % i) for i in range(7, 10)]
        got = await first
        async with asyncio.timeout(5):
            while len(got) < len(published):
                got += await subscription.batch()
        assert [e.seq for e in got] == sorted(e.seq for e in published)
        assert reads == 0
    finally:
        await hub.stop()

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

import pytest
from tests.conftest import require_service
from tests.contract.eventlog_contract import Factory, SharedEventLogContract, fill, p
from tests.contract.private_servers import closed_port

from polyport.backends.nats import NatsEventLog
from polyport.backends.nats.subjects import Subjects, channel_tokens, tokens_channel
from polyport.core.errors import MissingExtra, PayloadTooLarge, RecoveryFailed, Unavailable
from polyport.core.eventlog import EventLog, History
from polyport.core.events import Cursor, Pattern, position

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
    assert (event.offset, event.seq) == (1, 1)
    with pytest.raises(RecoveryFailed):
        await log.resolve(Cursor.parse(ids[-1]))
    assert await log.resolve(Cursor.parse(event.id)) == 1


async def test_reads_large_and_wildcard_pages_through_consumers(log: NatsEventLog) -> None:
    """Past the direct-get window a read pages through a consumer, in order, across patterns."""
    items = [(f"k/{i % 3}", "t", b'{"i":%d}' % i) for i in range(300)]
    await log.append_many(items, 1.0)
    page = await log.read(p("k/0", "k/1"), 0, 150)
    assert [e.channel for e in page.events] == [c for c, _, _ in items if c != "k/2"][:150]
    assert page.last_seq == page.events[-1].seq
    rest = await log.read(p("k/0", "k/1"), page.last_seq, 1000)
    assert len(page.events) + len(rest.events) == 200
    assert rest.last_seq == await log.head()
    offsets = [e.offset for e in page.events + rest.events if e.channel == "k/1"]
    assert offsets == list(range(1, 101))


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
        for node in nodes:  # each node's own batch order is kept
            mine = [int(e.data) for e in events if int(e.data) // 1000 == nodes.index(node)]
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

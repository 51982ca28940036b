"""The contract every event-log backend passes, written once and subclassed per backend.

A backend's test module subclasses :class:`EventLogContract` and gives the
``make_log`` fixture: a factory of logs over fresh storage of its own (a new
file, key prefix, schema or stream), where the same ``name`` reopens the same
storage. ``persistent`` says whether reopening keeps history (SQLite and the
engines) or starts a new one (memory); ``consecutive_seqs`` whether seqs count
up by one (all but NATS, which numbers an event by its message and its place
in it).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import ClassVar, Protocol

import pytest

from polyport.core.errors import RecoveryFailed
from polyport.core.eventlog import EventLog, History
from polyport.core.events import Cursor, Event, Pattern, position


class Factory(Protocol):
    def __call__(self, history: History, name: str = "log") -> EventLog: ...


def p(*texts: str) -> list[Pattern]:
    return [Pattern.parse(t) for t in texts]


async def fill(log: EventLog, channel: str, n: int, t: float = 1000.0) -> list[str]:
    ids = []
    for i in range(n):
        event = await log.append(channel, "test.event", b'{"n":%d}' % i, t + i)
        ids.append(event.id)
    await log.durable()
    return ids


class EventLogContract:
    """Ordering, wildcards, bounded history, resume and recovery failed, epochs, restarts."""

    #: Whether a log reopened over the same storage keeps its history.
    persistent: ClassVar[bool] = True
    #: Whether each event's seq is the one before it plus one.
    consecutive_seqs: ClassVar[bool] = True

    @pytest.fixture
    def make_log(self) -> Factory:
        raise NotImplementedError("a backend's subclass gives make_log")

    @pytest.fixture
    async def log(self, make_log: Factory) -> AsyncIterator[EventLog]:
        event_log = make_log(History(max_events=1000, max_age=3600))
        await event_log.open()
        yield event_log
        await event_log.close()

    async def test_append_many_is_append_item_by_item(self, log: EventLog) -> None:
        """A batch gets the offsets, seqs and time that appending its items in turn would give
        (across channels, a log whose seqs skip may order a batch by channel)."""
        first = await log.append("a", "t", b"0", 1.0)
        batch = await log.append_many([("a", "t", b"1"), ("b", "u", b"2"), ("a", "t", b"3")], 2.0)
        await log.durable()
        assert [(e.channel, e.offset, e.type, e.data) for e in batch] == [
            ("a", 2, "t", b"1"),
            ("b", 1, "u", b"2"),
            ("a", 3, "t", b"3"),
        ]
        if self.consecutive_seqs:
            assert [e.seq for e in batch] == [first.seq + 1, first.seq + 2, first.seq + 3]
        else:
            assert first.seq < batch[0].seq < batch[2].seq and batch[1].seq > first.seq
            assert log.is_next(batch[0].seq, batch[2].seq)  # one channel's: consecutive
        assert {e.time for e in batch} == {2.0}
        assert await log.append_many([], 3.0) == []
        read = await log.read(p("#"), first.seq, 10)
        assert [e.id for e in read.events] == [e.id for e in sorted(batch, key=lambda e: e.seq)]

    async def test_offsets_count_per_channel_and_seq_globally(self, log: EventLog) -> None:
        """Offsets start at 1 per channel; seq orders the whole log; ids never collide."""
        a1 = await log.append("a", "t", b"1", 1.0)
        b1 = await log.append("b", "t", b"2", 2.0)
        a2 = await log.append("a", "t", b"3", 3.0)
        await log.durable()
        assert (a1.offset, b1.offset, a2.offset) == (1, 1, 2)
        assert a1.seq < b1.seq < a2.seq
        assert a1.epoch == a2.epoch != b1.epoch
        assert len({a1.id, b1.id, a2.id}) == 3
        assert a2.id == f"{a2.epoch}:2"
        head = await log.head()
        assert head == a2.seq if self.consecutive_seqs else head >= a2.seq
        assert (await log.read(p("#"), a2.seq, 10)).events == []

    async def test_read_returns_events_in_order_with_limit(self, log: EventLog) -> None:
        """A read gives events after the position, oldest first, at most ``limit``."""
        await fill(log, "orders/created", 5)
        page = await log.read(p("orders/created"), 0, 3)
        assert [e.offset for e in page.events] == [1, 2, 3]
        assert page.last_seq == page.events[-1].seq
        rest = await log.read(p("orders/created"), page.last_seq, 10)
        assert [e.offset for e in rest.events] == [4, 5]
        assert rest.last_seq == await log.head()
        assert rest.events[0].data == b'{"n":3}'

    async def test_wildcards_match_like_mqtt(self, log: EventLog) -> None:
        """'+' matches one segment, '#' the rest including the parent; patterns union."""
        for channel in (
            "orders",
            "orders/created",
            "orders/created/eu",
            "orders/paid",
            "users/created",
        ):
            await log.append(channel, "t", b"{}", 1.0)
        await log.durable()

        async def channels(*patterns: str) -> list[str]:
            return [e.channel for e in (await log.read(p(*patterns), 0, 100)).events]

        assert await channels("orders/+") == ["orders/created", "orders/paid"]
        assert await channels("orders/#") == [
            "orders",
            "orders/created",
            "orders/created/eu",
            "orders/paid",
        ]
        assert await channels("+/created") == ["orders/created", "users/created"]
        assert await channels("#") == [
            "orders",
            "orders/created",
            "orders/created/eu",
            "orders/paid",
            "users/created",
        ]
        assert await channels("orders/created", "orders/#") == [
            "orders",
            "orders/created",
            "orders/created/eu",
            "orders/paid",
        ]

    async def test_bounded_history_by_count_and_recovery_failed(self, make_log: Factory) -> None:
        """Past max_events the oldest go, and resuming before them fails explicitly."""
        log = make_log(History(max_events=10, max_age=3600))
        await log.open()
        try:
            ids = await fill(log, "c", 50)
            page = await log.read(p("c"), 0, 100, check=False)
            assert 10 <= len(page.events) <= 11  # backends may trim in small batches
            assert page.events[-1].offset == 50
            with pytest.raises(RecoveryFailed):
                await log.read(p("c"), 0, 100)
            with pytest.raises(RecoveryFailed) as failed:
                await log.resolve(Cursor.parse(ids[0]))
            assert failed.value.latest is not None
            kept = page.events[0]
            seq = await log.resolve(Cursor.parse(kept.id))
            assert seq == kept.seq
            after = await log.read(p("c"), seq, 100)
            assert [e.offset for e in after.events] == list(range(kept.offset + 1, 51))
        finally:
            await log.close()

    async def test_bounded_history_by_age(self, log: EventLog) -> None:
        """Events older than the cut are dropped, and resuming before them fails."""
        ids = await fill(log, "c", 10, t=1000.0)
        dropped = await log.trim_older_than(1005.0)
        assert dropped == 5
        with pytest.raises(RecoveryFailed):
            await log.resolve(Cursor.parse(ids[2]))
        seq = await log.resolve(Cursor.parse(ids[5]))
        page = await log.read(p("c"), seq, 100)
        assert [e.offset for e in page.events] == [7, 8, 9, 10]
        with pytest.raises(RecoveryFailed):
            await log.read(p("c"), 0, 100)

    async def test_a_gap_in_another_matching_channel_fails_a_wildcard_resume(
        self, log: EventLog
    ) -> None:
        """Resuming 'x/#' fails if any matching channel lost events after the cursor."""
        first = await log.append("x/a", "t", b"{}", 1.0)
        await log.append("x/b", "t", b"{}", 2.0)
        await log.append("x/a", "t", b"{}", 10.0)
        await log.durable()
        await log.trim_older_than(5.0)  # drops x/a#1 and x/b#1
        with pytest.raises(RecoveryFailed):
            await log.read(p("x/#"), first.seq, 10)

    async def test_cursor_forms(self, log: EventLog) -> None:
        """Event ids and positions resolve; foreign, future and lost cursors are refused.

        A cursor ahead of the log can only come from a log that lost its newest
        writes (or a forged one): that is recovery failed, not a caller's mistake.
        """
        ids = await fill(log, "c", 3)
        head = await log.head()
        events = (await log.read(p("c"), 0, 10)).events
        assert await log.resolve(Cursor.parse(position(log.epoch, 1))) == 1
        assert await log.resolve(Cursor.parse(ids[1])) == events[1].seq
        with pytest.raises(RecoveryFailed):
            await log.resolve(Cursor.parse(position(log.epoch, head + 5)))
        epoch = ids[0].split(":")[0]
        with pytest.raises(RecoveryFailed):
            await log.resolve(Cursor.parse(f"{epoch}:99"))
        with pytest.raises(RecoveryFailed):
            await log.resolve(Cursor.parse(position("zzzzzzzzzz", 1)))
        with pytest.raises(RecoveryFailed):
            await log.resolve(Cursor.parse("zzzzzzzzzz:1"))

    async def test_a_reopened_log_keeps_its_history_or_changes_its_epoch(
        self, make_log: Factory
    ) -> None:
        """Reopening keeps events, epochs and offsets and never reuses a seq — or, for a
        log that keeps nothing, every old cursor is recovery failed (a new epoch)."""
        history = History(max_events=3, max_age=3600)
        log = make_log(history, "reopened")
        await log.open()
        ids = await fill(log, "c", 6)
        await log.trim_older_than(10_000.0)  # everything gone
        head = await log.head()
        await log.close()

        log = make_log(history, "reopened")
        await log.open()
        try:
            event = await log.append("c", "t", b"{}", 20_000.0)
            await log.durable()
            with pytest.raises(RecoveryFailed):
                await log.resolve(Cursor.parse(ids[-1]))
            assert await log.resolve(Cursor.parse(event.id)) == event.seq
            if self.persistent:
                assert event.offset == 7
                assert event.epoch == ids[0].split(":")[0]
                assert log.is_next(head, event.seq)
            else:
                assert event.epoch != ids[0].split(":")[0]
        finally:
            await log.close()


class SharedEventLogContract(EventLogContract):
    """What an engine's log adds: several nodes write one log, and read each other's events.

    For backends that several processes share (PostgreSQL, Redis, NATS): logs
    opened with the same ``name`` are nodes over the same storage.
    """

    async def test_concurrent_writers_share_one_sequence(self, make_log: Factory) -> None:
        """Two nodes appending at once: unique seqs, gapless offsets per channel, one order."""
        history = History(max_events=1000, max_age=3600)
        a, b = make_log(history, "shared"), make_log(history, "shared")
        await a.open()
        await b.open()
        try:

            async def write(log: EventLog, who: str) -> list[str]:
                ids = []
                for i in range(40):
                    event = await log.append(f"c/{i % 2}", "t", b'"%s%d"' % (who.encode(), i), 1.0)
                    ids.append(event.id)
                batch = await log.append_many([("c/0", "t", b'"%s-batch"' % who.encode())] * 5, 2.0)
                await log.durable()
                return ids + [e.id for e in batch]

            ids_a, ids_b = await asyncio.gather(write(a, "a"), write(b, "b"))
            assert len(set(ids_a) | set(ids_b)) == 90
            for reader in (a, b):
                events = (await reader.read(p("c/#"), 0, 1000)).events
                assert len(events) == 90
                seqs = [e.seq for e in events]
                assert seqs == sorted(seqs) and len(set(seqs)) == 90
                for channel in ("c/0", "c/1"):
                    offsets = [e.offset for e in events if e.channel == channel]
                    assert offsets == list(range(1, len(offsets) + 1))
                assert {e.id for e in events} == set(ids_a) | set(ids_b)
            assert await a.head() == await b.head()
        finally:
            await a.close()
            await b.close()

    async def test_an_id_from_one_node_resumes_on_another(self, make_log: Factory) -> None:
        """A client that got an id from node A resumes on node B with exactly what followed."""
        history = History(max_events=1000, max_age=3600)
        a, b = make_log(history, "resume"), make_log(history, "resume")
        await a.open()
        await b.open()
        try:
            ids = await fill(a, "orders", 5)
            later = await fill(b, "orders", 3)
            seq = await b.resolve(Cursor.parse(ids[2]))
            events = (await b.read(p("orders"), seq, 100)).events
            assert [e.id for e in events] == ids[3:] + later
            assert [e.id for e in (await a.read(p("orders"), seq, 100)).events] == [
                e.id for e in events
            ]
        finally:
            await a.close()
            await b.close()

    async def test_a_reader_following_concurrent_writers_misses_nothing(
        self, make_log: Factory
    ) -> None:
        """Readers that move their cursor to each read's end, while three nodes write
        single events and batches at once, end up with every event exactly once: no
        engine may show a seq before every lower one is visible."""
        history = History(max_events=10_000, max_age=3600)
        nodes = [make_log(history, "followed") for _ in range(3)]
        for node in nodes:
            await node.open()
        writers_done = asyncio.Event()

        async def write(log: EventLog, who: int) -> list[Event]:
            events: list[Event] = []
            for i in range(40):
                if i % 10 == 0:
                    events += await log.append_many([(f"w/{who}", "t", b"%d" % i)] * 4, 1.0)
                else:
                    events.append(await log.append(f"w/{i % 3}", "t", b"%d" % i, 1.0))
            await log.durable()
            return events

        async def follow(log: EventLog, patterns: list[Pattern]) -> list[Event]:
            seen: list[Event] = []
            cursor = 0
            async with asyncio.timeout(60):
                while True:
                    finished = writers_done.is_set()
                    result = await log.read(patterns, cursor, 7)
                    seen += result.events
                    cursor = result.last_seq
                    if finished and not result.events:
                        return seen
                    await asyncio.sleep(0)

        try:
            readers = [
                asyncio.create_task(follow(nodes[0], p("w/#"))),
                asyncio.create_task(follow(nodes[1], p("w/0", "w/1", "w/2"))),
            ]
            written = await asyncio.gather(*(write(log, who) for who, log in enumerate(nodes)))
            writers_done.set()
            seqs = sorted(e.seq for events in written for e in events)
            assert len(set(seqs)) == len(seqs) == 3 * (36 + 4 * 4)
            for reader in readers:
                assert [e.seq for e in await reader] == seqs
        finally:
            for node in nodes:
                await node.close()

    async def test_one_nodes_trims_are_another_nodes_gaps(self, make_log: Factory) -> None:
        """History node A trimmed (by count, by age) is recovery failed on node B, never a
        silent gap, and B numbers a channel A emptied after what A dropped."""
        history = History(max_events=10, max_age=3600)
        a, b = make_log(history, "trimmed"), make_log(history, "trimmed")
        await a.open()
        await b.open()
        try:
            await b.append("e", "t", b"0", 1.0)  # B knows channel e's end
            await b.durable()
            ids = await fill(a, "c", 30)
            with pytest.raises(RecoveryFailed):
                await b.read(p("c"), 0, 100)
            with pytest.raises(RecoveryFailed):
                await b.resolve(Cursor.parse(ids[0]))
            kept = (await b.read(p("c"), 0, 100, check=False)).events[0]
            assert await b.resolve(Cursor.parse(kept.id)) == kept.seq
            await fill(a, "e", 5, t=2.0)
            await a.trim_older_than(100.0)  # all of e
            event = await b.append("e", "t", b"7", 200.0)
            await b.durable()
            assert event.offset == 7
            with pytest.raises(RecoveryFailed):
                await b.read(p("e"), 0, 10)
        finally:
            await a.close()
            await b.close()

    async def test_channel_names_keep_to_themselves(self, log: EventLog) -> None:
        """'a.b', 'a/b' and 'a-b' are three channels; '+' and '#' never cross a dot."""
        events = [await log.append(name, "t", b"1", 1.0) for name in ("a.b", "a/b", "a-b", "a")]
        await log.durable()
        assert [e.offset for e in events] == [1, 1, 1, 1]
        assert [e.channel for e in (await log.read(p("a/+"), 0, 10)).events] == ["a/b"]
        assert [e.channel for e in (await log.read(p("a/#"), 0, 10)).events] == ["a/b", "a"]
        assert [e.channel for e in (await log.read(p("a.b"), 0, 10)).events] == ["a.b"]
        assert [e.channel for e in (await log.read(p("+"), 0, 10)).events] == ["a.b", "a-b", "a"]

"""The shared contract suite every event-log backend passes."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from polyport.backends.memory import MemoryEventLog
from polyport.backends.sqlite import SqliteDatabase, SqliteEventLog
from polyport.core.errors import InvalidArgument, RecoveryFailed, Unavailable
from polyport.core.eventlog import EventLog, History
from polyport.core.events import Cursor, Pattern, position

Factory = Callable[[History], EventLog]


@pytest.fixture(params=["memory", "sqlite"])
def make_log(request: pytest.FixtureRequest, tmp_path: Path) -> Factory:
    def make(history: History) -> EventLog:
        if request.param == "memory":
            return MemoryEventLog(history)
        return SqliteEventLog(str(tmp_path / "log.sqlite3"), history)

    return make


@pytest.fixture
async def log(make_log: Factory) -> AsyncIterator[EventLog]:
    event_log = make_log(History(max_events=1000, max_age=3600))
    await event_log.open()
    yield event_log
    await event_log.close()


def p(*texts: str) -> list[Pattern]:
    return [Pattern.parse(t) for t in texts]


async def fill(log: EventLog, channel: str, n: int, t: float = 1000.0) -> list[str]:
    ids = []
    for i in range(n):
        event = await log.append(channel, "test.event", b'{"n":%d}' % i, t + i)
        ids.append(event.id)
    await log.durable()
    return ids


async def test_append_many_is_append_item_by_item(log: EventLog) -> None:
    """A batch gets the offsets, seqs and time that appending its items in turn would give."""
    first = await log.append("a", "t", b"0", 1.0)
    batch = await log.append_many([("a", "t", b"1"), ("b", "u", b"2"), ("a", "t", b"3")], 2.0)
    await log.durable()
    assert [(e.channel, e.offset, e.type, e.data) for e in batch] == [
        ("a", 2, "t", b"1"),
        ("b", 1, "u", b"2"),
        ("a", 3, "t", b"3"),
    ]
    assert [e.seq for e in batch] == [first.seq + 1, first.seq + 2, first.seq + 3]
    assert {e.time for e in batch} == {2.0}
    assert await log.append_many([], 3.0) == []
    read = await log.read(p("#"), first.seq, 10)
    assert [e.id for e in read.events] == [e.id for e in batch]


async def test_offsets_count_per_channel_and_seq_globally(log: EventLog) -> None:
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
    assert await log.head() == a2.seq


async def test_read_returns_events_in_order_with_limit(log: EventLog) -> None:
    """A read gives events after the position, oldest first, at most ``limit``."""
    await fill(log, "orders/created", 5)
    page = await log.read(p("orders/created"), 0, 3)
    assert [e.offset for e in page.events] == [1, 2, 3]
    assert page.last_seq == page.events[-1].seq
    rest = await log.read(p("orders/created"), page.last_seq, 10)
    assert [e.offset for e in rest.events] == [4, 5]
    assert rest.last_seq == await log.head()
    assert rest.events[0].data == b'{"n":3}'


async def test_wildcards_match_like_mqtt(log: EventLog) -> None:
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


async def test_bounded_history_by_count_and_recovery_failed(make_log: Factory) -> None:
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


async def test_bounded_history_by_age(log: EventLog) -> None:
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


async def test_a_gap_in_another_matching_channel_fails_a_wildcard_resume(log: EventLog) -> None:
    """Resuming 'x/#' fails if any matching channel lost events after the cursor."""
    first = await log.append("x/a", "t", b"{}", 1.0)
    await log.append("x/b", "t", b"{}", 2.0)
    await log.append("x/a", "t", b"{}", 10.0)
    await log.durable()
    await log.trim_older_than(5.0)  # drops x/a#1 and x/b#1
    with pytest.raises(RecoveryFailed):
        await log.read(p("x/#"), first.seq, 10)


async def test_cursor_forms(log: EventLog) -> None:
    """Event ids and positions resolve; foreign, future and lost cursors are refused.

    A cursor ahead of the log can only come from a log that lost its newest
    writes (or a forged one): that is recovery failed, not a caller's mistake.
    """
    ids = await fill(log, "c", 3)
    head = await log.head()
    assert await log.resolve(Cursor.parse(position(log.epoch, 1))) == 1
    assert await log.resolve(Cursor.parse(ids[1])) == head - 1
    with pytest.raises(RecoveryFailed):
        await log.resolve(Cursor.parse(position(log.epoch, head + 5)))
    epoch = ids[0].split(":")[0]
    with pytest.raises(RecoveryFailed):
        await log.resolve(Cursor.parse(f"{epoch}:99"))
    with pytest.raises(RecoveryFailed):
        await log.resolve(Cursor.parse(position("zzzzzzzzzz", 1)))
    with pytest.raises(RecoveryFailed):
        await log.resolve(Cursor.parse("zzzzzzzzzz:1"))


def test_malformed_cursors_are_invalid_arguments() -> None:
    """Cursor syntax errors are the caller's fault, with a helpful message."""
    for text in ("", "abc", "1:2:3", "x:-1", "UPPER:1", "a@b", "a:" + "9" * 30):
        with pytest.raises(InvalidArgument):
            Cursor.parse(text)


async def test_a_new_log_has_new_epochs(make_log: Factory, tmp_path: Path) -> None:
    """Losing history (a memory log restarted, a new SQLite file) changes the epoch."""
    first = MemoryEventLog()
    await first.open()
    old = await first.append("c", "t", b"{}", 1.0)
    second = MemoryEventLog()
    await second.open()
    await second.append("c", "t", b"{}", 1.0)
    with pytest.raises(RecoveryFailed):
        await second.resolve(Cursor.parse(old.id))
    assert first.epoch != second.epoch
    other = SqliteEventLog(str(tmp_path / "other.sqlite3"))
    await other.open()
    try:
        with pytest.raises(RecoveryFailed):
            await other.resolve(Cursor.parse(position(first.epoch, 1)))
    finally:
        await other.close()


async def test_sqlite_history_survives_a_restart(tmp_path: Path) -> None:
    """Reopening the file keeps events, epochs and offsets; seq is never reused."""
    path = str(tmp_path / "log.sqlite3")
    log = SqliteEventLog(path, History(max_events=3, max_age=3600))
    await log.open()
    ids = await fill(log, "c", 6)
    await log.trim_older_than(10_000.0)  # everything gone
    head = await log.head()
    await log.close()

    log = SqliteEventLog(path, History(max_events=3, max_age=3600))
    await log.open()
    try:
        event = await log.append("c", "t", b"{}", 20_000.0)
        await log.durable()
        assert event.offset == 7
        assert event.epoch == ids[0].split(":")[0]
        assert event.seq == head + 1
        with pytest.raises(RecoveryFailed):
            await log.resolve(Cursor.parse(ids[-1]))
        assert await log.resolve(Cursor.parse(event.id)) == event.seq
    finally:
        await log.close()


class _FailingCommits:
    """A SQLite connection whose next ``failures`` COMMITs fail, as a full disk would."""

    def __init__(self, conn: sqlite3.Connection, failures: int = 1) -> None:
        self._conn = conn
        self.failures = failures

    def execute(self, sql: str, *args: object) -> sqlite3.Cursor:
        if sql == "COMMIT" and self.failures:
            self.failures -= 1
            raise sqlite3.OperationalError("database or disk is full")
        return self._conn.execute(sql, *args)

    def __getattr__(self, name: str) -> object:
        return getattr(self._conn, name)


async def test_sqlite_readers_see_only_committed_events(tmp_path: Path) -> None:
    """Until its group commits, an appended event is invisible: head, read and resolve."""
    log = SqliteEventLog(str(tmp_path / "log.sqlite3"))
    await log.open()
    try:
        before = await fill(log, "c", 2)
        head = await log.head()
        event = await log.append("c", "t", b"{}", 5.0)
        assert await log.head() == head
        assert (await log.read(p("c"), 0, 10)).events[-1].id == before[-1]
        with pytest.raises(RecoveryFailed):
            await log.resolve(Cursor.parse(event.id))
        await log.durable()
        assert await log.head() == event.seq
        assert (await log.read(p("c"), 0, 10)).events[-1].id == event.id
        assert await log.resolve(Cursor.parse(event.id)) == event.seq
    finally:
        await log.close()


async def test_sqlite_a_failed_commit_fails_its_writers_and_shows_nothing(tmp_path: Path) -> None:
    """A commit that fails is rolled back; its ids were never shown and are assigned again."""
    log = SqliteEventLog(str(tmp_path / "log.sqlite3"))
    await log.open()
    try:
        await fill(log, "c", 2)
        head = await log.head()
        real = log.db._conn
        assert real is not None
        log.db._conn = _FailingCommits(real)  # type: ignore[assignment]
        lost = await log.append("c", "t", b'"lost"', 5.0)
        fresh = await log.append("new", "t", b'"lost too"', 5.0)  # a channel made in the group
        with pytest.raises(Unavailable):
            await log.durable()
        assert await log.head() == head
        assert [e.data for e in (await log.read(p("#"), 0, 10)).events] == [
            b'{"n":0}',
            b'{"n":1}',
        ]
        again = await log.append("c", "t", b'"kept"', 6.0)
        await log.durable()
        assert (again.seq, again.offset, again.id) == (lost.seq, lost.offset, lost.id)
        assert [e.data for e in (await log.read(p("#"), head, 10)).events] == [b'"kept"']
        assert fresh.channel not in [c.name for c in await log.channels()]
    finally:
        log.db._conn = real
        await log.close()


@pytest.mark.parametrize("sync", ["normal", "full"])
async def test_sqlite_takes_the_synchronous_mode_it_is_given(tmp_path: Path, sync: str) -> None:
    """database_sync picks SQLite's synchronous: 1 is NORMAL, 2 is FULL."""
    db = SqliteDatabase(str(tmp_path / "log.sqlite3"), synchronous=sync)
    log = SqliteEventLog(db)
    await log.open()
    try:
        assert db.conn.execute("PRAGMA synchronous").fetchone()[0] == {"normal": 1, "full": 2}[sync]
    finally:
        await log.close()

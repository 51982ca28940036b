"""The event log: the shared contract over the embedded backends, and SQLite's own guarantees."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from tests.contract.eventlog_contract import EventLogContract, Factory, fill, p

from polyport.backends.memory import MemoryEventLog
from polyport.backends.sqlite import SqliteDatabase, SqliteEventLog
from polyport.core.errors import InvalidArgument, RecoveryFailed, Unavailable
from polyport.core.eventlog import EventLog, History
from polyport.core.events import Cursor, position


class TestMemoryEventLog(EventLogContract):
    persistent = False

    @pytest.fixture
    def make_log(self) -> Factory:
        def make(history: History, name: str = "log") -> EventLog:
            return MemoryEventLog(history)

        return make


class TestSqliteEventLog(EventLogContract):
    @pytest.fixture
    def make_log(self, tmp_path: Path) -> Factory:
        def make(history: History, name: str = "log") -> EventLog:
            return SqliteEventLog(str(tmp_path / f"{name}.sqlite3"), history)

        return make


def test_malformed_cursors_are_invalid_arguments() -> None:
    """Cursor syntax errors are the caller's fault, with a helpful message."""
    for text in ("", "abc", "1:2:3", "x:-1", "UPPER:1", "a@b", "a:" + "9" * 30):
        with pytest.raises(InvalidArgument):
            Cursor.parse(text)


async def test_a_new_log_has_new_epochs(tmp_path: Path) -> None:
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

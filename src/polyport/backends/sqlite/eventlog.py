"""The event log in SQLite: durable history that survives restarts.

One row per event; one row per channel holding its epoch and what has been
trimmed. ``seq`` is assigned here (single writer) and never reused: at start
it resumes after the highest seq ever stored or trimmed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from polyport.backends.sqlite.db import SqliteDatabase
from polyport.core.eventlog import ChannelInfo, History, ReadResult, check_gap, resolve_with
from polyport.core.events import Cursor, Event, Pattern, new_epoch

_SCHEMA = """
CREATE TABLE IF NOT EXISTS polyport_log_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS polyport_channels (
    name TEXT PRIMARY KEY,
    epoch TEXT NOT NULL UNIQUE,
    trimmed_offset INTEGER NOT NULL DEFAULT 0,
    trimmed_seq INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS polyport_events (
    seq INTEGER PRIMARY KEY,
    channel TEXT NOT NULL,
    offset INTEGER NOT NULL,
    type TEXT NOT NULL,
    time REAL NOT NULL,
    data BLOB NOT NULL
);
-- Reads go by (channel, seq): "events of these channels after this position".
-- Within a channel offset and seq grow together, so offset lookups (rare: one
-- per resume) walk the same index over a bounded history.
DROP INDEX IF EXISTS polyport_events_by_channel;
CREATE INDEX IF NOT EXISTS polyport_events_by_channel_seq ON polyport_events (channel, seq);
CREATE INDEX IF NOT EXISTS polyport_events_by_time ON polyport_events (time);
"""

_COLUMNS = "channel, offset, type, time, data, seq"
#: Appended rows written at once, at the latest.
FLUSH_AT = 256
# Fewer matching channels than this are read with one indexed query each.
_IN_LIST_MAX = 200


class _Channel:
    __slots__ = ("count", "epoch", "last_offset", "name", "trimmed_offset", "trimmed_seq")

    def __init__(self, name: str, epoch: str, last: int, trimmed: int, tseq: int, count: int):
        self.name = name
        self.epoch = epoch
        self.last_offset = last
        self.trimmed_offset = trimmed
        self.trimmed_seq = tseq
        self.count = count

    def info(self) -> ChannelInfo:
        return ChannelInfo(
            self.name, self.epoch, self.last_offset, self.trimmed_offset, self.trimmed_seq
        )


class SqliteEventLog:
    """The :class:`~polyport.core.eventlog.EventLog` stored in a SQLite file."""

    def __init__(self, db: SqliteDatabase | str | Path, history: History | None = None) -> None:
        self.db = db if isinstance(db, SqliteDatabase) else SqliteDatabase(db)
        self.history = history or History()
        self._epoch = ""
        self._seq = 0
        self._channels: dict[str, _Channel] = {}
        self._by_epoch: dict[str, _Channel] = {}
        self._pending: list[tuple[int, str, int, str, float, bytes]] = []
        # Trim in batches: let a channel run this far over its bound first.
        self._slack = max(1, self.history.max_events // 10)

    @property
    def epoch(self) -> str:
        return self._epoch

    async def open(self) -> None:
        conn = self.db.open()
        conn.executescript(_SCHEMA)
        row = conn.execute("SELECT value FROM polyport_log_meta WHERE key='epoch'").fetchone()
        if row is None:
            self._epoch = new_epoch()
            conn.execute("INSERT INTO polyport_log_meta VALUES ('epoch', ?)", (self._epoch,))
        else:
            self._epoch = row[0]
        stats = {
            name: (last, count, top)
            for name, last, count, top in conn.execute(
                "SELECT channel, max(offset), count(*), max(seq) FROM polyport_events "
                "GROUP BY channel"
            )
        }
        self._seq = 0
        for name, epoch, trimmed, tseq in conn.execute(
            "SELECT name, epoch, trimmed_offset, trimmed_seq FROM polyport_channels"
        ):
            last, count, top = stats.get(name, (trimmed, 0, tseq))
            state = _Channel(name, epoch, max(last, trimmed), trimmed, tseq, count)
            self._channels[name] = state
            self._by_epoch[epoch] = state
            self._seq = max(self._seq, top or 0, tseq)

    async def close(self) -> None:
        self._flush()
        self.db.close()

    async def append(self, channel: str, type: str, data: bytes, time: float) -> Event:
        state = self._channels.get(channel)
        if state is None:
            state = _Channel(channel, new_epoch(), 0, 0, 0, 0)
            self.db.group_write(
                "INSERT INTO polyport_channels (name, epoch) VALUES (?, ?)", (channel, state.epoch)
            )
            self._channels[channel] = state
            self._by_epoch[state.epoch] = state
        seq = self._seq + 1
        offset = state.last_offset + 1
        # Rows wait a moment and go in together (one executemany per loop
        # iteration, or per FLUSH_AT rows); every read flushes them first.
        if not self._pending:
            asyncio.get_running_loop().call_soon(self._flush)
        self._pending.append((seq, channel, offset, type, time, data))
        if len(self._pending) >= FLUSH_AT:
            self._flush()
        self._seq, state.last_offset = seq, offset
        state.count += 1
        if state.count > self.history.max_events + self._slack:
            self._trim_channel(state, state.last_offset - self.history.max_events)
        return Event(channel, offset, state.epoch, seq, type, time, data)

    def flush(self) -> None:
        """Write appended events into the open group transaction now.

        A transactional outbox calls this before writing its own rows to the same
        database, so they commit together with the events they derive from, or
        after them, never before.
        """
        self._flush()

    def _flush(self) -> None:
        """Write the pending rows (into the group transaction, see :mod:`.db`)."""
        if self._pending:
            rows, self._pending = self._pending, []
            self.db.group_write_many(
                "INSERT INTO polyport_events (seq, channel, offset, type, time, data) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            )

    def _trim_channel(self, state: _Channel, through_offset: int) -> int:
        self._flush()
        conn = self.db.conn
        row = conn.execute(
            "SELECT max(seq), max(offset), count(*) FROM polyport_events "
            "WHERE channel = ? AND offset <= ?",
            (state.name, through_offset),
        ).fetchone()
        if not row or row[2] == 0:
            return 0
        tseq, toffset, count = row
        with self.db.transaction() as tx:
            tx.execute(
                "DELETE FROM polyport_events WHERE channel = ? AND offset <= ?",
                (state.name, toffset),
            )
            tx.execute(
                "UPDATE polyport_channels SET trimmed_offset = ?, trimmed_seq = ? WHERE name = ?",
                (toffset, tseq, state.name),
            )
        state.trimmed_offset, state.trimmed_seq = toffset, tseq
        state.count -= count
        return int(count)

    async def head(self) -> int:
        return self._seq

    async def resolve(self, cursor: Cursor) -> int:
        self._flush()
        state = None if cursor.is_position else self._by_epoch.get(cursor.epoch)
        seq_of_offset = first_seq = None
        if state is not None:
            conn = self.db.conn
            row = conn.execute(
                "SELECT seq FROM polyport_events WHERE channel = ? AND offset = ?",
                (state.name, cursor.number),
            ).fetchone()
            seq_of_offset = row[0] if row else None
            row = conn.execute(
                "SELECT min(seq) FROM polyport_events WHERE channel = ?", (state.name,)
            ).fetchone()
            first_seq = row[0] if row else None
        return resolve_with(
            cursor,
            log_epoch=self._epoch,
            head=self._seq,
            channel=state.info() if state else None,
            seq_of_offset=seq_of_offset,
            first_seq=first_seq,
        )

    def _matching(self, patterns: Sequence[Pattern]) -> list[_Channel]:
        if len(patterns) == 1 and patterns[0].is_exact:
            state = self._channels.get(patterns[0].text)
            return [state] if state else []
        return [s for name, s in self._channels.items() if any(p.matches(name) for p in patterns)]

    async def read(
        self, patterns: Sequence[Pattern], after_seq: int, limit: int, *, check: bool = True
    ) -> ReadResult:
        self._flush()
        states = self._matching(patterns)
        if check:
            check_gap([s.info() for s in states], after_seq, self._epoch, self._seq)
        head = self._seq
        if not states:
            return ReadResult([], head)
        conn = self.db.conn
        events: list[Event] = []
        if len(states) <= _IN_LIST_MAX:
            marks = ",".join("?" * len(states))
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM polyport_events WHERE channel IN ({marks}) "
                "AND seq > ? ORDER BY seq LIMIT ?",
                (*(s.name for s in states), after_seq, limit),
            ).fetchall()
            events = [self._event(row) for row in rows]
        else:
            # Many channels: scan the log in order and filter here.
            wanted = {s.name for s in states}
            cursor = after_seq
            while len(events) < limit:
                rows = conn.execute(
                    f"SELECT {_COLUMNS} FROM polyport_events WHERE seq > ? ORDER BY seq LIMIT 1000",
                    (cursor,),
                ).fetchall()
                if not rows:
                    break
                cursor = rows[-1][5]
                events.extend(self._event(r) for r in rows if r[0] in wanted)
            events = events[:limit]
        last = events[-1].seq if len(events) == limit else head
        return ReadResult(events, last)

    def _event(self, row: tuple[str, int, str, float, bytes, int]) -> Event:
        channel, offset, type_, time, data, seq = row
        return Event(channel, offset, self._channels[channel].epoch, seq, type_, time, data)

    async def trim_older_than(self, time: float) -> int:
        self._flush()
        conn = self.db.conn
        dropped = 0
        for name, offset in conn.execute(
            "SELECT channel, max(offset) FROM polyport_events WHERE time < ? GROUP BY channel",
            (time,),
        ).fetchall():
            dropped += self._trim_channel(self._channels[name], offset)
        return dropped

    async def channels(self) -> list[ChannelInfo]:
        return [s.info() for s in self._channels.values()]

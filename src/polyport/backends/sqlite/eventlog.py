"""The event log in SQLite: durable history that survives restarts.

One row per event; one row per channel holding its epoch and what has been
trimmed. ``seq`` is assigned here (single writer) and never reused: at start
it resumes after the highest seq ever stored or trimmed.

Appended rows are written together and committed together (see
:mod:`.db`); :meth:`SqliteEventLog.durable` returns once they are committed,
and readers see only committed events (``head``, ``read`` and ``resolve``
stop at the last commit). So no one — the publisher's caller, a subscriber, a
poller — learns an event id before the event is on disk, and an id a process
killed mid-group had assigned but not committed was never shown: assigning it
again after a restart names nothing anyone saw.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence
from pathlib import Path

from polyport.backends.sqlite.db import SqliteDatabase
from polyport.core.errors import Unavailable
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
        #: The last seq committed: what readers may see.
        self._committed = 0
        #: Resolved when the rows now in ``_pending`` are committed.
        self._pending_done: asyncio.Future[None] | None = None
        #: The newest batch's future (pending, or written and not yet committed).
        self._last_done: asyncio.Future[None] | None = None
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
        self._load()
        self.db.on_rollback(self._rolled_back)

    def _load(self) -> None:
        """Channels and the last seq as committed in the database."""
        conn = self.db.conn
        self._channels.clear()
        self._by_epoch.clear()
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
        self._committed = self._seq

    def _rolled_back(self) -> None:
        """A group commit failed: what was assigned since the last commit never happened.

        Nothing after ``_committed`` was shown to anyone, so the in-memory
        state is read back from the database and those seqs and offsets will
        be assigned again. Rows still queued fail with their writers.
        """
        self._pending = []
        done, self._pending_done = self._pending_done, None
        if done is not None and not done.done():
            done.set_exception(Unavailable("the event log could not commit; try again"))
            done.exception()  # retrieved here, so a batch without waiters logs nothing
        self._load()

    async def close(self) -> None:
        self._flush()
        self.db.close()

    async def append(self, channel: str, type: str, data: bytes, time: float) -> Event:
        # Rows wait a moment and go in together (one executemany and one commit
        # per loop iteration, or per FLUSH_AT rows); every read flushes them first.
        # Scheduled before a new channel's row opens the group below, so that the
        # channel and its first events commit together, in one commit.
        if not self._pending:
            loop = asyncio.get_running_loop()
            loop.call_soon(self._flush_and_commit)
            self._pending_done = self._last_done = loop.create_future()
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

    async def append_many(
        self, items: Sequence[tuple[str, str, bytes]], time: float
    ) -> list[Event]:
        """Each item appended in turn: the rows already go in together (see :meth:`append`)."""
        return [await self.append(channel, type, data, time) for channel, type, data in items]

    #: No bus of its own: the hub announces what it appends (see EventLog.announces_appends).
    announces_appends = False

    def settled(self) -> bool:
        """Nothing appended is waiting for its group's commit."""
        done = self._last_done
        return done is None or (done.done() and done.exception() is None)

    async def durable(self) -> None:
        """Return once every event appended so far is committed.

        Raises :class:`~polyport.core.errors.Unavailable` if the commit failed
        (the events were never stored; publishing them again is safe).
        """
        done = self._last_done
        if done is not None and not done.done():
            await asyncio.shield(done)
        elif done is not None and done.exception() is not None:
            raise Unavailable("the event log could not commit; try again")

    def _flush_and_commit(self) -> None:
        """The loop iteration's appends are in: write and commit them now."""
        try:
            self._flush()
            self.db.commit()
        except sqlite3.Error:
            pass  # the writers were told (see _flush and SqliteDatabase.commit)

    def _flush(self) -> None:
        """Write the pending rows (into the group transaction, see :mod:`.db`)."""
        if not self._pending:
            # An append that failed before queueing its row (its channel's row could
            # not be written) leaves its waiters nothing to wait for.
            done, self._pending_done = self._pending_done, None
            if done is not None and not done.done():
                done.set_result(None)
            return
        rows, self._pending = self._pending, []
        done, self._pending_done = self._pending_done, None
        top = rows[-1][0]

        def committed(error: BaseException | None) -> None:
            if error is None:
                self._committed = max(self._committed, top)
            if done is None or done.done():
                return
            if error is None:
                done.set_result(None)
            else:
                done.set_exception(Unavailable("the event log could not commit; try again"))
                done.exception()  # retrieved: a batch nobody waits for logs nothing

        try:
            self.db.group_write_many(
                "INSERT INTO polyport_events (seq, channel, offset, type, time, data) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            )
        except sqlite3.Error as exc:
            if self.db.in_group:
                # The insert failed inside the group: undo the group as a failed commit would.
                self.db.rollback(exc)
            else:
                committed(exc)
                self._rolled_back()
            raise
        self.db.on_commit(committed)

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
        return self._committed

    def is_next(self, after: int, seq: int) -> bool:
        """Seqs here are consecutive: the next after ``after`` is ``after + 1``."""
        return seq == after + 1

    async def resolve(self, cursor: Cursor) -> int:
        self._flush()
        state = None if cursor.is_position else self._by_epoch.get(cursor.epoch)
        seq_of_offset = first_seq = None
        if state is not None:
            conn = self.db.conn
            row = conn.execute(
                "SELECT seq FROM polyport_events WHERE channel = ? AND offset = ? AND seq <= ?",
                (state.name, cursor.number, self._committed),
            ).fetchone()
            seq_of_offset = row[0] if row else None
            row = conn.execute(
                "SELECT min(seq), max(offset) FROM polyport_events WHERE channel = ? AND seq <= ?",
                (state.name, self._committed),
            ).fetchone()
            first_seq = row[0] if row else None
            # An offset assigned but not yet committed is ahead of the log, as one
            # never assigned is: no one was shown it.
            shown = max(row[1] or 0, state.trimmed_offset) if row else state.trimmed_offset
            info = ChannelInfo(
                state.name, state.epoch, shown, state.trimmed_offset, state.trimmed_seq
            )
        return resolve_with(
            cursor,
            log_epoch=self._epoch,
            head=self._committed,
            channel=info if state else None,
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
        head = self._committed
        if check:
            check_gap([s.info() for s in states], after_seq, self._epoch, head)
        if not states:
            return ReadResult([], head)
        conn = self.db.conn
        events: list[Event] = []
        if len(states) <= _IN_LIST_MAX:
            marks = ",".join("?" * len(states))
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM polyport_events WHERE channel IN ({marks}) "
                "AND seq > ? AND seq <= ? ORDER BY seq LIMIT ?",
                (*(s.name for s in states), after_seq, head, limit),
            ).fetchall()
            events = [self._event(row) for row in rows]
        else:
            # Many channels: scan the log in order and filter here.
            wanted = {s.name for s in states}
            cursor = after_seq
            while len(events) < limit:
                rows = conn.execute(
                    f"SELECT {_COLUMNS} FROM polyport_events WHERE seq > ? AND seq <= ? "
                    "ORDER BY seq LIMIT 1000",
                    (cursor, head),
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

"""The event log in PostgreSQL: one history that every node of a cluster writes and reads.

**How seq is assigned so that no reader ever skips an event.** A reader keeps
a cursor (the last seq it saw) and asks for ``seq > cursor``. With a plain
sequence, a transaction that drew seq 7 can commit after one that drew 8: a
reader that saw 8 moves past 7 and never gets it. Here seq is not drawn from a
sequence but from the log's one row (``eventlog.seq``): every append batch is
one call of the ``eventlog_append`` function (see :mod:`.schema`), which first
``UPDATE``\\ s that row (``seq = seq + n``) and then, under the row lock that
this takes, bumps each channel's ``last_offset`` and inserts the events. The
lock is held until the statement's transaction commits, and PostgreSQL makes a
transaction visible *before* it releases its locks (``CommitTransaction`` calls
``ProcArrayEndTransaction`` before releasing them). So the writer that takes
seqs 8.. starts only once 7 is committed and visible: seqs become visible in
the order they are assigned, and any snapshot holding seq 8 holds every seq
below it. The counter row is committed with the events, so a reader that
reads it in the same statement (every read here is one statement, one
snapshot) knows the head up to which the log has no holes. Offsets are
gapless per channel for the same reason, and a batch's seqs are contiguous.

**What it costs.** Appends of the whole cluster are serialised: one batch at
a time holds the row, from its ``UPDATE`` to its commit, including the WAL
flush of ``synchronous_commit=on``. The hold never spans a network round trip
(the batch is one statement, run in autocommit), so it is the server's own
work — measured here about 0.15 ms for one event and 1.8 ms for 100 (0.4 ms
more than a bare 100-row INSERT) — plus one WAL flush (about 0.2 ms here).
The cluster's appends are therefore bounded by about one batch per flush,
however many nodes write: which is why each node sends its appends in batches,
everything appended while its previous batch was in flight going in the next
one (group commit), so the bound is on batches, not on events. A hot row costs
some bloat too (every batch leaves a dead version of it; HOT pruning reclaims
them in place). Readers take no lock and are never blocked. The alternatives
cost elsewhere: reading only below the oldest running transaction's xid
(``pg_snapshot_xmin``) stalls every reader behind any long transaction in the
database, and a seq drawn before the xid still needs a two-part cursor;
assigning seq after commit (a relay process) adds a hop and a single point of
failure.

**Durability.** An append returns only once its batch is committed — with
PostgreSQL's default ``synchronous_commit=on``, flushed to disk — so
:meth:`PostgresEventLog.durable` has nothing left to wait for. A batch that
fails (database gone, statement timeout) fails its appends with
:class:`~polyport.core.errors.Unavailable`; if the connection broke during the
commit itself the batch may have been stored, and a caller that publishes it
again stores it twice (at least once, never silently lost).

**Announcing.** Each append batch also tells the other nodes, in the same
statement and so in its own transaction: ``pg_notify`` on the channel of the
schema's bus (:class:`~polyport.backends.postgresql.bus.PostgresBus` listens
there), one message per 8000 bytes, each channel the batch grew with the seq
of its newest event, as the bus would have written it (the messages are laid
out before the statement, with room for any seq — see
:func:`~polyport.backends.announcements.pack` — and the statement writes the
seqs in). PostgreSQL delivers a notification when its transaction commits,
and never one of a transaction rolled back, so one commit both stores and
announces: no listener hears of an event that is not committed, nor of an
append that failed, and announcements arrive in commit order, which is seq
order. The hub therefore announces nothing of its own
(:attr:`PostgresEventLog.announces_appends`), which saves each batch the
round trip and the commit of a second transaction. What it costs: a few
microseconds under the head row's lock to write the messages, and a commit
that notifies takes PostgreSQL's one lock for queueing notifications, held
until the commit is flushed — the cluster's appends are serialised already,
but other notifying transactions on the same server wait for them. Should the
notification queue be full (a listener somewhere on the server that reads no
more holds it back, and PostgreSQL refuses the commit), the batch is written
again without announcing, and for a minute appends go unannounced: other
nodes find them at their next read of the log.

**Bounded history.** A channel's events are always the offsets after its
``trimmed_offset``. An append that leaves a channel over its bound (plus a
tenth of slack, so this happens once per many appends) trims it to its newest
events in the same transaction: no extra commit, and a reader never sees the
channel over its bound. Trimming by age runs one channel per statement. Each
trim locks the channel's row before its events, as an append does, and never
two channels at once, so trims and appends never wait on each other in a cycle.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg

from polyport.backends.announcements import pack
from polyport.backends.postgresql.bus import PostgresBus, channel_name
from polyport.backends.postgresql.db import PostgresDatabase, unavailable
from polyport.backends.postgresql.schema import EVENTLOG_DDL
from polyport.core.errors import Unavailable
from polyport.core.eventlog import ChannelInfo, History, ReadResult, check_gap, resolve_with
from polyport.core.events import Cursor, Event, Pattern

log = logging.getLogger("polyport.postgresql")

#: What a statement meets when the log's schema, tables or functions are gone.
_GONE = (
    psycopg.errors.UndefinedTable,
    psycopg.errors.UndefinedFunction,
    psycopg.errors.InvalidSchemaName,
)

#: Items written by one call of the append function, at most.
BATCH_MAX = 1000
#: Seconds appends go unannounced after PostgreSQL's NOTIFY queue was full.
QUIET_AFTER_FULL = 60.0
#: Up to this many matching channels, a read walks each channel's index; past
#: it, the log in seq order (each channel's next events vs. one ordered scan).
_FEW_CHANNELS = 64

_READ = """
WITH m AS MATERIALIZED (
    SELECT c.name, c.epoch, c.trimmed_seq FROM {schema}.eventlog_channels AS c WHERE {match_c}
), few AS (
    SELECT count(*) <= {few} AS yes FROM (SELECT 1 FROM m LIMIT {few} + 1) AS k
), ev AS (
    -- From the first event held at the earliest: the index entries of trimmed
    -- events stay until a vacuum, and a read that started before them would walk them.
    (SELECT x.* FROM m CROSS JOIN LATERAL (
        SELECT e.seq, e.channel, e."offset", e.type, e.time, e.data, m.epoch
        FROM {schema}.eventlog_events AS e
        WHERE e.channel = m.name AND e.seq > greatest(%(after)s::bigint, m.trimmed_seq)
        ORDER BY e.seq LIMIT %(limit)s::bigint) AS x
     WHERE (SELECT yes FROM few))
    UNION ALL
    (SELECT e.seq, e.channel, e."offset", e.type, e.time, e.data,
            (SELECT c.epoch FROM {schema}.eventlog_channels AS c WHERE c.name = e.channel)
     FROM {schema}.eventlog_events AS e
     WHERE NOT (SELECT yes FROM few) AND e.seq > %(after)s::bigint AND {match_e}
     ORDER BY e.seq LIMIT %(limit)s::bigint)
)
SELECT h.seq, g.name, g.epoch, g.last_offset, g.trimmed_offset, g.trimmed_seq,
       e.seq, e.channel, e."offset", e.type, e.time, e.data, e.epoch, h.epoch
FROM {schema}.eventlog AS h
LEFT JOIN LATERAL (
    SELECT c.name, c.epoch, c.last_offset, c.trimmed_offset, c.trimmed_seq
    FROM {schema}.eventlog_channels AS c
    WHERE c.trimmed_seq > %(after)s::bigint AND {match_c}
    ORDER BY {gap_order} DESC LIMIT 1) AS g ON true
LEFT JOIN LATERAL (SELECT * FROM ev ORDER BY ev.seq LIMIT %(limit)s::bigint) AS e ON true
WHERE h.id = 1
ORDER BY e.seq
"""

#: How a read names its channels (a list of names, a regular expression, or all), as a
#: filter of channels and of events, and how it finds the channel trimmed furthest:
#: among named channels by sorting them (``+ 0`` keeps the planner off the trimmed_seq
#: index, which would walk every channel trimmed since the cursor), otherwise by that
#: index, newest first (a reader near the head finds nothing at once).
_MATCH = {
    "names": (
        "c.name = ANY(%(names)s::text[])",
        "e.channel = ANY(%(names)s::text[])",
        "c.trimmed_seq + 0",
    ),
    "regex": ("c.name ~ %(regex)s::text", "e.channel ~ %(regex)s::text", "c.trimmed_seq"),
    "all": ("true", "true", "c.trimmed_seq"),
}

_RESOLVE = """
SELECT h.seq, c.name, c.epoch, c.last_offset, c.trimmed_offset, c.trimmed_seq,
       (SELECT e.seq FROM {schema}.eventlog_events AS e
        WHERE e.channel = c.name AND e."offset" = %(offset)s::bigint),
       (SELECT min(e.seq) FROM {schema}.eventlog_events AS e
        WHERE e.channel = c.name AND e.seq > c.trimmed_seq),
       h.epoch
FROM {schema}.eventlog AS h
LEFT JOIN {schema}.eventlog_channels AS c ON c.epoch = %(epoch)s::text
WHERE h.id = 1
"""

_APPEND = """
SELECT out_seq, out_offset, out_epoch FROM {schema}.eventlog_append(
    %s::text[], %s::text[], %s::bytea[], %s::double precision[], %s::bigint, %s::bigint)
"""

# The append that announces itself: the same call, and in the same statement (so in
# its transaction: NOTIFY is delivered on commit only) a pg_notify per bus message.
# Each message is the channels of its number, each followed by the seq of its newest
# item in the batch (its position, counted from 1), as announcements.encode writes it.
_APPEND_ANNOUNCED = """
WITH appended AS MATERIALIZED (
    SELECT a.out_seq, a.out_offset, a.out_epoch, a.i FROM {schema}.eventlog_append(
        %s::text[], %s::text[], %s::bytea[], %s::double precision[], %s::bigint, %s::bigint)
        WITH ORDINALITY AS a(out_seq, out_offset, out_epoch, i)
), told AS (
    SELECT count(pg_notify(%s::text, m.body)) FROM (
        SELECT '[' || string_agg(n.name || ',' || appended.out_seq, ',' ORDER BY n.k) || ']'
        FROM unnest(%s::text[], %s::bigint[], %s::integer[])
             WITH ORDINALITY AS n(name, newest, message, k)
        JOIN appended ON appended.i = n.newest
        GROUP BY n.message ORDER BY n.message
    ) AS m(body)
)
SELECT appended.out_seq, appended.out_offset, appended.out_epoch
FROM appended CROSS JOIN told ORDER BY appended.i
"""

# One channel per statement: a trim locks one channel row (see eventlog_trim).
_TRIM = "SELECT {schema}.eventlog_trim(%s::text, %s::bigint)"

_EXPIRED = """
SELECT channel, max("offset") FROM {schema}.eventlog_events
WHERE time < %s::double precision GROUP BY channel
"""


def channel_regex(patterns: Sequence[Pattern]) -> str | None:
    """A PostgreSQL regular expression matching the channels of ``patterns`` (None: all).

    ``+`` is one segment, a final ``#`` the rest including the parent level, as
    :meth:`Pattern.matches` has it. Of the characters a channel may hold only
    ``.`` means something in a regular expression.
    """
    alternatives = []
    for pattern in patterns:
        segments = list(pattern.segments)
        if segments == ["#"]:
            return None
        rest = ""
        if segments[-1] == "#":
            segments.pop()
            rest = "(/.*)?"
        body = "/".join("[^/]+" if s == "+" else s.replace(".", r"\.") for s in segments)
        alternatives.append(body + rest)
    return "^(" + "|".join(alternatives) + ")$"


@dataclass(slots=True)
class _Request:
    """One caller's items, waiting for the batch that writes them."""

    items: Sequence[tuple[str, str, bytes]]
    time: float
    done: asyncio.Future[list[Event]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class PostgresEventLog:
    """The :class:`~polyport.core.eventlog.EventLog` in a PostgreSQL schema, shared by nodes.

    ``db`` is a :class:`PostgresDatabase` (shared with the other stores of the
    database) or a connection URL; the log's tables live in its schema.
    """

    def __init__(self, db: PostgresDatabase | str, history: History | None = None) -> None:
        self.db = db if isinstance(db, PostgresDatabase) else PostgresDatabase(db)
        self.history = history or History()
        self._epoch = ""
        # A channel may run this far over its bound before it is trimmed (in batches).
        self._bound = self.history.max_events + max(1, self.history.max_events // 10)
        self._queue: list[_Request] = []
        self._writer: asyncio.Task[None] | None = None
        schema = self.db.schema
        self._append_sql = _APPEND.replace("{schema}", schema)
        self._append_announced_sql = _APPEND_ANNOUNCED.replace("{schema}", schema)
        #: Where the bus of this schema listens (see announces_appends).
        self._bus_channel = channel_name(schema)
        #: When appends announce themselves again after the NOTIFY queue was full (loop time).
        self._quiet_until = 0.0
        self._trim_sql = _TRIM.replace("{schema}", schema)
        self._expired_sql = _EXPIRED.replace("{schema}", schema)
        self._resolve_sql = _RESOLVE.replace("{schema}", schema)
        self._read_sql = {
            kind: _READ.replace("{schema}", schema)
            .replace("{few}", str(_FEW_CHANNELS))
            .replace("{match_c}", match_c)
            .replace("{match_e}", match_e)
            .replace("{gap_order}", gap_order)
            for kind, (match_c, match_e, gap_order) in _MATCH.items()
        }
        self._head_sql = f"SELECT seq, epoch FROM {schema}.eventlog WHERE id = 1"
        self._channels_sql = (
            f"SELECT name, epoch, last_offset, trimmed_offset, trimmed_seq "
            f"FROM {schema}.eventlog_channels ORDER BY name"
        )

    @property
    def epoch(self) -> str:
        return self._epoch

    async def open(self) -> None:
        await self.db.open()
        try:
            await self._create()
        except BaseException:
            await self.db.close()
            raise

    async def _create(self) -> None:
        """Create what is missing of the log's tables and learn its epoch."""
        await self.db.migrate(EVENTLOG_DDL)
        rows = await self._run("opening the event log", self._head_sql, None)
        self._epoch = rows[0][1]

    def _saw(self, epoch: str) -> None:
        """The log's epoch as a statement read it: another node may have begun a new one."""
        if epoch != self._epoch:
            log.warning("the event log in schema %s began a new epoch", self.db.schema)
            self._epoch = epoch

    async def _recreate(self, exc: psycopg.Error) -> None:
        """The log's tables are gone (its database lost them): begin it anew, a new epoch."""
        log.warning(
            "the event log in schema %s is gone (%s): creating it anew", self.db.schema, exc
        )
        await self._create()

    async def close(self) -> None:
        writer = self._writer
        if writer is not None:
            await asyncio.wait([writer])  # appends already made are written first
        await self.db.close()

    # -- appending ------------------------------------------------------------

    async def append(self, channel: str, type: str, data: bytes, time: float) -> Event:
        """Store one event; returns once it is committed (see the module docstring)."""
        return (await self._submit([(channel, type, data)], time))[0]

    async def append_many(
        self, items: Sequence[tuple[str, str, bytes]], time: float
    ) -> list[Event]:
        """Append items in order, all at ``time``, in one statement with other callers' items."""
        if not items:
            return []
        return await self._submit(items, time)

    #: Each append notifies the bus of its schema in its own transaction (see the
    #: module docstring): one commit stores and announces.
    announces_appends = True

    def settled(self) -> bool:
        """Always: an append returns once the engine has acknowledged it."""
        return True

    async def durable(self) -> None:
        """Nothing to wait for: an append returns once its batch is committed."""

    def _submit(
        self, items: Sequence[tuple[str, str, bytes]], time: float
    ) -> asyncio.Future[list[Event]]:
        request = _Request(items, time)
        self._queue.append(request)
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_queued(), name="polyport-pg-append")
        return request.done

    async def _write_queued(self) -> None:
        """Write what is queued, a batch at a time, until the queue is empty (group commit)."""
        try:
            while self._queue:
                taken = 0
                count = 0
                for request in self._queue:
                    if count and count + len(request.items) > BATCH_MAX:
                        break
                    taken += 1
                    count += len(request.items)
                batch, self._queue = self._queue[:taken], self._queue[taken:]
                try:
                    await self._write(batch)
                except BaseException:  # cancelled (the loop is closing): no one waits forever
                    self._fail(batch, Unavailable("the event log is closing; try again"))
                    raise
        finally:
            self._writer = None
            if self._queue:
                queued, self._queue = self._queue, []
                self._fail(queued, Unavailable("the event log is closing; try again"))

    @staticmethod
    def _fail(batch: list[_Request], error: Exception) -> None:
        for request in batch:
            if not request.done.done():
                request.done.set_exception(error)
                request.done.exception()  # retrieved: a caller that left logs nothing

    async def _write(self, batch: list[_Request]) -> None:
        channels: list[str] = []
        types: list[str] = []
        data: list[bytes] = []
        times: list[float] = []
        for request in batch:
            for channel, type_, payload in request.items:
                channels.append(channel)
                types.append(type_)
                data.append(payload)
                times.append(request.time)
        params = [channels, types, data, times, self.history.max_events, self._bound]
        try:
            try:
                rows = await self._append(params)
            except _GONE as exc:  # the function failed before it began: nothing was stored
                await self._recreate(exc)
                rows = await self._append(params)
        except Exception as exc:
            if isinstance(exc, Unavailable):
                error: Exception = exc
            elif isinstance(exc, psycopg.Error):
                error = unavailable("appending events", exc)
            else:
                log.exception("appending events failed")
                error = exc
            self._fail(batch, error)
            return
        start = 0
        for request in batch:
            end = start + len(request.items)
            events = [
                Event(channel, offset, epoch, seq, type_, request.time, payload)
                for (channel, type_, payload), (seq, offset, epoch) in zip(
                    request.items, rows[start:end], strict=True
                )
            ]
            start = end
            if not request.done.done():
                request.done.set_result(events)

    async def _append(self, params: list[Any]) -> list[tuple[Any, ...]]:
        """Run the append statement: the one that announces, unless announcing failed lately."""
        if asyncio.get_running_loop().time() < self._quiet_until:
            return await self._run("appending events", self._append_sql, params)
        announced = params + self._announcement(params[0])
        async with self.db.connection("appending events") as conn:
            try:
                cursor = await conn.execute(self._append_announced_sql, announced, binary=True)
            except psycopg.errors.ProgramLimitExceeded as exc:
                # Nothing was stored. The NOTIFY queue may be full (a listener somewhere on
                # the server reads no more and holds it back): an append must not fail for
                # want of an announcement. Stored without one, the events reach the other
                # nodes at their next read of the log. Should the same error come back, it
                # was not the announcing, and the append fails with it.
                cursor = await conn.execute(self._append_sql, params, binary=True)
                self._quiet_until = asyncio.get_running_loop().time() + QUIET_AFTER_FULL
                log.warning(
                    "appending events in schema %s could not announce them (%s); appending "
                    "without announcing for %g s: other nodes find new events at their "
                    "next read of the log",
                    self.db.schema,
                    exc,
                    QUIET_AFTER_FULL,
                )
            return await cursor.fetchall()

    def _announcement(self, channels: list[str]) -> list[Any]:
        """What the statement announces a batch with, once it knows the seqs: the bus's
        channel, and each channel's name, newest position in the batch and message."""
        newest: dict[str, int] = {}
        for position, channel in enumerate(channels, 1):
            newest[channel] = position
        # A channel name (255 characters at most) always fits: none is left out.
        packed, _ = pack(newest.items(), PostgresBus.frame_limit)
        return [
            self._bus_channel,
            [name for name, _, _ in packed],
            [position for _, position, _ in packed],
            [message for _, _, message in packed],
        ]

    # -- reading --------------------------------------------------------------

    async def _run(self, what: str, sql: str, params: Any) -> list[tuple[Any, ...]]:
        async with self.db.connection(what) as conn:
            cursor = await conn.execute(sql, params, binary=True)
            return await cursor.fetchall()

    async def _fetch(self, what: str, sql: str, params: Any) -> list[tuple[Any, ...]]:
        """Run one read; tried once more after a lost connection or a log begun anew."""
        try:
            return await self._run(what, sql, params)
        except Unavailable:
            return await self._run(what, sql, params)
        except _GONE as exc:
            await self._recreate(exc)
            return await self._run(what, sql, params)

    async def head(self) -> int:
        rows = await self._fetch("reading the event log", self._head_sql, None)
        self._saw(rows[0][1])
        return int(rows[0][0])

    def is_next(self, after: int, seq: int) -> bool:
        """Seqs here are consecutive: the next after ``after`` is ``after + 1``."""
        return seq == after + 1

    async def resolve(self, cursor: Cursor) -> int:
        params = {"epoch": "" if cursor.is_position else cursor.epoch, "offset": cursor.number}
        rows = await self._fetch("resolving a cursor", self._resolve_sql, params)
        head, name, epoch, last, trimmed, tseq, seq_of_offset, first_seq, log_epoch = rows[0]
        self._saw(log_epoch)
        channel = None if name is None else ChannelInfo(name, epoch, last, trimmed, tseq)
        return resolve_with(
            cursor,
            log_epoch=self._epoch,
            head=head,
            channel=channel,
            seq_of_offset=seq_of_offset,
            first_seq=first_seq,
        )

    async def read(
        self, patterns: Sequence[Pattern], after_seq: int, limit: int, *, check: bool = True
    ) -> ReadResult:
        params: dict[str, Any] = {"after": after_seq, "limit": limit}
        if all(p.is_exact for p in patterns):
            kind = "names"
            params["names"] = [p.text for p in patterns]
        else:
            regex = channel_regex(patterns)
            kind = "all" if regex is None else "regex"
            params["regex"] = regex
        rows = await self._fetch("reading the event log", self._read_sql[kind], params)
        head = rows[0][0]
        self._saw(rows[0][13])
        if check and rows[0][1] is not None:
            check_gap([ChannelInfo(*rows[0][1:6])], after_seq, self._epoch, head)
        events = [
            Event(channel, offset, epoch, seq, type_, time, data)
            for _, _, _, _, _, _, seq, channel, offset, type_, time, data, epoch, _ in rows
            if seq is not None
        ]
        last = events[-1].seq if len(events) == limit else head
        return ReadResult(events, last)

    # -- history ----------------------------------------------------------------

    async def trim_older_than(self, time: float) -> int:
        """Drop events published before ``time``, channel by channel (one lock each)."""
        expired = await self._fetch("trimming the event log", self._expired_sql, [time])
        dropped = 0
        async with self.db.connection("trimming the event log") as conn:
            for channel, through in expired:
                cursor = await conn.execute(self._trim_sql, [channel, through])
                row = await cursor.fetchone()
                dropped += row[0] if row else 0
        return dropped

    async def channels(self) -> list[ChannelInfo]:
        rows = await self._fetch("listing channels", self._channels_sql, None)
        return [ChannelInfo(*row) for row in rows]

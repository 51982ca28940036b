"""The leased work queue in PostgreSQL: the :class:`~polyport.core.workqueue.WorkQueue` port,
shared by every node of a cluster.

One table, ``{schema}.work``, one row per ``(queue, key)`` (its primary key is
the idempotency check of enqueue); see :data:`.schema.WORKQUEUE_DDL`. Every
call is one statement in autocommit (a purge or a drop, one per batch), so
each is its own transaction, committed — with ``synchronous_commit=on``,
flushed — before it returns: an enqueue, a claim or an outcome is durable and
seen by every node when its call returns, and no lock is ever held across a
round trip.

**Claims.** A claim is one ``UPDATE`` of the rows a sub-select picks and
locks with ``FOR UPDATE SKIP LOCKED``: a row another claim has locked is
passed over, not waited for, so claims racing for the same items from any
number of connections each take different ones, and none blocks another. A
row picked from a snapshot that another claim then changed and committed is
checked again in its new version (PostgreSQL re-evaluates a locked row's
conditions), and is no longer due. The rows are picked *per queue named*,
each queue's first ``limit`` due rows read from the ``work_ready`` index in
``(due, seq)`` order (rows held back by their group are not in it), and the
earliest ``limit`` of them taken: the cost is ``limit`` rows per queue
however long the backlog. (``queue = ANY(…)``
instead makes PostgreSQL read and sort every due row of the queues before
taking the first: 0.7 ms against 240 ms, measured here, for a claim of 10
from two queues holding 50,000 due rows.) A claim of several queues
therefore locks up to ``limit`` rows of each for the length of its
statement, and other claims pass over the ones it does not keep until it
commits. The rows picked are then updated through their primary key, in a
plan that stays so whatever the table holds (the pool's connections keep one
generic plan per statement; see ``_CLAIM``). Each claimed row gets a fresh
lease token drawn by the server (``gen_random_uuid``).

**Ordering groups.** A row's ``"group"`` (NULL: none) holds it back while a
row of its queue and group with a smaller ``seq`` is pending or running.
Each such row says so (``waits``), and claims and ``next_due`` read the
``work_ready`` index, of the live rows that wait for nothing: a group's
backlog costs a claim nothing. ``waits`` is kept by the statements that
change a group's head — an enqueue into a group, a row of one finishing, a
row redriven back into one — each of which takes the group's *turn* (a
transaction-scoped advisory lock) and then reads the group with a snapshot
taken after it (see the functions of :data:`.schema.WORKQUEUE_DDL`), so
each sees what the one before it committed. The turn also orders a group's
rows: an enqueue draws its ``seq`` in it, so they become visible in ``seq``
order (an identity's values do not: 11 may commit before 10). A claim takes
no turn and checks the rule itself, with a ``NOT EXISTS`` on the
``work_group`` index (a group's unfinished rows by ``seq``), one probe per
row of a group it takes: which rows of a group run never rests on
``waits``. A row a claim picked is running, so still unfinished, and a
concurrent claim whose snapshot predates that still sees it pending: either
way the group's next row waits. Tables from before groups gain the columns
and indexes when a node opens them.

**Outcomes** (ack, retry, release, dead letter, extend) are ``UPDATE``\\ s
conditional on ``lease = <the item's token>``, which only a running row has
(a ``CHECK`` on the table): a node whose lease was claimed over changes
nothing, and a final state never changes except by redrive. A node's acks,
retries, releases and dead letters given while one statement of them is in
flight go together in the next (group commit, as the event log's appends
do; see :mod:`.outcomes`), each caller answered once that statement has
committed. Every commit waits for a WAL flush (0.3 to 3 ms on the shared disk
here, as other work loaded it). Measured from one node, 10,000 items claimed
100 at a time: acks awaited one after another, 1,200-1,800 a second with or
without batching (which costs an ack alone about 0.04 ms, the hop through the
writer task); acks of a claim given at once, 2,200-2,600 a second as a
statement each, 8,600-10,700 written together.

**Errors.** A database that cannot be reached, a connection lost or a
statement that timed out is :class:`~polyport.core.errors.Unavailable` (see
:mod:`.db`). Reads are tried once more on another connection; writes are not,
as one whose commit was lost in transit may have happened (an enqueue tried
again would answer "known key" for its own item). Tables that are gone (the
schema dropped, a database restored empty) are created again, and the
statement — which failed before it did anything — is run once more.

**What costs grow with a queue's size:** :meth:`PostgresWorkQueue.counts`
reads every row of the queue, and :meth:`~PostgresWorkQueue.items` with a
``status`` walks the queue newest first until it has found ``limit`` of them.
Claims, outcomes, ``next_due`` and purges read only the rows they touch.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import psycopg

from polyport.backends.postgresql.db import PostgresDatabase
from polyport.backends.postgresql.outcomes import Outcome, OutcomeWriter
from polyport.backends.postgresql.schema import WORKQUEUE_DDL
from polyport.backends.workrows import COLUMNS, item_from_row
from polyport.core.errors import Unavailable
from polyport.core.workqueue import WORK_STATUSES, WorkItem, WorkStatus, check_name

log = logging.getLogger("polyport.postgresql")

#: What a statement meets when the queue's schema, table or functions are gone.
_GONE = (
    psycopg.errors.UndefinedTable,
    psycopg.errors.InvalidSchemaName,
    psycopg.errors.UndefinedFunction,
)

#: Rows a purge or a drop deletes per statement: each is a transaction of its own,
#: so a large purge neither runs into the statement timeout nor holds its locks long.
DELETE_BATCH = 5000

_COLUMNS = ", ".join(f"w.{column}" for column in COLUMNS)
_LIVE = "w.status IN ('pending', 'running')"
# A row of w is its group's head, or of no group: what a claim checks itself, beside
# "NOT w.waits" (see the module's docstring). An OR, not a bare NOT EXISTS, which
# PostgreSQL would turn into an anti-join of the whole table: this is one probe of
# work_group per row of a group read, none for the rest.
_HEAD = """(w."group" IS NULL OR NOT EXISTS (
            SELECT 1 FROM {schema}.work AS e
            WHERE e.queue = w.queue AND e."group" = w."group" AND e.seq < w.seq
              AND e.status IN ('pending', 'running')))"""

_ENQUEUE = """
INSERT INTO {schema}.work (queue, key, payload, status, created, due)
VALUES (%s::text, %s::text, %s::bytea, 'pending', %s::float8, %s::float8)
ON CONFLICT (queue, key) DO NOTHING
"""

_ENQUEUE_IN_GROUP = """
SELECT {schema}.work_enqueue_in_group(
    %s::text, %s::text, %s::bytea, %s::float8, %s::float8, %s::text)
"""

# Picked once (MATERIALIZED: its locks and its LIMIT), then joined to the rows to
# update through arrays of its keys. A join with the CTE itself is planned from
# the generic estimate of a LIMIT whose value is a parameter (a tenth of the due
# rows), and with a few tens of thousands of rows in the table that plan hashed
# the whole table for every claim; an array's unnest is estimated at 10 rows,
# and joined by primary key. The sub-select's LIMIT per queue and the outer one
# are the same: the earliest `limit` of all are among each queue's earliest.
_CLAIM = f"""
WITH picked AS MATERIALIZED (
    SELECT c.queue, c.key, c.due, c.seq
    FROM unnest(%(queues)s::text[]) AS q(name)
    CROSS JOIN LATERAL (
        SELECT w.queue, w.key, w.due, w.seq FROM {{schema}}.work AS w
        WHERE w.queue = q.name AND {_LIVE} AND NOT w.waits AND w.due <= %(now)s::float8
          AND {_HEAD}
        ORDER BY w.due, w.seq
        LIMIT %(limit)s::bigint
        FOR UPDATE SKIP LOCKED
    ) AS c
    ORDER BY c.due, c.seq
    LIMIT %(limit)s::bigint
)
UPDATE {{schema}}.work AS w
SET status = 'running', attempts = w.attempts + 1, due = %(until)s::float8,
    lease = replace(gen_random_uuid()::text, '-', ''), owner = %(owner)s::text,
    claimed = %(now)s::float8
FROM unnest(
    (SELECT array_agg(p.queue ORDER BY p.due, p.seq) FROM picked AS p),
    (SELECT array_agg(p.key ORDER BY p.due, p.seq) FROM picked AS p)
) WITH ORDINALITY AS p(queue, key, n)
WHERE w.queue = p.queue AND w.key = p.key
RETURNING p.n, {_COLUMNS}
"""

_EXTEND = """
UPDATE {schema}.work AS w SET due = %s::float8
FROM unnest(%s::text[], %s::text[], %s::text[]) AS i(queue, key, lease)
WHERE w.queue = i.queue AND w.key = i.key AND w.lease = i.lease
"""

# A dead or done item (done only when replayed) begins a fresh round; a pending one
# only falls due now. In a function: one of a group takes its turn.
_REDRIVE = "SELECT {schema}.work_redrive(%s::text, %s::text, %s::float8, %s::text[])"

_GET = f"SELECT {_COLUMNS} FROM {{schema}}.work AS w WHERE w.queue = %s::text AND w.key = %s::text"

# Two statements rather than "status = %s OR %s IS NULL", which a generic plan
# could not turn into an index condition.
_ITEMS = f"""
SELECT {_COLUMNS} FROM {{schema}}.work AS w
WHERE w.queue = %(queue)s::text AND w.seq < %(before)s::bigint {{status}}
ORDER BY w.seq DESC LIMIT %(limit)s::bigint
"""

_COUNTS = "SELECT w.status, count(*) FROM {schema}.work AS w WHERE w.queue = %s::text GROUP BY 1"

# Each queue's earliest row that waits for nothing, from the index a claim reads.
_NEXT_DUE = f"""
SELECT min(d.due) FROM unnest(%s::text[]) AS q(name)
CROSS JOIN LATERAL (
    SELECT w.due FROM {{schema}}.work AS w
    WHERE w.queue = q.name AND {_LIVE} AND NOT w.waits ORDER BY w.due LIMIT 1
) AS d
"""

# A batch's keys, locked, then their rows by primary key (joined as a claim joins
# its rows; see _CLAIM). The batch is read in an index's order: without an ORDER
# BY, the generic plan read the table from its start for every batch. A row
# redriven after the sub-select's snapshot is checked again as it is locked, in
# its new version, and left out. A purge passes over rows another statement
# holds (never waiting, it never deadlocks with a drop); a drop waits for them.
_PURGE = """
DELETE FROM {schema}.work AS w
USING unnest(ARRAY(
    SELECT f.key FROM {schema}.work AS f
    WHERE f.queue = %(queue)s::text AND f.status IN ('done', 'dead')
      AND f.finished < %(before)s::float8
    ORDER BY f.finished LIMIT %(batch)s::bigint
    FOR UPDATE SKIP LOCKED)) AS f(key)
WHERE w.queue = %(queue)s::text AND w.key = f.key
"""

_DROP = """
DELETE FROM {schema}.work AS w
USING unnest(ARRAY(
    SELECT f.key FROM {schema}.work AS f WHERE f.queue = %(queue)s::text
    ORDER BY f.key LIMIT %(batch)s::bigint
    FOR UPDATE)) AS f(key)
WHERE w.queue = %(queue)s::text AND w.key = f.key
"""

#: The largest seq: "before" of a listing that starts at the newest item.
_NO_CURSOR = 2**63 - 1


def _storable(error: str) -> str:
    """``error`` as PostgreSQL text holds it: a text value cannot contain NUL (nor a lone
    surrogate, which UTF-8 cannot encode), and an exception's message may."""
    if "\x00" in error:
        error = error.replace("\x00", "\N{REPLACEMENT CHARACTER}")
    return error.encode("utf-8", "replace").decode("utf-8")


class PostgresWorkQueue:
    """The :class:`~polyport.core.workqueue.WorkQueue` in a PostgreSQL schema, shared by nodes.

    ``db`` is the node's :class:`PostgresDatabase`, shared with its event log
    (one pool per node); the queue's table lives in its schema. Each ``open``
    opens the database once more and each ``close`` closes it once.
    """

    def __init__(self, db: PostgresDatabase) -> None:
        self.db = db
        schema = db.schema

        def sql(text: str) -> str:
            return text.replace("{schema}", schema)

        self._enqueue_sql = sql(_ENQUEUE)
        self._enqueue_in_group_sql = sql(_ENQUEUE_IN_GROUP)
        self._claim_sql = sql(_CLAIM)
        self._outcomes = OutcomeWriter(schema, self._run)
        self._extend_sql = sql(_EXTEND)
        self._redrive_sql = sql(_REDRIVE)
        self._get_sql = sql(_GET)
        self._items_sql = sql(_ITEMS).replace("{status}", "")
        self._items_status_sql = sql(_ITEMS).replace("{status}", "AND w.status = %(status)s::text")
        self._counts_sql = sql(_COUNTS)
        self._next_due_sql = sql(_NEXT_DUE)
        self._purge_sql = sql(_PURGE)
        self._drop_sql = sql(_DROP)

    async def open(self) -> None:
        """Open the database and create the queue's table if it is missing."""
        await self.db.open_with(WORKQUEUE_DDL)

    async def close(self) -> None:
        await self._outcomes.drain()  # outcomes already given are written first
        await self.db.close()

    # -- statements -------------------------------------------------------------

    async def _once(self, what: str, sql: str, params: Any) -> tuple[int, list[tuple[Any, ...]]]:
        async with self.db.connection(what) as conn:
            cursor = await conn.execute(sql, params, binary=True)
            rows = await cursor.fetchall() if cursor.description is not None else []
            return cursor.rowcount, rows

    async def _run(
        self, what: str, sql: str, params: Any, *, read: bool = False
    ) -> tuple[int, list[tuple[Any, ...]]]:
        """Run one statement: the rows it changed and the rows it returned. Run again once
        its table was created anew or, for a read, after a lost connection (see the
        module docstring)."""
        try:
            return await self._once(what, sql, params)
        except _GONE as exc:
            log.warning(
                "the work queue in schema %s is gone (%s): creating it anew", self.db.schema, exc
            )
            await self.db.migrate(WORKQUEUE_DDL)
        except Unavailable:
            if not read:
                raise
        return await self._once(what, sql, params)

    async def _rows(self, what: str, sql: str, params: Any) -> list[tuple[Any, ...]]:
        return (await self._run(what, sql, params, read=True))[1]

    # -- the port ---------------------------------------------------------------

    async def enqueue(
        self,
        queue: str,
        key: str,
        payload: bytes,
        *,
        now: float,
        due: float | None = None,
        group: str | None = None,
    ) -> bool:
        check_name("queue", queue)
        check_name("key", key)
        due = now if due is None else due
        if group is None:
            params: Any = [queue, key, payload, now, due]
            changed, _ = await self._run("enqueueing work", self._enqueue_sql, params)
            return changed == 1
        check_name("group", group)
        params = [queue, key, payload, now, due, group]
        rows = (await self._run("enqueueing work", self._enqueue_in_group_sql, params))[1]
        return bool(rows[0][0])

    async def claim(
        self,
        queues: Sequence[str],
        *,
        now: float,
        limit: int,
        lease: float,
        owner: str | None = None,
    ) -> list[WorkItem]:
        if not queues or limit <= 0:
            return []
        # A queue named twice would be read twice, and its rows counted twice.
        params = {
            "queues": list(dict.fromkeys(queues)),
            "now": now,
            "limit": limit,
            "until": now + lease,
            "owner": owner,
        }
        _, rows = await self._run("claiming work", self._claim_sql, params)
        # RETURNING comes in no particular order: as picked, earliest due (before the
        # claim) first.
        rows.sort(key=lambda row: row[0])
        return [item_from_row(row[1:]) for row in rows]

    async def extend(self, items: Sequence[WorkItem], until: float) -> int:
        held = [item for item in items if item.lease is not None]
        if not held:
            return 0
        params = [
            until,
            [item.queue for item in held],
            [item.key for item in held],
            [item.lease for item in held],
        ]
        changed, _ = await self._run("extending leases", self._extend_sql, params)
        return changed

    async def ack(self, item: WorkItem, *, now: float, result: bytes | None = None) -> bool:
        kept = None if result is None else bytes(result)  # one type in a batch's array
        return await self._outcomes.settle(Outcome("ack", item, now, result=kept))

    async def retry(self, item: WorkItem, *, due: float, error: str) -> bool:
        return await self._outcomes.settle(Outcome("retry", item, due, error=_storable(error)))

    async def release(self, item: WorkItem, *, now: float) -> bool:
        return await self._outcomes.settle(Outcome("release", item, now))

    async def dead_letter(self, item: WorkItem, *, now: float, error: str) -> bool:
        error = _storable(error)
        return await self._outcomes.settle(Outcome("dead_letter", item, now, error=error))

    async def redrive(self, queue: str, key: str, *, now: float, replay: bool = False) -> bool:
        statuses = ["dead", "pending", "done"] if replay else ["dead", "pending"]
        params = [queue, key, now, statuses]
        rows = (await self._run("redriving work", self._redrive_sql, params))[1]
        return bool(rows[0][0])

    async def get(self, queue: str, key: str) -> WorkItem | None:
        rows = await self._rows("reading work", self._get_sql, [queue, key])
        return item_from_row(rows[0]) if rows else None

    async def items(
        self,
        queue: str,
        *,
        status: WorkStatus | None = None,
        before: int | None = None,
        limit: int = 50,
    ) -> list[WorkItem]:
        if limit <= 0:
            return []
        params = {
            "queue": queue,
            "before": _NO_CURSOR if before is None else before,
            "limit": limit,
            "status": status,
        }
        sql = self._items_sql if status is None else self._items_status_sql
        return [item_from_row(row) for row in await self._rows("listing work", sql, params)]

    async def counts(self, queue: str) -> dict[WorkStatus, int]:
        found = dict(await self._rows("counting work", self._counts_sql, [queue]))
        return {status: int(found.get(status, 0)) for status in WORK_STATUSES}

    async def next_due(self, queues: Sequence[str]) -> float | None:
        if not queues:
            return None
        rows = await self._rows("reading work", self._next_due_sql, [list(dict.fromkeys(queues))])
        due: float | None = rows[0][0]
        return due

    async def _delete(self, what: str, sql: str, params: dict[str, Any]) -> int:
        """Run a batched delete until a batch comes back short; how many rows went."""
        deleted = 0
        while True:
            changed, _ = await self._run(what, sql, {**params, "batch": DELETE_BATCH})
            deleted += changed
            if changed < DELETE_BATCH:
                return deleted

    async def purge(self, queue: str, before: float) -> int:
        return await self._delete(
            "purging work", self._purge_sql, {"queue": queue, "before": before}
        )

    async def drop(self, queue: str) -> int:
        return await self._delete("dropping a queue", self._drop_sql, {"queue": queue})


__all__ = ["PostgresWorkQueue"]

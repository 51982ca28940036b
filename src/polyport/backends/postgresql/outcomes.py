"""A node's work outcomes — ack, retry, release, dead letter — written together (group commit).

Every commit waits for a WAL flush. Outcomes that a node's workers give
while one statement of them is in flight go together in the next, as one
``UPDATE`` of up to :data:`SETTLE_BATCH` rows: one commit, and one flush, for
all of them, each caller answered once it has committed (see
:mod:`.workqueue` for what that gains). An outcome given alone goes in a
statement of its kind, which is cheaper than the batch's. A caller that
leaves (is cancelled) before its outcome is sent takes it back.

Each outcome is conditional on the item's lease token: see the ``CHECK`` in
:data:`.schema.WORKQUEUE_DDL` and the statements below. An ack or a dead
letter of a row of an ordering group moves its group on: the statement takes
the group's turn before it changes any row, and then makes the group's next
unfinished row its head (``work_turns`` and ``work_next_heads`` in the
schema; an outcome of a row without a group pays a look at its row by
primary key and nothing else).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from polyport.core.errors import Unavailable
from polyport.core.workqueue import WorkItem

#: Outcomes written by one statement, at most; and their results' bytes (past the
#: first outcome): a batch of large results waits for the next statement.
SETTLE_BATCH = 1000
SETTLE_BYTES = 16 << 20

# Each outcome leaves running, so each forgets the lease and the owner. A row must
# still be running under the outcome's lease, which `lease = token` says alone (a
# row has a token only while running: the table's CHECK). With "status = 'running'"
# as well, PostgreSQL read a row through the due index, which that condition
# implies, walking every running row of the queue. A batch comes as arrays, whose
# unnest the planner takes for 10 rows: so it joins them by primary key (as a
# claim joins its rows; see workqueue.py).
#
# Rows of groups that an ack or a dead letter finishes: their groups' turns are taken
# first (`turns`, which the update waits for), before any row is locked, so that
# two statements never hold a row and a turn each and wait for the other's; once
# the rows are changed, each group's next row is its head (`moved`, which reads
# the whole of `settled`, so after every row of it). Neither function is called when
# no row of a group finishes.
_SETTLE = """
WITH o AS (
    SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::float8[],
                         %s::text[], %s::bytea[])
        WITH ORDINALITY AS o(kind, queue, key, lease, at, error, result, n)
), turns AS MATERIALIZED (
    SELECT {schema}.work_turns(array_agg(w.queue), array_agg(w."group")) AS taken
    FROM o JOIN {schema}.work AS w ON w.queue = o.queue AND w.key = o.key
    WHERE o.kind IN ('ack', 'dead_letter') AND w.lease = o.lease AND w."group" IS NOT NULL
    HAVING count(*) > 0
), settled AS (
    UPDATE {schema}.work AS w
    SET status = CASE o.kind WHEN 'ack' THEN 'done' WHEN 'dead_letter' THEN 'dead'
                             ELSE 'pending' END,
        due = CASE WHEN o.kind IN ('retry', 'release') THEN o.at ELSE w.due END,
        finished = CASE WHEN o.kind IN ('ack', 'dead_letter') THEN o.at ELSE w.finished END,
        attempts = CASE WHEN o.kind = 'release' THEN greatest(0, w.attempts - 1)
                        ELSE w.attempts END,
        error = CASE o.kind WHEN 'ack' THEN NULL WHEN 'release' THEN w.error ELSE o.error END,
        result = CASE WHEN o.kind = 'ack' THEN o.result ELSE w.result END,
        lease = NULL, owner = NULL
    FROM o
    WHERE w.queue = o.queue AND w.key = o.key AND w.lease = o.lease
      AND NOT EXISTS (SELECT FROM turns WHERE taken < 0)
    RETURNING o.n, w.queue, w."group", w.status
), moved AS (
    SELECT {schema}.work_next_heads(array_agg(s.queue), array_agg(s."group")) AS heads
    FROM settled AS s WHERE s."group" IS NOT NULL AND s.status IN ('done', 'dead')
    HAVING count(*) > 0
)
SELECT s.n FROM settled AS s WHERE NOT EXISTS (SELECT FROM moved WHERE heads < 0)
"""

# An outcome alone: the same change in a statement of its kind, which costs 0.1 ms less
# than the batch's unnest and CASEs (measured: a node acking one item at a time).
# {set} is its change; {turns} and {moved}, for an ack or a dead letter, what moves
# the row's group on, as in the batch.
_SETTLE_ONE = """
WITH {turns} settled AS (
    UPDATE {schema}.work AS w SET {set}, lease = NULL, owner = NULL
    WHERE w.queue = %(queue)s::text AND w.key = %(key)s::text AND w.lease = %(lease)s::text
      {after_turns}
    RETURNING w.queue, w."group"
){moved}
SELECT count(*) FROM settled AS s {after_moved}
"""
_TURNS = """turns AS MATERIALIZED (
    SELECT {schema}.work_turns(ARRAY[w.queue], ARRAY[w."group"]) AS taken
    FROM {schema}.work AS w
    WHERE w.queue = %(queue)s::text AND w.key = %(key)s::text AND w.lease = %(lease)s::text
      AND w."group" IS NOT NULL
),"""
_MOVED = """, moved AS (
    SELECT {schema}.work_next_heads(ARRAY[s.queue], ARRAY[s."group"]) AS heads
    FROM settled AS s WHERE s."group" IS NOT NULL
)"""
_SET = {
    "ack": "status = 'done', finished = %(at)s::float8, result = %(result)s::bytea, error = NULL",
    "retry": "status = 'pending', due = %(at)s::float8, error = %(error)s::text",
    "release": "status = 'pending', due = %(at)s::float8, attempts = greatest(0, w.attempts - 1)",
    "dead_letter": "status = 'dead', finished = %(at)s::float8, error = %(error)s::text",
}
#: The outcomes that finish a row, and so may move its group on.
_FINISHING = ("ack", "dead_letter")


def _one_sql(schema: str, kind: str) -> str:
    finishing = kind in _FINISHING
    sql = (
        _SETTLE_ONE.replace("{turns}", _TURNS if finishing else "")
        .replace(
            "{after_turns}",
            "AND NOT EXISTS (SELECT FROM turns WHERE taken < 0)" if finishing else "",
        )
        .replace("{moved}", _MOVED if finishing else "")
        .replace(
            "{after_moved}",
            "WHERE NOT EXISTS (SELECT FROM moved WHERE heads < 0)" if finishing else "",
        )
        .replace("{set}", _SET[kind])
    )
    return sql.replace("{schema}", schema)


#: Runs one statement: the rows it changed and the rows it returned.
Run = Callable[[str, str, Any], Awaitable[tuple[int, list[tuple[Any, ...]]]]]


@dataclass(slots=True)
class Outcome:
    """One caller's outcome, waiting for the statement that writes it."""

    kind: Literal["ack", "retry", "release", "dead_letter"]
    item: WorkItem
    #: When it finished (ack, dead_letter), falls due again (retry) or was given back
    #: (release).
    at: float
    error: str | None = None
    result: bytes | None = None
    done: asyncio.Future[bool] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class OutcomeWriter:
    """Writes a node's outcomes to the work table of ``schema`` through ``run``, together."""

    def __init__(self, schema: str, run: Run) -> None:
        self._run = run
        self.batch_sql = _SETTLE.replace("{schema}", schema)
        self.one_sql = {kind: _one_sql(schema, kind) for kind in _SET}
        self._queued: list[Outcome] = []
        self._writer: asyncio.Task[None] | None = None

    async def settle(self, outcome: Outcome) -> bool:
        """Whether the outcome settled its item, once the statement carrying it committed."""
        if outcome.item.lease is None:  # not a claimed item: nothing it could settle
            return False
        self._queued.append(outcome)
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_queued(), name="polyport-pg-settle")
        return await outcome.done

    async def drain(self) -> None:
        """Wait until the outcomes already given are written (the node is closing)."""
        writer = self._writer
        if writer is not None:
            await asyncio.wait([writer])

    def _next_batch(self) -> list[Outcome]:
        """Take the queued outcomes of the next statement, in order: one per item (a second
        outcome of an item waits, to be refused by the first's new state), up to the
        bounds; those whose caller left before they were sent are dropped."""
        batch: list[Outcome] = []
        items: set[tuple[str, str]] = set()
        size = 0
        kept: list[Outcome] = []
        for outcome in self._queued:
            name = (outcome.item.queue, outcome.item.key)
            if outcome.done.done():  # cancelled while it waited: never sent
                continue
            if name in items or len(batch) >= SETTLE_BATCH or (batch and size > SETTLE_BYTES):
                kept.append(outcome)
                continue
            batch.append(outcome)
            items.add(name)
            size += len(outcome.result or b"")
        self._queued = kept
        return batch

    async def _write_queued(self) -> None:
        """Write queued outcomes, a statement at a time, until none are left."""
        try:
            while batch := self._next_batch():
                try:
                    await self._write(batch)
                except BaseException:  # cancelled (the loop is closing): no one waits forever
                    _fail(batch, Unavailable("the work queue is closing; try again"))
                    raise
        finally:
            self._writer = None
            if self._queued:
                queued, self._queued = self._queued, []
                _fail(queued, Unavailable("the work queue is closing; try again"))

    async def _write(self, batch: list[Outcome]) -> None:
        try:
            if len(batch) == 1:
                (one,) = batch
                alone = {
                    "queue": one.item.queue,
                    "key": one.item.key,
                    "lease": one.item.lease,
                    "at": one.at,
                    "error": one.error,
                    "result": one.result,
                }
                _, counted = await self._run("settling work", self.one_sql[one.kind], alone)
                rows: list[tuple[Any, ...]] = [(1,)] if counted[0][0] == 1 else []
            else:
                arrays = [
                    [o.kind for o in batch],
                    [o.item.queue for o in batch],
                    [o.item.key for o in batch],
                    [o.item.lease for o in batch],
                    [float(o.at) for o in batch],  # an array's items have one type
                    [o.error for o in batch],
                    [o.result for o in batch],
                ]
                _, rows = await self._run("settling work", self.batch_sql, arrays)
        except Exception as exc:  # Unavailable, or a failure of the statement itself
            _fail(batch, exc)
            return
        settled = {n for (n,) in rows}
        for n, outcome in enumerate(batch, 1):
            if not outcome.done.done():
                outcome.done.set_result(n in settled)


def _fail(batch: list[Outcome], error: Exception) -> None:
    for outcome in batch:
        if not outcome.done.done():
            outcome.done.set_exception(error)
            outcome.done.exception()  # retrieved: a caller that left logs nothing


__all__ = ["SETTLE_BATCH", "SETTLE_BYTES", "Outcome", "OutcomeWriter"]

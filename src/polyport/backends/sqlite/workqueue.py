"""The leased work queue in SQLite: the :class:`~polyport.core.workqueue.WorkQueue` port.

One row per ``(queue, key)``; the unique index is the idempotency check, so a
known key is recognised across restarts and across nodes sharing the file.
``due`` is when a pending row may next be claimed, or when a running row's
lease ends: rows a dead node left ``running`` are claimed again once it has
passed. Every claim writes a fresh ``lease`` token and every later update is
conditional on it and on the row still running — which is what makes the
port's lease and final-state guarantees hold here, between processes too.

**Ordering groups.** A row's ``"group"`` (NULL: none) holds it back while a
row of its queue and group with a smaller ``seq`` is pending or running. Each
live row says whether it waits so (``waits``, 1 or 0), so that claims and
``next_due`` read only rows they may take, from the ``polyport_work_ready``
index — a group with a long backlog costs a claim nothing. ``waits`` is kept
by the statements that change a group's head: an enqueue (it waits if its
group has anything unfinished), and two triggers, run inside the statement
that fires them — a row that leaves the live states makes its group's next
unfinished row the head, and a row redriven back into them waits, or is the
head and the old head waits behind it. A claim checks the rule itself too
(a ``NOT EXISTS`` on the ``polyport_work_group`` index, one probe per row
taken), so whether two rows of a group could run together never rests on
``waits``. One process writes the file at a time and ``seq`` is given in
that order, so every node sees a group's rows in ``seq`` order.

Files from before groups get the columns (no group, not waiting) and the
indexes when first opened (:func:`~.migrate.add_columns`), and lose the
``polyport_work_due`` index the ready index replaces. Files written before
the work queue kept the receivers' inbox and the jobs in tables of their
own, ``polyport_hook_inbox`` and ``polyport_jobs``: the first open moves
their rows here (each receiver's queue ``hooks/{receiver}``, and ``jobs``;
states, attempts, leases and order kept) and drops them, each in one
transaction.

Enqueues join the database's group transaction and return once it is
committed (whoever accepted the work answers after them; enqueues made
together share the commit); redrives commit on their own. Claims and
outcomes join the group transaction, committed when the event loop next
yields. Statements run on the
event loop's thread, like every SQLite statement here; the methods are
coroutines because the port's other backends talk over a network.
"""

from __future__ import annotations

import secrets
import sqlite3
from collections.abc import Sequence
from typing import Any

import orjson

from polyport.backends.sqlite.db import SqliteDatabase
from polyport.backends.sqlite.migrate import add_columns
from polyport.backends.workrows import COLUMNS, item_from_row
from polyport.core.inbox import encode_payload, queue_of
from polyport.core.jobs import QUEUE as JOBS
from polyport.core.jobs import Job, encode_job
from polyport.core.workqueue import WORK_STATUSES, WorkItem, WorkStatus, check_name

SCHEMA = """
CREATE TABLE IF NOT EXISTS polyport_work (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL,
    key TEXT NOT NULL,
    payload BLOB NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    due REAL NOT NULL,
    lease TEXT,
    owner TEXT,
    claimed REAL,
    finished REAL,
    error TEXT,
    result BLOB,
    "group" TEXT,
    waits INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX IF NOT EXISTS polyport_work_key ON polyport_work (queue, key);
CREATE INDEX IF NOT EXISTS polyport_work_finished ON polyport_work (queue, finished)
    WHERE status IN ('done', 'dead');
"""

#: Columns added since the table's first version: a file from before gets them on open.
ADDED_COLUMNS = {
    "polyport_work": (('"group"', "TEXT"), ("waits", "INTEGER NOT NULL DEFAULT 0")),
}

#: What needs the added columns, made once they are there.
GROUPS = """
-- Claims and next_due: a queue's live rows that wait for nothing, by due time.
CREATE INDEX IF NOT EXISTS polyport_work_ready ON polyport_work (queue, due)
    WHERE status IN ('pending', 'running') AND waits = 0;
-- The index of live rows the ready index replaces (files from before groups).
DROP INDEX IF EXISTS polyport_work_due;
-- A group's unfinished rows by seq: is anything before this row still to run?
CREATE INDEX IF NOT EXISTS polyport_work_group ON polyport_work (queue, "group", seq)
    WHERE "group" IS NOT NULL AND status IN ('pending', 'running');
-- A row of a group finished (done, dead): the group's next unfinished row runs next.
CREATE TRIGGER IF NOT EXISTS polyport_work_next_in_group
AFTER UPDATE OF status ON polyport_work
WHEN NEW."group" IS NOT NULL AND OLD.status IN ('pending', 'running')
    AND NEW.status IN ('done', 'dead')
BEGIN
    UPDATE polyport_work SET waits = 0
    WHERE seq = (SELECT seq FROM polyport_work WHERE queue = NEW.queue
                 AND "group" = NEW."group" AND status IN ('pending', 'running')
                 ORDER BY seq LIMIT 1)
      AND waits = 1;
END;
-- A row of a group redriven (from done or dead): it waits for the group's unfinished
-- rows before it, or, if there are none, is the head, and the head it displaced waits.
CREATE TRIGGER IF NOT EXISTS polyport_work_back_in_group
AFTER UPDATE OF status ON polyport_work
WHEN NEW."group" IS NOT NULL AND OLD.status IN ('done', 'dead')
    AND NEW.status IN ('pending', 'running')
BEGIN
    UPDATE polyport_work SET waits = EXISTS (
        SELECT 1 FROM polyport_work AS e WHERE e.queue = NEW.queue
        AND e."group" = NEW."group" AND e.seq < NEW.seq
        AND e.status IN ('pending', 'running'))
    WHERE seq = NEW.seq;
    UPDATE polyport_work SET waits = 1
    WHERE seq = (SELECT seq FROM polyport_work WHERE queue = NEW.queue
                 AND "group" = NEW."group" AND seq > NEW.seq
                 AND status IN ('pending', 'running') ORDER BY seq LIMIT 1)
      AND (SELECT waits FROM polyport_work WHERE seq = NEW.seq) = 0;
END;
"""

_COLUMNS = ", ".join(COLUMNS)
_LIVE = "status IN ('pending', 'running')"
#: A row of w may be claimed: as the ready index has it (the index's own condition,
#: so that SQLite reads it), and by the rule itself — no group, or nothing of its
#: group before it unfinished (the comparison on "group" implies the group index's
#: condition, so SQLite reads that one).
_READY = (
    f"{_LIVE} AND waits = 0 AND "
    '(w."group" IS NULL OR NOT EXISTS (SELECT 1 FROM polyport_work AS e '
    'WHERE e.queue = w.queue AND e."group" = w."group" AND e.seq < w.seq '
    "AND e.status IN ('pending', 'running')))"
)
#: Items claimed per statement (SQLite bounds the parameters of one).
_CLAIM_CHUNK = 500


def _marks(values: Sequence[object]) -> str:
    return ",".join("?" * len(values))


class SqliteWorkQueue:
    """Queues of work items in the node's SQLite database."""

    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db

    async def open(self) -> None:
        conn = self.db.open()
        self.db.create(SCHEMA)
        add_columns(conn, ADDED_COLUMNS)
        self.db.create(GROUPS)
        _move_legacy_inbox(conn)
        _move_legacy_jobs(conn)

    async def close(self) -> None:
        self.db.close()

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
        if group is not None:
            check_name("group", group)
        # Into the group transaction, and back once it is committed: enqueues made
        # together (a fan-out's, gathered) share one commit.
        due = now if due is None else due
        if group is None:
            cursor = self.db.group_write(
                "INSERT OR IGNORE INTO polyport_work (queue, key, payload, status, created, due) "
                "VALUES (?, ?, ?, 'pending', ?, ?)",
                (queue, key, payload, now, due),
            )
        else:  # it waits if its group has anything unfinished (all of which came before)
            cursor = self.db.group_write(
                "INSERT OR IGNORE INTO polyport_work "
                '(queue, key, payload, status, created, due, "group", waits) '
                "VALUES (?, ?, ?, 'pending', ?, ?, ?, EXISTS (SELECT 1 FROM polyport_work "
                f'WHERE queue = ? AND "group" = ? AND {_LIVE}))',
                (queue, key, payload, now, due, group, queue, group),
            )
        added = cursor.rowcount == 1
        await self.db.committed()
        return added

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
        names = list(dict.fromkeys(queues))
        candidates = [
            seq
            for (seq,) in self.db.conn.execute(
                f"SELECT seq FROM polyport_work AS w WHERE queue IN ({_marks(names)}) "
                f"AND due <= ? AND {_READY} ORDER BY due, seq LIMIT ?",
                (*names, now, limit),
            ).fetchall()
        ]
        rows: list[tuple[Any, ...]] = []
        for start in range(0, len(candidates), _CLAIM_CHUNK):
            chunk = candidates[start : start + _CLAIM_CHUNK]
            # One statement for many, conditional on each row still being due and its
            # group's head: another process may have won some (or settled the row before
            # one, and then claimed that one). The candidates are each of a group of its
            # own. Each gets a token of its own.
            rows += self.db.group_write(
                "UPDATE polyport_work AS w SET status='running', attempts=attempts+1, due=?, "
                "lease=lower(hex(randomblob(8))), owner=?, claimed=? "
                f"WHERE seq IN ({_marks(chunk)}) AND due <= ? AND {_READY} "
                f"RETURNING {_COLUMNS}",
                (now + lease, owner, now, *chunk, now),
            ).fetchall()
        order = {seq: n for n, seq in enumerate(candidates)}  # earliest due first
        return sorted((item_from_row(row) for row in rows), key=lambda item: order[item.seq])

    async def extend(self, items: Sequence[WorkItem], until: float) -> int:
        return sum(self._settle(item, "due=?", (until,)) for item in items)

    async def ack(self, item: WorkItem, *, now: float, result: bytes | None = None) -> bool:
        return self._settle(
            item,
            "status='done', finished=?, result=?, error=NULL, lease=NULL, owner=NULL",
            (now, result),
        )

    async def retry(self, item: WorkItem, *, due: float, error: str) -> bool:
        return self._settle(
            item, "status='pending', due=?, error=?, lease=NULL, owner=NULL", (due, error)
        )

    async def release(self, item: WorkItem, *, now: float) -> bool:
        return self._settle(
            item,
            "status='pending', due=?, attempts=max(0, attempts-1), lease=NULL, owner=NULL",
            (now,),
        )

    async def dead_letter(self, item: WorkItem, *, now: float, error: str) -> bool:
        return self._settle(
            item, "status='dead', finished=?, error=?, lease=NULL, owner=NULL", (now, error)
        )

    def _settle(self, item: WorkItem, assignments: str, args: tuple[object, ...]) -> bool:
        # Only the holder of the current claim settles, and only a running row: a
        # final state (done, dead) never changes here — redrive is the one way back.
        cursor = self.db.group_write(
            f"UPDATE polyport_work SET {assignments} "
            "WHERE queue=? AND key=? AND lease=? AND status='running'",
            (*args, item.queue, item.key, item.lease),
        )
        return cursor.rowcount == 1

    async def redrive(self, queue: str, key: str, *, now: float, replay: bool = False) -> bool:
        allowed = "('dead', 'pending', 'done')" if replay else "('dead', 'pending')"
        cursor = self.db.durable_write(
            "UPDATE polyport_work SET status='pending', due=?, "
            "attempts=CASE status WHEN 'pending' THEN attempts ELSE 0 END, "
            "result=CASE status WHEN 'pending' THEN result ELSE NULL END, finished=NULL "
            f"WHERE queue=? AND key=? AND status IN {allowed}",
            (now, queue, key),
        )
        return cursor.rowcount == 1

    async def get(self, queue: str, key: str) -> WorkItem | None:
        found = self.db.conn.execute(
            f"SELECT {_COLUMNS} FROM polyport_work WHERE queue=? AND key=?", (queue, key)
        ).fetchone()
        return item_from_row(found) if found else None

    async def items(
        self,
        queue: str,
        *,
        status: WorkStatus | None = None,
        before: int | None = None,
        limit: int = 50,
    ) -> list[WorkItem]:
        sql = f"SELECT {_COLUMNS} FROM polyport_work WHERE queue=?"
        args: list[object] = [queue]
        if status is not None:
            sql += " AND status=?"
            args.append(status)
        if before is not None:
            sql += " AND seq < ?"
            args.append(before)
        rows = self.db.conn.execute(sql + " ORDER BY seq DESC LIMIT ?", (*args, max(0, limit)))
        return [item_from_row(row) for row in rows.fetchall()]

    async def counts(self, queue: str) -> dict[WorkStatus, int]:
        found = dict(
            self.db.conn.execute(
                "SELECT status, count(*) FROM polyport_work WHERE queue=? GROUP BY status",
                (queue,),
            ).fetchall()
        )
        return {status: found.get(status, 0) for status in WORK_STATUSES}

    async def next_due(self, queues: Sequence[str]) -> float | None:
        # Each queue's earliest claimable row, read from the due index as a claim reads it.
        earliest: float | None = None
        for name in dict.fromkeys(queues):
            found = self.db.conn.execute(
                f"SELECT due FROM polyport_work AS w WHERE queue = ? AND {_READY} "
                "ORDER BY due LIMIT 1",
                (name,),
            ).fetchone()
            if found is not None and (earliest is None or found[0] < earliest):
                earliest = found[0]
        return earliest

    async def purge(self, queue: str, before: float) -> int:
        cursor = self.db.durable_write(
            "DELETE FROM polyport_work WHERE queue=? AND status IN ('done', 'dead') "
            "AND finished < ?",
            (queue, before),
        )
        return cursor.rowcount

    async def drop(self, queue: str) -> int:
        cursor = self.db.durable_write("DELETE FROM polyport_work WHERE queue=?", (queue,))
        return cursor.rowcount


def _move_legacy_inbox(conn: sqlite3.Connection) -> None:
    """Move the rows of the receivers' inbox table of older files into the work queue.

    One transaction: a crash leaves either the old table or the moved rows.
    Two nodes opening one old file at once: the second finds the table gone.
    """
    if not conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type='table' AND name='polyport_hook_inbox'"
    ).fetchone():
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        rows = conn.execute(
            "SELECT receiver, delivery_id, status, event_type, signed_at, received, body, "
            "headers, attempts, due, lease, finished, error FROM polyport_hook_inbox "
            "ORDER BY rowid"
        ).fetchall()
        conn.executemany(
            "INSERT OR IGNORE INTO polyport_work (queue, key, payload, status, attempts, "
            "created, due, lease, claimed, finished, error) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL, ?, ?)",
            [
                (
                    queue_of(receiver),
                    delivery_id,
                    encode_payload(event_type, signed_at, orjson.loads(headers), bytes(body)),
                    status,
                    attempts,
                    received,
                    due,
                    lease,
                    finished,
                    error,
                )
                for (
                    receiver,
                    delivery_id,
                    status,
                    event_type,
                    signed_at,
                    received,
                    body,
                    headers,
                    attempts,
                    due,
                    lease,
                    finished,
                    error,
                ) in rows
            ],
        )
        conn.execute("DROP TABLE polyport_hook_inbox")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


_JOB_STATUS = {"pending": "pending", "running": "running", "complete": "done", "failed": "dead"}


def _move_legacy_jobs(conn: sqlite3.Connection) -> None:
    """Move the rows of the jobs table of older files into the work queue's ``jobs``.

    A job left running keeps its owner and lease end, so a live node's job is
    not interrupted and a dead one's is taken over as before.
    """
    if not conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type='table' AND name='polyport_jobs'"
    ).fetchone():
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        columns = {row[1] for row in conn.execute("PRAGMA table_info(polyport_jobs)")}
        lease = "lease_owner, lease_until" if "lease_owner" in columns else "NULL, NULL"
        rows = conn.execute(
            "SELECT id, method, status, args, subject, scopes, anonymous, created, started, "
            f"finished, attempts, result, error, {lease} FROM polyport_jobs ORDER BY created"
        ).fetchall()
        moved = []
        for row in rows:
            (job_id, method, status, args, subject, scopes, anonymous, created) = row[:8]
            started, finished, attempts, result, error, owner, until = row[8:]
            job = Job(
                job_id,
                method,
                "pending",
                bytes(args),
                subject,
                tuple(scopes.split()),
                bool(anonymous),
                created,
            )
            running = status == "running"
            moved.append(
                (
                    JOBS,
                    job_id,
                    encode_job(job),
                    _JOB_STATUS.get(status, "dead"),
                    attempts,
                    created,
                    (until or 0.0) if running else created,
                    secrets.token_hex(8) if running else None,
                    owner if running else None,
                    started,
                    finished,
                    error,
                    None if result is None else bytes(result),
                )
            )
        conn.executemany(
            "INSERT OR IGNORE INTO polyport_work (queue, key, payload, status, attempts, "
            "created, due, lease, owner, claimed, finished, error, result) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            moved,
        )
        conn.execute("DROP TABLE polyport_jobs")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


__all__ = ["SqliteWorkQueue"]

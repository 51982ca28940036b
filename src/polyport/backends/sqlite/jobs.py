"""Jobs in SQLite: written before they are acknowledged, so a restart keeps them.

Several processes may share the file. Every change of status is one
conditional ``UPDATE``, so the database itself decides who wins:

* a claim moves ``pending`` to ``running`` only if the job is still pending
  (two nodes never both run it) and writes the claimer's lease;
* a running job's lease is renewed by its owner; recovering an interrupted
  job is conditional on the owner the recovering node saw, so two nodes
  cannot both recover it;
* a final state (``complete``, ``failed``) is written only over a job that is
  not final yet — ``WHERE status NOT IN ('complete', 'failed')`` — so once
  final, a job never changes: a late result from a node whose lease ran out
  is dropped, not written over the first.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from polyport.backends.sqlite.db import SqliteDatabase
from polyport.backends.sqlite.migrate import add_column
from polyport.core.jobs import Job, JobStatus

_SCHEMA = """
CREATE TABLE IF NOT EXISTS polyport_jobs (
    id TEXT PRIMARY KEY,
    method TEXT NOT NULL,
    status TEXT NOT NULL,
    args BLOB NOT NULL,
    subject TEXT NOT NULL,
    scopes TEXT NOT NULL,
    anonymous INTEGER NOT NULL,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    result BLOB,
    error TEXT,
    lease_owner TEXT,
    lease_until REAL
);
CREATE INDEX IF NOT EXISTS polyport_jobs_by_status ON polyport_jobs (status, created);
"""
#: Columns added since the first schema: (name, declaration), added to older files at open.
_ADDED = (("lease_owner", "TEXT"), ("lease_until", "REAL"))
#: The statuses a job never leaves.
_FINAL = "('complete', 'failed')"

_COLUMNS = (
    "id, method, status, args, subject, scopes, anonymous, created, started, finished, "
    "attempts, result, error, lease_owner, lease_until"
)


def _row(job: Job) -> tuple[object, ...]:
    return (
        job.id,
        job.method,
        job.status,
        job.args,
        job.subject,
        " ".join(job.scopes),
        int(job.anonymous),
        job.created,
        job.started,
        job.finished,
        job.attempts,
        job.result,
        orjson.dumps(job.error).decode() if job.error is not None else None,
        job.lease_owner,
        job.lease_until,
    )


def _job(row: tuple[Any, ...]) -> Job:
    (
        id_,
        method,
        status,
        args,
        subject,
        scopes,
        anonymous,
        created,
        started,
        finished,
        attempts,
        result,
        error,
        lease_owner,
        lease_until,
    ) = row
    return Job(
        id=id_,
        method=method,
        status=status,
        args=bytes(args),
        subject=subject,
        scopes=tuple(scopes.split()),
        anonymous=bool(anonymous),
        created=created,
        started=started,
        finished=finished,
        attempts=attempts,
        result=result,
        error=orjson.loads(error) if error else None,
        lease_owner=lease_owner,
        lease_until=lease_until,
    )


class SqliteJobStore:
    """The :class:`~polyport.core.jobs.JobStore` in a SQLite file."""

    def __init__(self, db: SqliteDatabase | str | Path) -> None:
        self.db = db if isinstance(db, SqliteDatabase) else SqliteDatabase(db)

    async def open(self) -> None:
        conn = self.db.open()
        conn.executescript(_SCHEMA)
        present = {row[1] for row in conn.execute("PRAGMA table_info(polyport_jobs)")}
        for name, declaration in _ADDED:
            if name not in present:  # a file written before leases: its rows hold none
                add_column(conn, "polyport_jobs", name, declaration)

    async def close(self) -> None:
        self.db.close()

    async def insert(self, job: Job) -> None:
        marks = ",".join("?" * 15)
        self.db.durable_write(f"INSERT INTO polyport_jobs ({_COLUMNS}) VALUES ({marks})", _row(job))

    async def claim(self, job_id: str, owner: str, now: float, lease_until: float) -> Job | None:
        row = self.db.conn.execute(
            "UPDATE polyport_jobs SET status='running', started=?, attempts=attempts+1, "
            "lease_owner=?, lease_until=? WHERE id=? AND status='pending' "
            f"RETURNING {_COLUMNS}",
            (now, owner, lease_until, job_id),
        ).fetchone()
        self.db.commit()
        return _job(row) if row else None

    async def renew(self, owner: str, job_ids: Sequence[str], lease_until: float) -> int:
        if not job_ids:
            return 0
        marks = ",".join("?" * len(job_ids))
        cursor = self.db.durable_write(
            "UPDATE polyport_jobs SET lease_until=? WHERE lease_owner=? AND status='running' "
            f"AND id IN ({marks})",
            (lease_until, owner, *job_ids),
        )
        return cursor.rowcount

    async def requeue(self, job_id: str, owner: str | None) -> bool:
        cursor = self.db.durable_write(
            "UPDATE polyport_jobs SET status='pending', lease_owner=NULL, lease_until=NULL "
            "WHERE id=? AND status='running' AND lease_owner IS ?",
            (job_id, owner),
        )
        return cursor.rowcount == 1

    async def finish(self, job: Job, owner: str | None) -> bool:
        # The guard in the SQL is the rule itself: a final state is never written
        # over, whoever writes. The claim must also still be ``owner``'s.
        cursor = self.db.durable_write(
            "UPDATE polyport_jobs SET status=?, finished=?, result=?, error=?, "
            f"lease_owner=NULL, lease_until=NULL WHERE id=? AND status NOT IN {_FINAL} "
            "AND lease_owner IS ?",
            (
                job.status,
                job.finished,
                job.result,
                orjson.dumps(job.error).decode() if job.error is not None else None,
                job.id,
                owner,
            ),
        )
        return cursor.rowcount == 1

    async def get(self, job_id: str) -> Job | None:
        row = self.db.conn.execute(
            f"SELECT {_COLUMNS} FROM polyport_jobs WHERE id = ?", (job_id,)
        ).fetchone()
        return _job(row) if row else None

    async def with_status(self, status: JobStatus) -> list[Job]:
        rows = self.db.conn.execute(
            f"SELECT {_COLUMNS} FROM polyport_jobs WHERE status = ? ORDER BY created", (status,)
        ).fetchall()
        return [_job(r) for r in rows]

    async def purge_finished_before(self, time: float) -> int:
        cursor = self.db.durable_write(
            "DELETE FROM polyport_jobs WHERE status IN ('complete', 'failed') AND finished < ?",
            (time,),
        )
        return cursor.rowcount

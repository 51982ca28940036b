"""Jobs in SQLite: written before they are acknowledged, so a restart keeps them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from polyport.backends.sqlite.db import SqliteDatabase
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
    error TEXT
);
CREATE INDEX IF NOT EXISTS polyport_jobs_by_status ON polyport_jobs (status, created);
"""

_COLUMNS = (
    "id, method, status, args, subject, scopes, anonymous, created, started, finished, "
    "attempts, result, error"
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
    )


class SqliteJobStore:
    """The :class:`~polyport.core.jobs.JobStore` in a SQLite file."""

    def __init__(self, db: SqliteDatabase | str | Path) -> None:
        self.db = db if isinstance(db, SqliteDatabase) else SqliteDatabase(db)

    async def open(self) -> None:
        self.db.open().executescript(_SCHEMA)

    async def close(self) -> None:
        self.db.close()

    async def insert(self, job: Job) -> None:
        marks = ",".join("?" * 13)
        self.db.durable_write(f"INSERT INTO polyport_jobs ({_COLUMNS}) VALUES ({marks})", _row(job))

    async def update(self, job: Job) -> None:
        self.db.durable_write(
            "UPDATE polyport_jobs SET status=?, started=?, finished=?, attempts=?, result=?, "
            "error=? WHERE id=?",
            (
                job.status,
                job.started,
                job.finished,
                job.attempts,
                job.result,
                orjson.dumps(job.error).decode() if job.error is not None else None,
                job.id,
            ),
        )

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

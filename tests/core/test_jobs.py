"""Jobs shared by several nodes on one work queue: claims, leases, final states.

Runners that run at once here share one SQLite connection: two connections
to one file on one event loop would wait on each other's open group
transaction, which only that same loop can commit. Nodes in separate
processes (tests/test_restart.py) and the network engines share jobs the same
way, through work queues that pass one contract suite.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sqlite3
import time
from pathlib import Path

import orjson
import pytest

from polyport import Service
from polyport.backends.memory import MemoryWorkQueue
from polyport.backends.sqlite import SqliteDatabase, SqliteWorkQueue
from polyport.core.auth import Authenticator
from polyport.core.config import AuthConfig, JobsConfig, RateLimitConfig
from polyport.core.dispatch import Caller, Dispatcher
from polyport.core.jobs import QUEUE, Job, JobRunner, decode_job, encode_job, owner_gone
from polyport.core.metrics import Metrics
from polyport.core.ratelimit import RateLimiter
from polyport.core.workqueue import WorkQueue

svc = Service("jobsvc")
release = asyncio.Event()
runs: list[str] = []


@svc.method
async def slow(seconds: float) -> str:
    """Sleeps; ``release`` ends it early."""
    runs.append("slow")
    try:
        async with asyncio.timeout(seconds):
            await release.wait()
    except TimeoutError:
        pass
    return "done"


@svc.method(idempotent=True)
async def again(seconds: float) -> str:
    runs.append("again")
    await asyncio.sleep(seconds)
    return "again"


def dispatcher() -> Dispatcher:
    return Dispatcher(
        svc.spec(),
        authenticator=Authenticator(AuthConfig(), dev=True),
        limiter=RateLimiter(RateLimitConfig(enabled=False)),
        metrics=Metrics(),
    )


def sqlite_queue(path: Path | SqliteDatabase) -> SqliteWorkQueue:
    return SqliteWorkQueue(path if isinstance(path, SqliteDatabase) else SqliteDatabase(path))


def runner(queue: WorkQueue, **config: float) -> JobRunner:
    settings = {"poll_interval": 0.05, **config}
    return JobRunner(queue, dispatcher(), JobsConfig.model_validate(settings))


async def wait_status(jobs: JobRunner, job_id: str, status: str) -> Job:
    async with asyncio.timeout(10):
        while True:
            job = await jobs.get(job_id, Caller("t"))
            if job.status == status:
                return job
            await asyncio.sleep(0.02)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "jobs.sqlite3"


@pytest.fixture(autouse=True)
def fresh() -> None:
    global release
    release = asyncio.Event()
    runs.clear()


def test_a_job_round_trips_through_its_payload() -> None:
    job = Job("j-1", "slow", "pending", b'{"seconds": 1}', "ann", ("a", "b"), False, 5.0)
    from polyport.core.workqueue import WorkItem

    item = WorkItem(
        QUEUE, "j-1", 1, encode_job(job), "pending", 0, 5.0, 5.0, None, None, None, None, None
    )
    assert decode_job(item) == job


async def test_jobs_submitted_on_one_node_run_once_across_two(path: Path) -> None:
    """Two nodes on one file: 20 jobs submitted on A are each run exactly once, by either."""
    db = SqliteDatabase(path)
    a, b = runner(sqlite_queue(db), concurrency=2), runner(sqlite_queue(db), concurrency=2)
    await a.start()
    await b.start()
    try:
        jobs = [
            await a.submit(a.dispatcher.binding("again"), b'{"seconds": 0.05}', Caller("t"))
            for _ in range(20)
        ]
        for job in jobs:
            done = await wait_status(b, job.id, "complete")
            assert (done.result, done.attempts) == (b'"again"', 1)
        assert runs == ["again"] * 20
    finally:
        await a.stop()
        await b.stop()


async def test_a_wait_on_one_node_sees_a_job_finished_on_another() -> None:
    """B waits on a job A runs: the answer comes within a poll of A finishing."""
    shared = MemoryWorkQueue()
    a, b = runner(shared), runner(shared, concurrency=1)
    await a.start()
    try:
        job = await a.submit(a.dispatcher.binding("slow"), b'{"seconds": 5}', Caller("t"))
        await wait_status(a, job.id, "running")
        await b.start()
        waiting = asyncio.create_task(b.wait(job.id, Caller("t"), 5))
        await asyncio.sleep(0.1)
        assert not waiting.done()
        release.set()
        async with asyncio.timeout(2):
            finished = await waiting
        assert finished.status == "complete" and finished.result == b'"done"'
    finally:
        release.set()
        await a.stop()
        await b.stop()


async def test_a_node_starting_leaves_another_nodes_running_job_alone(path: Path) -> None:
    """Node B starts while node A runs a job: B does not interrupt it, A's result stands."""
    db = SqliteDatabase(path)
    a = runner(sqlite_queue(db))
    await a.start()
    b = runner(sqlite_queue(db))
    try:
        job = await a.submit(a.dispatcher.binding("slow"), b'{"seconds": 5}', Caller("t"))
        running = await wait_status(a, job.id, "running")
        assert running.lease_owner == a.owner
        await b.start()  # recovers what is abandoned: nothing here
        await asyncio.sleep(0.2)
        assert (await b.get(job.id, Caller("t"))).status == "running"
        release.set()
        done = await wait_status(b, job.id, "complete")
        assert done.result == b'"done"' and done.lease_owner is None
        assert runs == ["slow"]
    finally:
        release.set()
        await a.stop()
        await b.stop()


async def test_an_expired_lease_is_interrupted_and_the_late_result_dropped(path: Path) -> None:
    """A's lease runs out: B claims the job and fails it INTERRUPTED; A finishing later
    changes nothing."""
    db = SqliteDatabase(path)
    a = runner(sqlite_queue(db))
    await a.start()
    b = runner(sqlite_queue(db))
    try:
        job = await a.submit(a.dispatcher.binding("slow"), b'{"seconds": 5}', Caller("t"))
        await wait_status(a, job.id, "running")
        # A stalls: its lease is in the past.
        db.durable_write("UPDATE polyport_work SET due = 0 WHERE key = ?", (job.id,))
        await b.start()
        failed = await wait_status(b, job.id, "failed")
        assert failed.error is not None and failed.error["code"] == "INTERRUPTED"
        assert failed.attempts == 2
        release.set()  # A's handler returns "done" now...
        await asyncio.sleep(0.3)
        kept = await a.get(job.id, Caller("t"))
        # ...and is dropped: a final state never changes.
        assert (kept.status, kept.result, kept.error) == ("failed", None, failed.error)
    finally:
        release.set()
        await a.stop()
        await b.stop()


async def test_an_idempotent_job_is_taken_over_once(path: Path) -> None:
    """Two nodes find the same abandoned idempotent job: it runs again, once."""
    seed = sqlite_queue(path)
    await seed.open()
    job = Job("j-2", "again", "pending", b'{"seconds": 0}', "anonymous", ("*",), True, 1.0)
    await seed.enqueue(QUEUE, job.id, encode_job(job), now=time.time())
    (held,) = await seed.claim([QUEUE], now=time.time(), limit=1, lease=-1, owner="far/1/x")
    assert held.attempts == 1
    await seed.close()
    db = SqliteDatabase(path)
    a, b = runner(sqlite_queue(db)), runner(sqlite_queue(db))
    await a.start()
    await b.start()
    try:
        done = await wait_status(a, "j-2", "complete")
        assert done.attempts == 2 and done.result == b'"again"'
        await asyncio.sleep(0.2)
        assert runs == ["again"]
    finally:
        await a.stop()
        await b.stop()


async def test_a_dead_process_of_this_host_is_not_waited_for(path: Path) -> None:
    """A job left running by a process of this host that is gone is decided at the next
    start, not after its 30 s lease."""
    seed = sqlite_queue(path)
    await seed.open()
    job = Job("j-3", "slow", "pending", b'{"seconds": 0}', "anonymous", ("*",), True, 1.0)
    await seed.enqueue(QUEUE, job.id, encode_job(job), now=time.time())
    gone = f"{socket.gethostname()}/999999999/x"
    await seed.claim([QUEUE], now=time.time(), limit=1, lease=30, owner=gone)
    await seed.close()
    a = runner(sqlite_queue(path))
    await a.start()
    try:
        failed = await wait_status(a, "j-3", "failed")
        assert failed.error is not None and failed.error["code"] == "INTERRUPTED"
    finally:
        await a.stop()


async def test_a_file_from_before_the_work_queue_keeps_its_jobs(path: Path) -> None:
    """The old jobs table moves into the work queue: results, errors, owners kept; a job a
    dead process left running is decided at start."""
    conn = sqlite3.connect(path)
    conn.executescript(
        """CREATE TABLE polyport_jobs (id TEXT PRIMARY KEY, method TEXT NOT NULL,
        status TEXT NOT NULL, args BLOB NOT NULL, subject TEXT NOT NULL, scopes TEXT NOT NULL,
        anonymous INTEGER NOT NULL, created REAL NOT NULL, started REAL, finished REAL,
        attempts INTEGER NOT NULL DEFAULT 0, result BLOB, error TEXT, lease_owner TEXT,
        lease_until REAL)"""
    )
    gone = f"{socket.gethostname()}/999999999/x"
    error = orjson.dumps({"code": "NOT_FOUND", "message": "no"}).decode()
    conn.executemany(
        "INSERT INTO polyport_jobs VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        [
            (
                "j-a",
                "slow",
                "complete",
                b'{"seconds":0}',
                "ann",
                "a b",
                0,
                1.0,
                2.0,
                3.0,
                1,
                b'"done"',
                None,
                None,
                None,
            ),
            (
                "j-b",
                "slow",
                "failed",
                b'{"seconds":0}',
                "ann",
                "",
                0,
                4.0,
                5.0,
                6.0,
                1,
                None,
                error,
                None,
                None,
            ),
            (
                "j-c",
                "slow",
                "running",
                b'{"seconds":0}',
                "anonymous",
                "*",
                1,
                7.0,
                8.0,
                None,
                1,
                None,
                None,
                gone,
                time.time() + 3600,
            ),
        ],
    )
    conn.commit()
    conn.close()
    a = runner(sqlite_queue(path))
    await a.start()
    try:
        done = await a.get("j-a", Caller("t"))
        assert (done.status, done.result, done.subject, done.scopes) == (
            "complete",
            b'"done"',
            "ann",
            ("a", "b"),
        )
        assert (done.created, done.started, done.finished) == (1.0, 2.0, 3.0)
        failed = await a.get("j-b", Caller("t"))
        assert failed.status == "failed" and failed.error == orjson.loads(error)
        interrupted = await wait_status(a, "j-c", "failed")
        assert interrupted.error is not None and interrupted.error["code"] == "INTERRUPTED"
    finally:
        await a.stop()
    tables = sqlite3.connect(path).execute("SELECT name FROM sqlite_master").fetchall()
    assert ("polyport_jobs",) not in tables


def test_owner_gone() -> None:
    """A lease names host/pid/token: only a missing process of this host is known gone."""
    host = socket.gethostname()
    assert owner_gone(None, host)
    assert not owner_gone(f"{host}/{os.getpid()}/x", host)
    assert not owner_gone("other-host/1/x", host)
    assert owner_gone(f"{host}/999999999/x", host)


async def test_submissions_past_the_bound_are_refused_with_retry_after(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Pending jobs are bounded over the whole queue: past it, 503 with Retry-After. The
    count is read from the queue (other nodes' jobs in it) when the estimate nears it."""
    from polyport.core import jobs as jobs_module
    from polyport.core.errors import Unavailable

    monkeypatch.setattr(jobs_module, "MAX_PENDING", 6)
    shared = MemoryWorkQueue()
    for n in range(3):  # another node's jobs, waiting
        job = Job(f"j-{n}", "slow", "pending", b'{"seconds": 0}', "anonymous", ("*",), True, 1.0)
        await shared.enqueue(QUEUE, job.id, encode_job(job), now=time.time())
    jobs = runner(shared)
    await shared.open()
    jobs._pending_seen = ((await shared.counts(QUEUE))["pending"], 0.0)  # as start() does
    binding = jobs.dispatcher.binding("slow")
    for _ in range(3):
        await jobs.submit(binding, b'{"seconds": 0}', Caller("t"))
    with pytest.raises(Unavailable) as refused:
        await jobs.submit(binding, b'{"seconds": 0}', Caller("t"))
    assert refused.value.retry_after == 1
    assert (await shared.counts(QUEUE))["pending"] == 6

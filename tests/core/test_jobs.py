"""Jobs shared by several processes on one database: claims, leases, final states.

Each runner (and each store) here has its own SQLite connection to one file,
as two nodes on one machine would.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import socket
import sqlite3
import time
from pathlib import Path

import pytest

from polyport import Service
from polyport.backends.sqlite import SqliteJobStore
from polyport.core.auth import Authenticator
from polyport.core.config import AuthConfig, JobsConfig, RateLimitConfig
from polyport.core.dispatch import Caller, Dispatcher
from polyport.core.jobs import Job, JobRunner, JobStore, owner_gone
from polyport.core.metrics import Metrics
from polyport.core.ratelimit import RateLimiter

svc = Service("jobsvc")
release = asyncio.Event()


@svc.method
async def slow(seconds: float) -> str:
    """Sleeps; ``release`` ends it early."""
    try:
        async with asyncio.timeout(seconds):
            await release.wait()
    except TimeoutError:
        pass
    return "done"


@svc.method(idempotent=True)
async def again(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return "again"


def dispatcher() -> Dispatcher:
    return Dispatcher(
        svc.spec(),
        authenticator=Authenticator(AuthConfig(), dev=True),
        limiter=RateLimiter(RateLimitConfig(enabled=False)),
        metrics=Metrics(),
    )


def runner(path: Path, **config: float) -> JobRunner:
    return JobRunner(SqliteJobStore(path), dispatcher(), JobsConfig.model_validate(config))


def new_job(job_id: str, method: str = "slow") -> Job:
    return Job(job_id, method, "pending", b'{"seconds": 0}', "anonymous", ("*",), True, time.time())


async def wait_status(store: JobStore, job_id: str, status: str) -> Job:
    async with asyncio.timeout(10):
        while True:
            job = await store.get(job_id)
            if job is not None and job.status == status:
                return job
            await asyncio.sleep(0.02)


async def stored(store: JobStore, job_id: str) -> Job:
    job = await store.get(job_id)
    assert job is not None
    return job


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "jobs.sqlite3"


@pytest.fixture(autouse=True)
def fresh_release() -> None:
    global release
    release = asyncio.Event()


async def test_two_connections_one_claim_one_final_state(path: Path) -> None:
    """Only one claim wins; the first final state stands against any later write."""
    a, b = SqliteJobStore(path), SqliteJobStore(path)
    await a.open()
    await b.open()
    try:
        await a.insert(new_job("j-1"))
        claimed = await a.claim("j-1", "a", time.time(), time.time() + 30)
        assert claimed is not None and claimed.status == "running" and claimed.attempts == 1
        assert await b.claim("j-1", "b", time.time(), time.time() + 30) is None
        claimed.status, claimed.result, claimed.finished = "complete", b'"done"', time.time()
        assert await a.finish(claimed, "a")
        late = dataclasses.replace(
            claimed, status="failed", result=None, error={"code": "INTERRUPTED", "message": "late"}
        )
        assert not await b.finish(late, "a")  # the same claim, from another connection
        assert not await b.finish(late, None)
        assert not await b.requeue("j-1", None)
        kept = await stored(b, "j-1")
        assert (kept.status, kept.result, kept.error) == ("complete", b'"done"', None)
    finally:
        await a.close()
        await b.close()


async def test_a_node_starting_leaves_another_nodes_running_job_alone(path: Path) -> None:
    """Node B starts while node A runs a job: B does not interrupt it, A's result stands."""
    a = runner(path)
    await a.start()
    b = runner(path)
    try:
        job = await a.submit(a.dispatcher.binding("slow"), b'{"seconds": 5}', Caller("t"))
        running = await wait_status(a.store, job.id, "running")
        assert running.lease_owner == a.owner
        await b.start()  # recovers what is abandoned: nothing here
        assert (await stored(b.store, job.id)).status == "running"
        release.set()
        done = await wait_status(b.store, job.id, "complete")
        assert done.result == b'"done"' and done.lease_owner is None
    finally:
        release.set()
        await a.stop()
        await b.stop()


async def test_an_expired_lease_is_recovered_and_the_late_result_dropped(path: Path) -> None:
    """A's lease runs out: B marks the job INTERRUPTED; A finishing later changes nothing."""
    a = runner(path)
    b = runner(path)
    await a.start()
    await b.start()
    try:
        job = await a.submit(a.dispatcher.binding("slow"), b'{"seconds": 5}', Caller("t"))
        await wait_status(a.store, job.id, "running")
        with sqlite3.connect(path) as conn:  # A stalls: its lease is in the past
            conn.execute("UPDATE polyport_jobs SET lease_until = 0 WHERE id = ?", (job.id,))
        assert await b.recover() == 1
        failed = await stored(b.store, job.id)
        assert failed.status == "failed" and failed.error is not None
        assert failed.error["code"] == "INTERRUPTED"
        release.set()  # A's handler returns "done" now...
        await asyncio.sleep(0.3)
        kept = await stored(a.store, job.id)
        # ...and is dropped: a final state never changes.
        assert (kept.status, kept.result, kept.error) == ("failed", None, failed.error)
    finally:
        release.set()
        await a.stop()
        await b.stop()


async def test_an_idempotent_job_is_taken_over_once(path: Path) -> None:
    """Two nodes recover the same abandoned idempotent job: it is requeued and run once."""
    seed = SqliteJobStore(path)
    await seed.open()
    job = new_job("j-2", "again")
    job.args = b'{"seconds": 0}'
    await seed.insert(job)
    assert await seed.claim("j-2", "elsewhere/1/x", time.time(), time.time() - 1) is not None
    await seed.close()
    a, b = runner(path), runner(path)
    await a.start()
    await b.start()
    try:
        done = await wait_status(a.store, "j-2", "complete")
        assert done.attempts == 2 and done.result == b'"again"'
    finally:
        await a.stop()
        await b.stop()


def test_owner_gone() -> None:
    """A lease names host/pid/token: only a missing process of this host is known gone."""
    host = socket.gethostname()
    assert owner_gone(None, host)
    assert not owner_gone(f"{host}/{os.getpid()}/x", host)
    assert not owner_gone("other-host/1/x", host)
    assert owner_gone(f"{host}/999999999/x", host)

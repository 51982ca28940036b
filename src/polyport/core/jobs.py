"""Jobs: any unary method, started now and finished later.

A job is an item of the work queue's ``jobs`` queue
(:class:`~polyport.core.workqueue.WorkQueue`), stored before it is
acknowledged, so it survives a restart, and shared by every node on the
queue's engine. A node claims a job before running it (one claim of a due
job wins) and holds a **lease** on it, renewed every third of
``jobs.lease``. A job whose claim never settled — its node died or was
stopped mid-call — is claimed again once that lease has ended, and the
second claim decides:

* a method declared ``idempotent=True`` runs again;
* any other becomes ``failed`` with code ``INTERRUPTED`` — re-running a
  non-idempotent call (charge a card, send a mail) behind the caller's back
  would be worse than telling them.

A lease ends when it runs out (its node on another host is gone), or at once
when it names a process of this host that no longer exists (a restart after
a crash need not wait), or when its node stops with the job still running.
So one node starting never interrupts another's live jobs. Whatever
happens, a job's **final state never changes**: the queue settles an item
only for the holder of its current lease, so the first outcome stands and a
late one is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import struct
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from polyport.core.config import JobsConfig
from polyport.core.context import Principal
from polyport.core.contract import MethodKind
from polyport.core.dispatch import Binding, Caller, Dispatcher, PageResult
from polyport.core.errors import (
    InvalidArgument,
    NotFound,
    ServiceError,
    Unauthenticated,
    Unavailable,
)
from polyport.core.workqueue import WorkItem, WorkQueue, WorkStatus

log = logging.getLogger("polyport.jobs")

JobStatus = Literal["pending", "running", "complete", "failed"]
MAX_PENDING = 10_000
#: The work queue's queue that holds the jobs.
QUEUE = "jobs"


@dataclass(slots=True)
class Job:
    id: str
    method: str
    status: JobStatus
    args: bytes  # the arguments as given, JSON; validated before the job was accepted
    subject: str
    scopes: tuple[str, ...]
    anonymous: bool
    created: float
    started: float | None = None
    finished: float | None = None
    attempts: int = 0
    result: bytes | None = None  # JSON
    error: dict[str, Any] | None = field(default=None)
    #: The node running it (``host/pid/token``) and until when, while ``running``.
    lease_owner: str | None = None
    lease_until: float | None = None

    @property
    def done(self) -> bool:
        return self.status in ("complete", "failed")

    def principal(self) -> Principal:
        return Principal(self.subject, frozenset(self.scopes), anonymous=self.anonymous)


def _this_host() -> str:
    return socket.gethostname().replace("/", "_")


def owner_gone(owner: str | None, host: str) -> bool:
    """Whether the process named by a lease is known to have ended (on this host)."""
    if owner is None:
        return True  # written before leases existed: left by an earlier process
    owner_host, _, rest = owner.partition("/")
    pid_text = rest.partition("/")[0]
    if owner_host != host or not pid_text.isdigit():
        return False  # another machine's: only its lease can tell
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, another user's
    return False


class JobRunner:
    """Accepts jobs, runs them on a bounded pool of workers, answers their status.

    Jobs are items of the work queue's ``jobs`` queue, so every node on one
    engine takes from one pool: a job submitted on node A is claimed by
    whichever node has a free worker first (normally A, which is woken at
    once; the others look every ``jobs.poll_interval``).
    """

    def __init__(self, queue: WorkQueue, dispatcher: Dispatcher, config: JobsConfig) -> None:
        self.queue = queue
        self.dispatcher = dispatcher
        self.config = config
        self._running: dict[str, WorkItem] = {}  # held here, by job id
        self._tasks: set[asyncio.Task[None]] = set()
        self._loops: list[asyncio.Task[None]] = []
        self._wake = asyncio.Event()
        self._waiters: dict[str, tuple[asyncio.Event, int]] = {}
        self._closing = False
        self._pending_seen = (0, 0.0)  # (pending jobs, when counted)
        self._host = _this_host()
        #: This process in leases: host and pid (so a restart on this host can tell
        #: that its predecessor is gone) and a token (pids are reused).
        self.owner = f"{self._host}/{os.getpid()}/{secrets.token_hex(4)}"

    async def start(self) -> None:
        await self.queue.open()
        self._closing = False
        self._pending_seen = ((await self.queue.counts(QUEUE))["pending"], time.monotonic())
        await self.recover()
        self._loops = [
            asyncio.create_task(self._claim_forever(), name="polyport-job-claim"),
            asyncio.create_task(self._leases_forever(), name="polyport-job-lease"),
            asyncio.create_task(self._purge_forever(), name="polyport-job-purge"),
        ]

    async def recover(self) -> int:
        """End at once the leases of running jobs whose node is known gone; how many.

        A process of this host that no longer exists (a restart after a
        crash) cannot renew its leases: its jobs need not wait for them to
        run out. Another host's jobs are taken over when their lease does.
        Either way the next claim decides (see the module docstring).
        """
        gone: list[WorkItem] = []
        before: int | None = None
        while True:
            page = await self.queue.items(QUEUE, status="running", before=before, limit=500)
            gone += [
                item
                for item in page
                if item.owner != self.owner and owner_gone(item.owner, self._host)
            ]
            if len(page) < 500:
                break
            before = page[-1].seq
        if not gone:
            return 0
        ended = await self.queue.extend(gone, time.time())
        self._wake.set()
        return ended

    def release_waiters(self) -> None:
        """Answer every held job wait now (the node is shutting down)."""
        self._closing = True
        for event, _ in self._waiters.values():
            event.set()

    async def stop(self) -> None:
        """Stop taking jobs, give running ones ``shutdown_grace`` seconds, then cancel.

        A job cancelled here stays ``running`` in the queue with its lease
        ended, so the next claim (here after a restart, or on another node)
        treats it like one interrupted by a crash (see the module docstring).
        """
        self.release_waiters()
        for task in self._loops:
            task.cancel()
        for task in self._loops:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._loops.clear()
        if self._tasks:
            log.info(
                "waiting up to %g s for %d running job(s)",
                self.config.shutdown_grace,
                len(self._tasks),
            )
            await asyncio.wait(self._tasks, timeout=self.config.shutdown_grace)
        cancelled = list(self._running.values())
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if cancelled:
            # Our leases end now: whichever node claims next treats these as
            # interrupted at once, even one in this same process.
            with contextlib.suppress(Exception):
                await self.queue.extend(cancelled, 0.0)
        self._running.clear()
        await self.queue.close()

    async def submit(self, binding: Binding, args: bytes | None, caller: Caller) -> Job:
        """Admit, validate and store a job for ``binding``; it runs in the background."""
        if binding.kind is not MethodKind.UNARY:
            raise InvalidArgument(f"{binding.name} streams; only unary methods run as jobs")
        principal = self.dispatcher.admit(binding.public, binding.scopes, caller)
        binding.parse(args)  # reject bad arguments now, not later
        if await self._pending() >= MAX_PENDING:
            raise Unavailable("too many pending jobs", retry_after=self.config.retry_after)
        job = Job(
            id="j-" + secrets.token_urlsafe(12),
            method=binding.name,
            status="pending",
            args=args or b"{}",
            subject=principal.subject,
            scopes=tuple(sorted(principal.scopes)),
            anonymous=principal.anonymous,
            created=time.time(),
        )
        await self.queue.enqueue(QUEUE, job.id, encode_job(job), now=job.created)
        self._pending_seen = (self._pending_seen[0] + 1, self._pending_seen[1])
        self._wake.set()
        return job

    async def _pending(self) -> int:
        """Pending jobs: an estimate, counted again (every node's in it) only when it
        nears the bound — counting reads a whole queue, finished jobs included."""
        pending, counted = self._pending_seen
        now = time.monotonic()
        if pending >= MAX_PENDING // 2 and now - counted >= 1.0:
            pending = (await self.queue.counts(QUEUE))["pending"]
            self._pending_seen = (pending, now)
        return pending

    async def get(self, job_id: str, caller: Caller) -> Job:
        """The job, if it exists and belongs to the caller (others get NotFound)."""
        principal = self.dispatcher.authenticate(caller)
        item = await self.queue.get(QUEUE, job_id) if 0 < len(job_id) <= 64 else None
        if item is None:
            raise NotFound(f"no job {job_id[:64]!r}")
        job = decode_job(item)
        owner = job.subject == principal.subject and job.anonymous == principal.anonymous
        if not owner and "*" not in principal.scopes:
            if principal.anonymous:
                raise Unauthenticated()  # signing in may show it
            # Someone else's job: indistinguishable from no job at all.
            raise NotFound(f"no job {job_id[:64]!r}")
        return job

    async def wait(self, job_id: str, caller: Caller, seconds: float) -> Job:
        """The job once finished, or as it is after ``seconds``.

        A job finishing here answers at once; one running on another node is
        seen at the next look, every ``jobs.poll_interval``.
        """
        job = await self.get(job_id, caller)
        if job.done or seconds <= 0 or self._closing:
            return job
        event, count = self._waiters.get(job_id, (asyncio.Event(), 0))
        self._waiters[job_id] = (event, count + 1)
        try:
            async with asyncio.timeout(min(seconds, self.config.wait_max)):
                while not job.done and not self._closing:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self.config.poll_interval):
                            await event.wait()
                    job = await self.get(job_id, caller)
        except TimeoutError:
            pass
        finally:
            event, count = self._waiters[job_id]
            if count <= 1:
                del self._waiters[job_id]
            else:
                self._waiters[job_id] = (event, count - 1)
        return job if job.done else await self.get(job_id, caller)

    async def _claim_forever(self) -> None:
        failing = False
        while True:
            self._wake.clear()
            free = self.config.concurrency - len(self._running)
            claimed: list[WorkItem] = []
            try:
                if free > 0:
                    claimed = await self.queue.claim(
                        [QUEUE],
                        now=time.time(),
                        limit=free,
                        lease=self.config.lease,
                        owner=self.owner,
                    )
            except Exception as exc:
                if not failing:  # once per outage, not once per look
                    log.warning("claiming jobs failed (%s); trying again", exc)
                    failing = True
            else:
                if failing:
                    log.warning("claiming jobs works again")
                    failing = False
            for item in claimed:
                self._running[item.key] = item
                task = asyncio.create_task(self._run(item), name=f"polyport-job-{item.key}")
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            if claimed and len(claimed) == free:
                continue  # there may be more, once a worker is free
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.poll_interval):
                    await self._wake.wait()

    async def _run(self, item: WorkItem) -> None:
        try:
            await self._run_held(item)
        except Exception:
            # Left running under our lease: once it runs out, another claim decides.
            log.exception("job %s could not be run", item.key)
        finally:
            self._running.pop(item.key, None)
            waiting = self._waiters.get(item.key)
            if waiting is not None:
                waiting[0].set()
            self._wake.set()  # a worker is free

    async def _run_held(self, item: WorkItem) -> None:
        job = decode_job(item)
        binding = self.dispatcher.bindings.get(job.method)
        if item.attempts > 1:
            # An earlier claim never settled: its node died or stopped mid-call.
            if binding is None or not binding.spec.method.idempotent:
                error = {
                    "code": "INTERRUPTED",
                    "message": "the server stopped while this job was running; it was not "
                    f"retried because {job.method} is not declared idempotent",
                }
                if await self.queue.dead_letter(
                    item, now=time.time(), error=orjson.dumps(error).decode()
                ):
                    log.warning("job %s was interrupted (its node is gone); marked failed", job.id)
                return
            log.warning("re-running interrupted job %s (%s is idempotent)", job.id, job.method)
        started = time.perf_counter()
        code = "OK"
        try:
            if binding is None:
                raise NotFound(f"method {job.method} no longer exists")
            kwargs = binding.parse(job.args)
            caller = Caller("jobs", request_id=job.id)
            result = await self.dispatcher.invoke(binding, kwargs, job.principal(), caller)
            settled = await self.queue.ack(
                item, now=time.time(), result=_result_json(binding, result)
            )
            outcome = "complete"
        except ServiceError as exc:
            code = exc.code
            failure: dict[str, Any] = {"code": exc.code, "message": exc.message}
            if exc.details:
                failure["details"] = exc.details
            settled = await self.queue.dead_letter(
                item, now=time.time(), error=orjson.dumps(failure).decode()
            )
            outcome = "failed"
        finally:
            self.dispatcher.metrics.observe_call(
                "jobs", job.method, code, time.perf_counter() - started
            )
        if not settled:
            # Our lease ran out and another node declared the job interrupted (or
            # took it over): its outcome stands, a final state never changes.
            log.warning(
                "job %s finished %s here, but it was settled elsewhere first; kept that",
                job.id,
                outcome,
            )

    async def _leases_forever(self) -> None:
        """Renew the leases of the jobs running here; end those of processes that are gone."""
        while True:
            await asyncio.sleep(self.config.lease / 3)
            try:
                held = list(self._running.values())
                if held:
                    await self.queue.extend(held, time.time() + self.config.lease)
                await self.recover()
            except Exception:
                log.exception("renewing job leases failed")

    async def _purge_forever(self) -> None:
        while True:
            await asyncio.sleep(min(3600.0, self.config.retention / 10))
            try:
                await self.queue.purge(QUEUE, time.time() - self.config.retention)
            except Exception:
                log.exception("purging finished jobs failed")


_META_LENGTH = struct.Struct(">I")
_STATUS: dict[WorkStatus, JobStatus] = {
    "pending": "pending",
    "running": "running",
    "done": "complete",
    "dead": "failed",
}


def encode_job(job: Job) -> bytes:
    """A job as its work item's payload: who asked for which method as JSON, length
    first, then the arguments as given."""
    meta = orjson.dumps(
        {
            "method": job.method,
            "subject": job.subject,
            "scopes": list(job.scopes),
            "anonymous": job.anonymous,
        }
    )
    return _META_LENGTH.pack(len(meta)) + meta + job.args


def decode_job(item: WorkItem) -> Job:
    """The job a work item of the ``jobs`` queue holds, as it stands."""
    (length,) = _META_LENGTH.unpack_from(item.payload)
    start = _META_LENGTH.size
    meta = orjson.loads(item.payload[start : start + length])
    running = item.status == "running"
    return Job(
        id=item.key,
        method=meta["method"],
        status=_STATUS[item.status],
        args=item.payload[start + length :],
        subject=meta["subject"],
        scopes=tuple(meta["scopes"]),
        anonymous=meta["anonymous"],
        created=item.created,
        started=item.claimed,
        finished=item.finished,
        attempts=item.attempts,
        result=item.result,
        error=orjson.loads(item.error) if item.error else None,
        lease_owner=item.owner if running else None,
        lease_until=item.due if running else None,
    )


def _result_json(binding: Binding, result: Any) -> bytes:
    if isinstance(result, PageResult):
        return (
            b'{"items":'
            + binding.dump_json(result.items)
            + b',"next_cursor":'
            + orjson.dumps(result.next_cursor)
            + b"}"
        )
    return binding.dump_json(result)

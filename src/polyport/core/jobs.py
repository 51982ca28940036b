"""Jobs: any unary method, started now and finished later.

A job is stored before it is acknowledged, so it survives a restart. On start
a node resumes what an earlier process left behind:

* ``pending`` jobs (accepted, never started) run;
* ``running`` jobs (the process died mid-call) run again **only** if their
  method is declared ``idempotent=True``; otherwise they become ``failed``
  with code ``INTERRUPTED`` — re-running a non-idempotent call (charge a card,
  send a mail) behind the caller's back would be worse than telling them.

Several nodes may share one store. A node claims a job before running it
(only one claim of a pending job succeeds) and holds a **lease** on it,
renewed every third of ``jobs.lease``. A running job counts as interrupted
only once its owner is known to be gone: its lease ran out, or it names a
process of this host that no longer exists (a restart after a crash need not
wait for the lease). So one node starting never interrupts another's live
jobs. Whatever happens, a job's **final state never changes**: the store
writes ``complete`` or ``failed`` only over a job that is neither (see
:class:`JobStore`), so the first outcome stands and a late one is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

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

log = logging.getLogger("polyport.jobs")

JobStatus = Literal["pending", "running", "complete", "failed"]
MAX_PENDING = 10_000


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


class JobStore(Protocol):
    """Where jobs are kept, shared by every node of a store.

    Each change of status is atomic and conditional, decided by the store
    (another node may be changing the same job): the methods answering
    ``bool`` say whether the change was made. Raises nothing for unknown ids.
    """

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def insert(self, job: Job) -> None: ...

    async def claim(self, job_id: str, owner: str, now: float, lease_until: float) -> Job | None:
        """``pending`` → ``running`` for ``owner``, attempts + 1; None if not pending."""
        ...

    async def renew(self, owner: str, job_ids: Sequence[str], lease_until: float) -> int:
        """Extend ``owner``'s leases on those of ``job_ids`` still running; how many."""
        ...

    async def requeue(self, job_id: str, owner: str | None) -> bool:
        """``running`` → ``pending``, if still running under ``owner``."""
        ...

    async def finish(self, job: Job, owner: str | None) -> bool:
        """Write ``job``'s final status, result and error — only if the stored job is
        not final yet and is still running under ``owner``. A final state never changes."""
        ...

    async def get(self, job_id: str) -> Job | None: ...
    async def with_status(self, status: JobStatus) -> list[Job]: ...
    async def purge_finished_before(self, time: float) -> int: ...


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
    """Accepts jobs, runs them on a bounded pool of workers, answers their status."""

    def __init__(self, store: JobStore, dispatcher: Dispatcher, config: JobsConfig) -> None:
        self.store = store
        self.dispatcher = dispatcher
        self.config = config
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._workers: list[asyncio.Task[None]] = []
        self._done: dict[str, asyncio.Event] = {}
        self._pending = 0
        self._closing = False
        self._busy: list[str | None] = []
        self._host = _this_host()
        #: This process in leases: host and pid (so a restart on this host can tell
        #: that its predecessor is gone) and a token (pids are reused).
        self.owner = f"{self._host}/{os.getpid()}/{secrets.token_hex(4)}"

    async def start(self) -> None:
        await self.store.open()
        for job in await self.store.with_status("pending"):
            self._enqueue(job.id)
        await self.recover()  # enqueues the interrupted jobs it puts back to pending
        self._busy = [None] * self.config.concurrency
        for n in range(self.config.concurrency):
            self._workers.append(asyncio.create_task(self._work(n), name=f"polyport-job-{n}"))
        self._workers.append(asyncio.create_task(self._purge_forever(), name="polyport-job-purge"))
        self._workers.append(asyncio.create_task(self._leases_forever(), name="polyport-job-lease"))

    async def recover(self) -> int:
        """Deal with running jobs whose node is gone (see the module docstring); how many."""
        now = time.time()
        recovered = 0
        for job in await self.store.with_status("running"):
            expired = job.lease_until is None or job.lease_until < now
            if job.lease_owner == self.owner or not (
                expired or owner_gone(job.lease_owner, self._host)
            ):
                continue
            binding = self.dispatcher.bindings.get(job.method)
            if binding is not None and binding.spec.method.idempotent:
                if await self.store.requeue(job.id, job.lease_owner):
                    log.warning(
                        "re-running interrupted job %s (%s is idempotent)", job.id, job.method
                    )
                    self._enqueue(job.id)
                    recovered += 1
                continue
            job.status = "failed"
            job.finished = now
            job.error = {
                "code": "INTERRUPTED",
                "message": "the server stopped while this job was running; it was not "
                f"retried because {job.method} is not declared idempotent",
            }
            if await self.store.finish(job, job.lease_owner):
                log.warning("job %s was interrupted (its node is gone); marked failed", job.id)
                recovered += 1
        return recovered

    def release_waiters(self) -> None:
        """Answer every held job wait now (the node is shutting down)."""
        self._closing = True
        for event in self._done.values():
            event.set()

    async def stop(self) -> None:
        """Stop taking jobs, give running ones ``shutdown_grace`` seconds, then cancel.

        A job cancelled here stays ``running`` in the store, so the next start
        treats it like one interrupted by a crash (see the module docstring).
        """
        self.release_waiters()
        busy = [self._workers[i] for i, job in enumerate(self._busy) if job is not None]
        for task, job in zip(self._workers, self._busy, strict=False):
            if job is None:
                task.cancel()  # idle: waiting for the queue
        if busy:
            log.info(
                "waiting up to %g s for %d running job(s)", self.config.shutdown_grace, len(busy)
            )
            await asyncio.wait(busy, timeout=self.config.shutdown_grace)
        cancelled = [job for job in self._busy if job is not None]
        for task in self._workers:
            task.cancel()
        for task in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._workers.clear()
        if cancelled:
            # Our leases end now: whichever node starts next treats these as interrupted
            # at once, even one in this same process.
            with contextlib.suppress(Exception):
                await self.store.renew(self.owner, cancelled, 0.0)
        await self.store.close()

    def _enqueue(self, job_id: str) -> None:
        self._pending += 1
        self._queue.put_nowait(job_id)

    async def submit(self, binding: Binding, args: bytes | None, caller: Caller) -> Job:
        """Admit, validate and store a job for ``binding``; it runs in the background."""
        if binding.kind is not MethodKind.UNARY:
            raise InvalidArgument(f"{binding.name} streams; only unary methods run as jobs")
        principal = self.dispatcher.admit(binding.public, binding.scopes, caller)
        binding.parse(args)  # reject bad arguments now, not later
        if self._pending >= MAX_PENDING:
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
        await self.store.insert(job)
        self._enqueue(job.id)
        return job

    async def get(self, job_id: str, caller: Caller) -> Job:
        """The job, if it exists and belongs to the caller (others get NotFound)."""
        principal = self.dispatcher.authenticate(caller)
        job = await self.store.get(job_id) if len(job_id) <= 64 else None
        if job is None:
            raise NotFound(f"no job {job_id[:64]!r}")
        owner = job.subject == principal.subject and job.anonymous == principal.anonymous
        if not owner and "*" not in principal.scopes:
            if principal.anonymous:
                raise Unauthenticated()  # signing in may show it
            # Someone else's job: indistinguishable from no job at all.
            raise NotFound(f"no job {job_id[:64]!r}")
        return job

    async def wait(self, job_id: str, caller: Caller, seconds: float) -> Job:
        """The job once finished, or as it is after ``seconds``."""
        job = await self.get(job_id, caller)
        if job.done or seconds <= 0 or self._closing:
            return job
        done = self._done.setdefault(job_id, asyncio.Event())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(min(seconds, self.config.wait_max)):
                await done.wait()
        return await self.get(job_id, caller)

    async def _work(self, slot: int) -> None:
        while not self._closing:
            job_id = await self._queue.get()
            self._pending -= 1
            self._busy[slot] = job_id
            try:
                await self._run(job_id)
            except Exception:
                log.exception("job %s could not be run", job_id)
            finally:
                self._busy[slot] = None

    def _lease_until(self, now: float) -> float:
        return now + self.config.lease

    async def _run(self, job_id: str) -> None:
        now = time.time()
        # Atomic: of every node that queued this job, one claims it; the others skip it.
        job = await self.store.claim(job_id, self.owner, now, self._lease_until(now))
        if job is None:
            return
        binding = self.dispatcher.bindings.get(job.method)
        started = time.perf_counter()
        code = "OK"
        try:
            if binding is None:
                raise NotFound(f"method {job.method} no longer exists")
            kwargs = binding.parse(job.args)
            caller = Caller("jobs", request_id=job.id)
            result = await self.dispatcher.invoke(binding, kwargs, job.principal(), caller)
            job.result = _result_json(binding, result)
            job.status = "complete"
        except ServiceError as exc:
            code = exc.code
            job.status = "failed"
            job.error = {"code": exc.code, "message": exc.message}
            if exc.details:
                job.error["details"] = exc.details
        finally:
            job.finished = time.time()
            self.dispatcher.metrics.observe_call(
                "jobs", job.method, code, time.perf_counter() - started
            )
            # Not done: cancelled by a stop; the job stays running under our lease,
            # which stop() ends, so the next node to start recovers it.
            if job.done and not await self.store.finish(job, self.owner):
                # Our lease ran out and another node declared the job interrupted (or
                # took it over): its outcome stands, a final state never changes.
                log.warning(
                    "job %s finished %s here, but it was settled elsewhere first; kept that",
                    job.id,
                    job.status,
                )
            event = self._done.pop(job.id, None)
            if event is not None:
                event.set()

    async def _leases_forever(self) -> None:
        """Renew the leases of the jobs running here; recover those of nodes that are gone."""
        while True:
            await asyncio.sleep(self.config.lease / 3)
            try:
                running = [job_id for job_id in self._busy if job_id is not None]
                await self.store.renew(self.owner, running, self._lease_until(time.time()))
                await self.recover()
            except Exception:
                log.exception("renewing job leases failed")

    async def _purge_forever(self) -> None:
        while True:
            await asyncio.sleep(min(3600.0, self.config.retention / 10))
            try:
                await self.store.purge_finished_before(time.time() - self.config.retention)
            except Exception:
                log.exception("purging finished jobs failed")


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

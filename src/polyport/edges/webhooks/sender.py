"""Sending deliveries: per-endpoint lanes, signed POSTs, outcomes, retries and leases.

A delivery reaches the sender either straight from the fan-out (already
leased to this node, see :mod:`.outbox`) or from the store, when the poller
claims what is due: retries, deliveries whose lease expired (a node died),
replays and recoveries. Each endpoint has a **lane**: a queue and at most
``webhooks.concurrency`` attempts in flight, so one slow receiver holds only
its own lane. Each attempt is bounded by ``webhooks.timeout``.

Outcomes: a 2xx delivers; ``410 Gone`` fails the delivery and disables the
endpoint; anything else — 3xx (redirects are not followed), 4xx, 5xx, no
answer, an address refused by the SSRF policy — is retried on the schedule
(``Retry-After`` honoured, capped) until it runs out. An endpoint that has
not succeeded for ``webhooks.disable_after`` seconds is disabled.

Every delivery the sender holds is a :class:`~polyport.core.webhookstore.Claim`:
its lease token is what extends the lease while the delivery waits, gives it
back when the node stops, and records its outcome. Outcomes are queued and
written together once per loop iteration (one
:meth:`~polyport.core.webhookstore.DeliveryLeases.record` for all of them),
like the event log's appends; :meth:`WebhookSender.flush` writes them at
once, for readers of the delivery log that must see every outcome so far.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import heapq
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from polyport.core.errors import Unavailable
from polyport.core.logs import Outage
from polyport.core.metrics import Metrics
from polyport.core.webhookstore import AttemptResult, Claim, DeliveryStatus, WebhookStore
from polyport.edges.webhooks.client import (
    AttemptTimeout,
    ConnectionPool,
    DeliveryError,
    HttpAnswer,
)
from polyport.edges.webhooks.config import WebhooksConfig
from polyport.edges.webhooks.endpoints import EndpointState, EndpointTable
from polyport.edges.webhooks.retry import RetryPolicy, parse_retry_after
from polyport.edges.webhooks.ssrf import AddressPolicy, Refused
from polyport.webhooks.signing import signature_header

log = logging.getLogger("polyport.webhooks")

#: Deliveries claimed from the store per query.
CLAIM_BATCH = 500
#: How often finished deliveries older than ``webhooks.retention`` are purged, at most.
PURGE_EVERY = 600.0
#: Attempts in flight on a node over all endpoints: each holds a socket, and thousands
#: of endpoints times their concurrency must not run a process out of descriptors.
MAX_IN_FLIGHT = 1024


@dataclass(slots=True)
class Job:
    """A delivery this node holds the lease of and will attempt."""

    #: The current claim: a claim made again (an expired lease of ours) replaces it.
    claim: Claim
    #: This attempt's outcome has been recorded.
    settled: bool = False

    @property
    def endpoint_id(self) -> str:
        return self.claim.endpoint_id

    @property
    def event_id(self) -> str:
        return self.claim.event_id

    @property
    def attempts(self) -> int:
        return self.claim.attempts

    @property
    def retry_base(self) -> int:
        return self.claim.retry_base


class _Lane:
    __slots__ = ("active", "queue")

    def __init__(self) -> None:
        self.queue: deque[Job] = deque()
        self.active = 0


#: Called when an endpoint must be disabled: ``(endpoint, reason)``.
Disabler = Callable[[EndpointState, str], Awaitable[None]]


class WebhookSender:
    """Attempts deliveries, records outcomes, and claims due work from the store."""

    def __init__(
        self,
        store: WebhookStore,
        owner: str,
        table: EndpointTable,
        config: WebhooksConfig,
        policy: AddressPolicy,
        metrics: Metrics,
        disable: Disabler,
    ) -> None:
        self.store = store
        #: This node's name in the leases it holds (distinct between nodes).
        self.owner = owner
        self._outage = Outage(log, "the webhook poller")
        self.table = table
        self.config = config
        self.policy = policy
        self.metrics = metrics
        self.disable = disable
        self.retry = RetryPolicy(
            config.retry_schedule, jitter=config.jitter, max_retry_after=config.max_retry_after
        )
        self._lanes: dict[str, _Lane] = {}
        self._active = 0  # attempts in flight, all lanes together
        self._starved: deque[str] = deque()  # lanes with work waiting for MAX_IN_FLIGHT
        self._known: dict[tuple[str, str], Job] = {}  # queued or in flight on this node
        self._pools: dict[str, tuple[str, ConnectionPool]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._due: list[float] = []  # when retries this node scheduled fall due (a heap)
        self._wake = asyncio.Event()
        self._poller: asyncio.Task[None] | None = None
        self._outcomes: list[AttemptResult] = []  # recorded, not yet written
        self._writer: asyncio.Task[None] | None = None
        self._writing = asyncio.Lock()
        self._last_purge = 0.0
        self.closing = False
        #: Called with ``(endpoint_id, event_id, outcome)`` after each attempt (tests, bench).
        self.observer: Callable[[str, str, DeliveryStatus], None] | None = None

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> None:
        self._poller = asyncio.get_running_loop().create_task(self._poll())

    async def stop(self, grace: float = 5.0) -> None:
        """Stop claiming, let attempts in flight finish for ``grace`` s, release the rest."""
        self.closing = True
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=grace)
        # Queued, or about to be cut off: due again at once, for whichever node runs next
        # (those that finish meanwhile have given their lease up with their outcome).
        unfinished = [job.claim for job in self._known.values()]
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=1.0)
        await self.flush()
        if self._writer is not None:
            await self._writer
        await self.store.release(unfinished, time.time())
        self._known.clear()
        for _, pool in self._pools.values():
            pool.close()
        self._pools.clear()

    def lease_until(self, now: float) -> float:
        """How long a lease taken now lasts: an attempt, a margin, and one poll to extend it."""
        config = self.config
        return now + config.timeout + config.lease_margin + config.poll_interval

    def wake(self) -> None:
        """Look for due work now (a replay, a recovery, an endpoint enabled again)."""
        self._wake.set()

    async def forget(self, endpoint_id: str) -> None:
        """Drop an endpoint's queue and connections (it was deleted or disabled).

        What waited in its lane is given back: pending, so that disabling fails
        it and enabling sends it.
        """
        lane = self._lanes.get(endpoint_id)
        waiting: list[Claim] = []
        if lane is not None:
            for job in lane.queue:
                self._known.pop((job.endpoint_id, job.event_id), None)
                waiting.append(job.claim)
            lane.queue.clear()
            if not lane.active:
                del self._lanes[endpoint_id]
        entry = self._pools.pop(endpoint_id, None)
        if entry is not None:
            entry[1].close()
        if waiting:
            await self.store.release(waiting, time.time())

    @property
    def in_flight(self) -> int:
        return len(self._known)

    # -- queueing ----------------------------------------------------------------------

    def submit(self, claims: Iterable[Claim]) -> None:
        """Queue deliveries this node holds the leases of; each is attempted once here."""
        for claim in claims:
            key = (claim.endpoint_id, claim.event_id)
            known = self._known.get(key)
            if known is not None:
                # Already queued here, and our lease ran out before this new claim:
                # the new token is the one that settles it now.
                known.claim = claim
                continue
            job = self._known[key] = Job(claim)
            lane = self._lanes.get(job.endpoint_id)
            if lane is None:
                lane = self._lanes[job.endpoint_id] = _Lane()
            lane.queue.append(job)
            self._pump(job.endpoint_id, lane)

    def _pump(self, endpoint_id: str, lane: _Lane) -> None:
        limit = self.config.concurrency
        loop = asyncio.get_running_loop()
        while lane.queue and lane.active < limit and not self.closing:
            if self._active >= MAX_IN_FLIGHT:
                if endpoint_id not in self._starved:
                    self._starved.append(endpoint_id)
                return
            job = lane.queue.popleft()
            lane.active += 1
            self._active += 1
            task = loop.create_task(self._run(endpoint_id, lane, job))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, endpoint_id: str, lane: _Lane, job: Job) -> None:
        try:
            await self._attempt(job)
        except Exception as exc:
            log.exception(
                "webhook delivery %s to %s failed unexpectedly", job.event_id, endpoint_id
            )
            if not job.settled:
                # Recorded like any failed attempt — retried on the schedule, then
                # failed — never left pending forever with nothing said.
                self._unexpected(job, exc)
        finally:
            lane.active -= 1
            self._active -= 1
            self._known.pop((job.endpoint_id, job.event_id), None)
            if lane.queue:
                self._pump(endpoint_id, lane)
            elif not lane.active and self._lanes.get(endpoint_id) is lane:
                del self._lanes[endpoint_id]
            while self._starved and self._active < MAX_IN_FLIGHT and not self.closing:
                waiting_id = self._starved.popleft()
                waiting = self._lanes.get(waiting_id)
                if waiting is not None:
                    self._pump(waiting_id, waiting)

    # -- one attempt ---------------------------------------------------------------------

    def _pool(self, state: EndpointState) -> ConnectionPool:
        entry = self._pools.get(state.id)
        if entry is not None and entry[0] == state.record.url:
            return entry[1]
        if entry is not None:
            entry[1].close()
        pool = ConnectionPool(state.target, self.policy, keep=self.config.max_response_body)
        self._pools[state.id] = (state.record.url, pool)
        return pool

    async def _attempt(self, job: Job) -> None:
        state = self.table.get(job.endpoint_id)
        if state is None:
            return  # deleted: its deliveries went with it
        if not state.record.enabled:
            # Disabled meanwhile: back to pending, where disabling fails it.
            job.settled = True
            await self.store.release([job.claim], time.time())
            return
        message = job.claim.message
        if message is None:
            self._record(
                job,
                job.attempts + 1,
                time.time(),
                "failed",
                None,
                None,
                None,
                "the message is no longer stored",
                None,
            )
            return
        if not self.table.may_read(state.record, message.type):
            # Rights can change between fan-out and a retry (a new configuration): the
            # owner must still be allowed to read what is about to be sent.
            self._record(
                job,
                job.attempts + 1,
                time.time(),
                "failed",
                None,
                None,
                None,
                f"not sent: the endpoint's owner may no longer read {message.type}",
                None,
            )
            return
        number = job.attempts + 1
        started = time.time()
        timestamp = int(started)
        msg_id = message.event_id
        headers = [
            (b"webhook-id", msg_id.encode()),
            (b"webhook-timestamp", str(timestamp).encode()),
            (
                b"webhook-signature",
                signature_header(state.keys(started), msg_id, timestamp, message.body).encode(),
            ),
        ]
        pool = self._pool(state)
        answer: HttpAnswer | None = None
        error: str | None = None
        clock = time.perf_counter()
        try:
            answer = await pool.post(headers, message.body, self.config.timeout)
        except Refused as exc:
            error = f"refused: {exc}"
            log.warning("webhook %s to endpoint %s refused: %s", msg_id, state.id, exc)
        except AttemptTimeout:
            error = f"no answer within {self.config.timeout:g} s"
        except DeliveryError as exc:
            error = str(exc)
        latency = time.perf_counter() - clock
        finished = time.time()
        code = answer.status if answer is not None else None
        body = answer.body.decode("utf-8", "replace") if answer is not None else None
        if code is not None and 200 <= code < 300:
            self._record(job, number, finished, "delivered", None, code, latency, None, body)
            if state.record.failing_since is not None:
                state.record.failing_since = None
                await self.store.set_failing_since(state.id, None)
            return
        if code == 410:
            self._record(
                job,
                number,
                finished,
                "failed",
                None,
                code,
                latency,
                "the endpoint answered 410 Gone",
                body,
            )
            await self.disable(state, "the endpoint answered 410 Gone")
            return
        if code is not None and 300 <= code < 400:
            error = f"redirect ({code}) not followed: only 2xx delivers"
        elif code is not None:
            error = f"the endpoint answered {code}"
        retry_after = None
        if answer is not None:
            retry_after = parse_retry_after(answer.headers.get(b"retry-after"), finished)
        delay = self.retry.next_delay(number - job.retry_base, retry_after)
        current = self.table.get(state.id)
        if delay is None or current is None or not current.record.enabled:
            # The last of the round, or its endpoint was disabled while it was in
            # flight (the disabling failed the others): failed.
            self._record(job, number, finished, "failed", None, code, latency, error, body)
        else:
            self._record(
                job, number, finished, "pending", finished + delay, code, latency, error, body
            )
            self._schedule(finished + delay)
        await self._failing(state, finished)

    def _unexpected(self, job: Job, exc: Exception) -> None:
        number = job.attempts + 1
        now = time.time()
        error = f"internal error before an answer: {type(exc).__name__} (see the node's log)"
        delay = self.retry.next_delay(number - job.retry_base, None)
        if delay is None:
            self._record(job, number, now, "failed", None, None, None, error, None)
        else:
            self._record(job, number, now, "pending", now + delay, None, None, error, None)
            self._schedule(now + delay)

    async def _failing(self, state: EndpointState, now: float) -> None:
        since = state.record.failing_since
        if since is None:
            state.record.failing_since = now
            await self.store.set_failing_since(state.id, now)
        elif now - since >= self.config.disable_after:
            await self.disable(
                state, f"no successful delivery for {now - since:.0f} s (webhooks.disable_after)"
            )

    def _record(
        self,
        job: Job,
        number: int,
        at: float,
        status: DeliveryStatus,
        next_at: float | None,
        code: int | None,
        latency: float | None,
        error: str | None,
        body: str | None,
    ) -> None:
        job.settled = True
        self._outcomes.append(
            AttemptResult(
                job.claim,
                number,
                at,
                status,
                next_at,
                code,
                latency,
                error,
                body,
            )
        )
        if self._writer is None:
            # Runs in the next loop iteration, with every outcome recorded until then.
            self._writer = asyncio.get_running_loop().create_task(self._write_soon())
        self.metrics.inc(
            "polyport_webhook_attempts_total",
            "Webhook delivery attempts, by outcome (delivered, retry, failed).",
            outcome="retry" if status == "pending" else status,
        )
        if self.observer is not None:
            self.observer(job.endpoint_id, job.event_id, status)

    async def _write_soon(self) -> None:
        try:
            await self.flush()
        except Exception:
            # Unwritten outcomes leave their leases to run out: attempted again, not lost.
            log.exception("recording webhook delivery outcomes failed")
        finally:
            self._writer = None

    async def flush(self) -> None:
        """Write every outcome recorded so far; return once they are written."""
        async with self._writing:  # one batch at a time, in the order recorded
            while self._outcomes:
                batch, self._outcomes = self._outcomes, []
                await self.store.record(batch)

    def _schedule(self, when: float) -> None:
        heapq.heappush(self._due, when)
        if when <= time.time() + self.config.poll_interval:
            self._wake.set()  # the poller recomputes its wait

    # -- the poller ----------------------------------------------------------------------

    async def _extend(self, now: float, until: float) -> None:
        """Extend the leases that could run out before the next tick has passed and an
        attempt started then has ended; each is renewed every half margin or so, not at
        every tick (a tick comes at every wake)."""
        config = self.config
        soon = now + config.timeout + config.poll_interval + config.lease_margin / 2
        due = [job for job in self._known.values() if job.claim.lease_until < soon]
        if not due:
            return
        await self.store.extend_leases([job.claim for job in due], until)
        for job in due:
            job.claim = dataclasses.replace(job.claim, lease_until=until)

    async def _poll(self) -> None:
        while not self.closing:
            now = time.time()
            while self._due and self._due[0] <= now:
                heapq.heappop(self._due)
            wait = self.config.poll_interval
            if self._due:
                wait = min(wait, max(0.0, self._due[0] - now))
            if not self._wake.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), wait)
            self._wake.clear()
            try:
                await self.tick()
            except Exception as exc:
                self._outage.failed(exc, quiet=Unavailable)
            else:
                self._outage.worked()

    async def tick(self) -> int:
        """Reload endpoints if changed, extend leases, claim what is due; how many claimed."""
        now = time.time()
        if await self.table.refresh():
            for endpoint_id in {*self._pools, *self._lanes}:
                state = self.table.get(endpoint_id)
                if state is None or not state.record.enabled:
                    await self.forget(endpoint_id)
        until = self.lease_until(now)
        await self._extend(now, until)
        # Outcomes first: a delivery settled here is not due again, whatever its lease said.
        await self.flush()
        claimed = 0
        while not self.closing:
            claims = await self.store.claim_due(self.owner, now, CLAIM_BATCH, until)
            claimed += len(claims)
            self.submit(claims)
            if len(claims) < CLAIM_BATCH:
                break
        if now - self._last_purge >= min(PURGE_EVERY, self.config.retention / 10):
            self._last_purge = now
            await self.store.purge(now - self.config.retention)
        return claimed

"""The webhook store as a composition: deliveries on the work queue, the rest in records.

:class:`QueuedWebhookStore` implements
:class:`~polyport.core.webhookstore.WebhookStore` over two ports every engine
implements, so webhooks are shared by the nodes of whatever engine holds
them: each endpoint's deliveries are the
:class:`~polyport.core.workqueue.WorkQueue` queue ``webhooks/{endpoint_id}``
(one item per event id, the message as its payload), and endpoints, attempt
histories and the fan-out cursor are records of a
:class:`~polyport.core.records.RecordStore` (the layout:
:mod:`polyport.core.webhooklayout`).

How the port's guarantees hold without a transaction between them:

* **After the events.** :meth:`~QueuedWebhookStore.fan_out` waits for the
  event log to make every event appended so far durable, then enqueues;
  the cursor moves only after the enqueues. A crash in between leaves the
  cursor behind deliveries that exist: fanning out again is harmless,
  because an enqueue of a known ``(queue, key)`` changes nothing.
* **Leases and final states** are the queue's: a claim is a lease token,
  and only it settles. The history record of an outcome is written after
  the queue took the outcome, so a late node adds nothing to it (a crash
  between the two loses that line of history, never the outcome).
* **Rounds.** The queue counts claims; the attempts shown and numbered are
  the outcomes recorded, as before. A replay writes the round's base (the
  attempts before it) in a record, then redrives the item.

Some things the queue cannot do directly are done with what it has:
disabling an endpoint makes its waiting items due, claims them and
dead-letters them; retention is the queue's purge (by finish time), then a
sweep of the history records of deliveries gone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence

from polyport.core.eventlog import EventLog
from polyport.core.records import ABSENT, Record, RecordStore, lead, scan_all
from polyport.core.webhookendpoints import RecordedEndpoints, check_endpoint_id
from polyport.core.webhooklayout import (
    DELIVERIES,
    FANOUT_KEY,
    LEADER_KEY,
    QUEUE_PREFIX,
    ROUND,
    Outcome,
    SecretSeal,
    attempt_key,
    created_of,
    decode_message,
    decode_outcome,
    decode_round,
    delivery_prefix,
    encode_message,
    encode_outcome,
    encode_round,
    micros,
    queue_of,
    round_key,
)
from polyport.core.webhookstore import (
    Attempt,
    AttemptResult,
    Claim,
    Delivery,
    DeliveryStatus,
    Message,
    Owed,
)
from polyport.core.workqueue import WorkItem, WorkQueue, WorkStatus

#: Queues named in one claim (a backend may put them in one statement).
CLAIM_QUEUES = 500
#: Endpoints a fan-out enqueues for at once (each endpoint's in order).
ENQUEUE_TOGETHER = 500
#: Items and records read per page by the sweeps.
PAGE = 500
#: The owner named by the claims that fail a disabled endpoint's deliveries, and how long
#: they hold them (they are dead-lettered at once; a crash between leaves them due again).
DISABLING = "polyport/disable"
DISABLING_LEASE = 60.0

_STATUS: dict[WorkStatus, DeliveryStatus] = {
    "pending": "pending",
    "running": "pending",
    "done": "delivered",
    "dead": "failed",
}
_WORK_STATUS: dict[DeliveryStatus, WorkStatus] = {"delivered": "done", "failed": "dead"}


def _held(claim: Claim) -> WorkItem:
    """The work item a claim stands for, as far as settling it needs: its queue, key and
    lease token (the queue decides on those alone)."""
    return WorkItem(
        queue=queue_of(claim.endpoint_id),
        key=claim.event_id,
        seq=0,
        payload=b"",
        status="running",
        attempts=0,
        created=claim.created,
        due=claim.lease_until,
        lease=claim.lease,
        claimed=None,
        finished=None,
        error=None,
        result=None,
    )


def _last(item: WorkItem) -> Outcome | None:
    """The last outcome the item keeps: its result once done, else its error."""
    return decode_outcome(item.result if item.status == "done" else item.error)


class QueuedWebhookStore(RecordedEndpoints):
    """The webhook store on a work queue and a record store, waiting for ``log``.

    ``follows_log`` says whether the fan-out cursor outlives the process with
    the log (see :attr:`~polyport.core.webhookstore.DeliveryOutbox.follows_log`).
    """

    def __init__(
        self,
        queue: WorkQueue,
        records: RecordStore,
        *,
        log: EventLog,
        follows_log: bool,
        seal: SecretSeal,
    ) -> None:
        super().__init__(records, seal)
        self.queue = queue
        self.log = log
        self._follows_log = follows_log

    @property
    def follows_log(self) -> bool:
        return self._follows_log

    async def open(self) -> None:
        await self.queue.open()
        try:
            await self.records.open()
        except BaseException:
            await self.queue.close()
            raise

    async def close(self) -> None:
        await self.records.close()
        await self.queue.close()

    # -- endpoints and their deliveries -------------------------------------------------

    async def delete_endpoint(self, endpoint_id: str) -> bool:
        # The record first: no node fans out to it once it has reloaded.
        found = await self._forget_endpoint(endpoint_id)
        await self.queue.drop(queue_of(endpoint_id))
        for record in await scan_all(self.records, f"{DELIVERIES}{endpoint_id}/"):
            await self.records.delete(record.key)
        return found

    async def disable(self, endpoint_id: str, reason: str, at: float) -> int:
        await self._mark_disabled(endpoint_id, reason, at)
        return await self._fail_waiting(endpoint_id, f"endpoint disabled: {reason}", at)

    async def _fail_waiting(self, endpoint_id: str, error: str, at: float) -> int:
        """Fail every delivery not held under a live lease: due now, claimed, dead-lettered."""
        queue = queue_of(endpoint_id)
        before: int | None = None
        while True:
            page = await self.queue.items(queue, status="pending", before=before, limit=PAGE)
            for item in page:
                await self.queue.redrive(queue, item.key, now=at)
            if len(page) < PAGE:
                break
            before = page[-1].seq
        failed = 0
        while True:
            held = await self.queue.claim(
                [queue], now=at, limit=PAGE, lease=DISABLING_LEASE, owner=DISABLING
            )
            for item in held:
                last = decode_outcome(item.error)
                outcome = (
                    Outcome(0, None, None, None, error, None)
                    if last is None
                    else Outcome(
                        last.number,
                        last.time,
                        last.response_code,
                        last.latency,
                        last.error or error,
                        last.response_body,
                    )
                )
                failed += await self.queue.dead_letter(item, now=at, error=encode_outcome(outcome))
            if len(held) < PAGE:
                return failed

    # -- the outbox ---------------------------------------------------------------------

    async def fan_out(
        self,
        messages: Iterable[Message],
        owed: Sequence[Owed],
        *,
        now: float,
        cursor: int | None,
        owner: str | None = None,
        lease_until: float | None = None,
    ) -> list[Claim]:
        # Never before the events: the log says they are durable, then the queue hears.
        await self.log.durable()
        payloads = {m.event_id: encode_message(m) for m in messages}
        by_endpoint: dict[str, list[Owed]] = {}
        for debt in owed:
            by_endpoint.setdefault(debt.endpoint_id, []).append(debt)
        fresh: set[tuple[str, str]] = set()

        async def enqueue_in_order(debts: list[Owed]) -> None:
            # One endpoint's in the order of their events: its log lists them so.
            for endpoint_id, event_id, _, created in debts:
                queue = queue_of(endpoint_id)
                if await self.queue.enqueue(queue, event_id, payloads[event_id], now=created):
                    fresh.add((endpoint_id, event_id))

        # Endpoints side by side: a backend may share one commit between them (SQLite)
        # or overlap their round trips.
        lists = list(by_endpoint.values())
        for start in range(0, len(lists), ENQUEUE_TOGETHER):
            await asyncio.gather(*map(enqueue_in_order, lists[start : start + ENQUEUE_TOGETHER]))
        if cursor is not None:
            await self._advance(cursor)
        if owner is None or lease_until is None or not owed:
            return []
        queues = list(dict.fromkeys(queue_of(o.endpoint_id) for o in owed))
        return await self._claim(queues, owner, now, len(owed), lease_until, fresh)

    async def _advance(self, cursor: int) -> None:
        """Move the fan-out cursor to ``cursor`` unless it is there or beyond already."""
        while True:
            found = await self.records.get(FANOUT_KEY)
            if found is not None and int(found.value) >= cursor:
                return
            expect = ABSENT if found is None else found.version
            if await self.records.put(FANOUT_KEY, b"%d" % cursor, expect=expect) is not None:
                return

    async def lead_fan_out(self, owner: str, now: float, until: float) -> bool:
        return await lead(self.records, LEADER_KEY, owner, now, until)

    async def fanout_cursor(self) -> int:
        found = await self.records.get(FANOUT_KEY)
        return 0 if found is None else int(found.value)

    async def add_single(self, message: Message, endpoint_id: str, now: float) -> None:
        check_endpoint_id(endpoint_id)
        await self.queue.enqueue(
            queue_of(endpoint_id), message.event_id, encode_message(message), now=now
        )

    async def purge(self, before: float) -> int:
        dropped = 0
        for endpoint_id in await self.all_ids():
            dropped += await self.queue.purge(queue_of(endpoint_id), before)
            await self._sweep(endpoint_id, before)
        return dropped

    async def _sweep(self, endpoint_id: str, before: float) -> None:
        """Drop the records of deliveries created before ``before`` that are gone.

        A delivery that finished before ``before`` was created before it, so
        the records of those just purged sort before ``before`` under their
        endpoint: the sweep stops there.
        """
        queue, bound = queue_of(endpoint_id), micros(before)
        after: str | None = None
        while True:
            page = await self.records.scan(f"{DELIVERIES}{endpoint_id}/", after=after, limit=PAGE)
            older = [r.key for r in page if created_of(r.key, endpoint_id)[0] < bound]
            groups: dict[tuple[int, str], list[str]] = {}
            for key in older:
                groups.setdefault(created_of(key, endpoint_id), []).append(key)
            for (created, event_id), keys in groups.items():
                item = await self.queue.get(queue, event_id)
                if item is None or micros(item.created) != created:
                    for key in keys:
                        await self.records.delete(key)
            if len(page) < PAGE or len(older) < len(page):
                return  # the end, or past the bound: keys sort by creation time
            after = page[-1].key

    # -- leases ---------------------------------------------------------------------------

    async def claim_due(self, owner: str, now: float, limit: int, until: float) -> list[Claim]:
        queues = [queue_of(endpoint_id) for endpoint_id in await self.enabled_ids()]
        return await self._claim(queues, owner, now, limit, until, set())

    async def _claim(
        self,
        queues: Sequence[str],
        owner: str,
        now: float,
        limit: int,
        until: float,
        fresh: set[tuple[str, str]],
    ) -> list[Claim]:
        """Claim due items of ``queues`` (``fresh`` ones were just enqueued: no round yet)."""
        items: list[WorkItem] = []
        for start in range(0, len(queues), CLAIM_QUEUES):
            if len(items) >= limit:
                break
            items += await self.queue.claim(
                queues[start : start + CLAIM_QUEUES],
                now=now,
                limit=limit - len(items),
                lease=until - now,
                owner=owner,
            )
        rounds = await self._rounds(
            [item for item in items if (item.queue[len(QUEUE_PREFIX) :], item.key) not in fresh]
        )
        claims = []
        for item in items:
            endpoint_id = item.queue[len(QUEUE_PREFIX) :]
            base, _ = decode_round(rounds.get((item.queue, item.key)))
            last = decode_outcome(item.error)  # a retry's, or an earlier round's
            _, message = decode_message(item.key, item.payload)
            claims.append(
                Claim(
                    endpoint_id,
                    item.key,
                    item.created,
                    max(base, last.number if last is not None else 0),
                    base,
                    item.lease or "",
                    until,
                    message,
                )
            )
        return claims

    async def _rounds(self, items: Sequence[WorkItem]) -> dict[tuple[str, str], bytes]:
        """The round records of ``items`` that have one, by ``(queue, key)``."""
        if not items:
            return {}
        found: Sequence[Record | None] = await asyncio.gather(
            *(
                self.records.get(round_key(i.queue[len(QUEUE_PREFIX) :], i.created, i.key))
                for i in items
            )
        )
        return {
            (item.queue, item.key): record.value
            for item, record in zip(items, found, strict=True)
            if record is not None
        }

    async def extend_leases(self, claims: Iterable[Claim], until: float) -> int:
        return await self.queue.extend([_held(c) for c in claims], until)

    async def release(self, claims: Iterable[Claim], now: float) -> int:
        return sum([await self.queue.release(_held(c), now=now) for c in claims])

    async def record(self, results: Sequence[AttemptResult]) -> int:
        written = 0
        for result in results:
            claim, item = result.claim, _held(result.claim)
            outcome = Outcome(
                result.number,
                result.time,
                result.response_code,
                result.latency,
                result.error,
                result.response_body,
            )
            text = encode_outcome(outcome)
            if result.status == "delivered":
                settled = await self.queue.ack(item, now=result.time, result=text.encode())
            elif result.status == "pending":
                due = result.time if result.next_at is None else result.next_at
                settled = await self.queue.retry(item, due=due, error=text)
            else:
                settled = await self.queue.dead_letter(item, now=result.time, error=text)
            if not settled:
                continue  # the lease ran out and another node holds it: not ours to say
            written += 1
            if result.status != "delivered":  # a success stays in the item (see requeue)
                key = attempt_key(claim.endpoint_id, claim.created, claim.event_id, result.number)
                await self.records.put(key, text.encode())
        return written

    # -- the delivery log ---------------------------------------------------------------

    async def deliveries(
        self,
        endpoint_id: str,
        *,
        status: DeliveryStatus | None = None,
        limit: int = 50,
        before: int | None = None,
    ) -> list[Delivery]:
        queue = queue_of(endpoint_id)
        if status is None:
            items = await self.queue.items(queue, before=before, limit=limit)
        elif status == "pending":
            # Waiting and being attempted alike: two listings, merged by seq.
            waiting = await self.queue.items(queue, status="pending", before=before, limit=limit)
            running = await self.queue.items(queue, status="running", before=before, limit=limit)
            items = sorted(waiting + running, key=lambda i: i.seq, reverse=True)[:limit]
        else:
            work_status = _WORK_STATUS[status]
            items = await self.queue.items(queue, status=work_status, before=before, limit=limit)
        rounds = await self._rounds(items)
        return [_view(item, rounds.get((item.queue, item.key))) for item in items]

    async def delivery(self, endpoint_id: str, event_id: str) -> Delivery | None:
        item = await self.queue.get(queue_of(endpoint_id), event_id)
        if item is None:
            return None
        rounds = await self._rounds([item])
        return _view(item, rounds.get((item.queue, item.key)))

    async def attempts(self, endpoint_id: str, event_id: str) -> list[Attempt]:
        item = await self.queue.get(queue_of(endpoint_id), event_id)
        if item is None:
            return []
        prefix = delivery_prefix(endpoint_id, item.created, event_id)
        found: dict[int, Attempt] = {}
        for record in await scan_all(self.records, prefix):
            if record.key.endswith("/" + ROUND):
                continue
            outcome = decode_outcome(record.value)
            if outcome is not None and outcome.time is not None:
                found[outcome.number] = _attempt(outcome, outcome.time)
        last = _last(item)
        if item.status == "done" and last is not None and last.time is not None:
            found.setdefault(last.number, _attempt(last, last.time))
        return [found[n] for n in sorted(found)]

    async def requeue(self, endpoint_id: str, event_id: str, now: float) -> bool:
        queue = queue_of(endpoint_id)
        item = await self.queue.get(queue, event_id)
        if item is None or item.status == "running":
            return False
        key = round_key(endpoint_id, item.created, event_id)
        previous = await self.records.get(key)
        base, earlier = decode_round(None if previous is None else previous.value)
        last = _last(item) or earlier
        attempts = max(base, last.number if last is not None else 0)
        if item.status == "done" and last is not None and last.time is not None:
            # A success lived in the item only: keep it in the history.
            done = attempt_key(endpoint_id, item.created, event_id, last.number)
            await self.records.put(done, encode_outcome(last).encode())
        written = None
        if attempts != base:
            written = await self.records.put(key, encode_round(attempts, last))
        if await self.queue.redrive(queue, event_id, now=now, replay=True):
            return True
        # Claimed meanwhile: no new round began, so the old one's base stands.
        if written is not None:
            if previous is None:
                await self.records.delete(key, expect=written)
            else:
                await self.records.put(key, previous.value, expect=written)
        return False

    async def recover(self, endpoint_id: str, since: float, until: float, now: float) -> int:
        queue = queue_of(endpoint_id)
        failed: list[str] = []
        before: int | None = None
        while True:
            page = await self.queue.items(queue, status="dead", before=before, limit=PAGE)
            failed += [item.key for item in page if since <= item.created < until]
            if len(page) < PAGE:
                break
            before = page[-1].seq
        return sum([await self.requeue(endpoint_id, key, now) for key in failed])


def _attempt(outcome: Outcome, at: float) -> Attempt:
    return Attempt(
        outcome.number,
        at,
        outcome.response_code,
        outcome.latency,
        outcome.error,
        outcome.response_body,
    )


def _view(item: WorkItem, round_value: bytes | None) -> Delivery:
    """A delivery as the log shows it: its item, and its round if it was replayed."""
    base, earlier = decode_round(round_value)
    last = _last(item) or earlier
    event_type, _ = decode_message(item.key, item.payload)
    if item.status == "pending":
        next_at: float | None = item.due
    elif item.status == "running":
        next_at = item.claimed  # due then, and being attempted since
    else:
        next_at = None
    return Delivery(
        endpoint_id=item.queue[len(QUEUE_PREFIX) :],
        event_id=item.key,
        type=event_type,
        created=item.created,
        status=_STATUS[item.status],
        attempts=max(base, last.number if last is not None else 0),
        retry_base=base,
        next_at=next_at,
        seq=item.seq,
        last_at=None if last is None else last.time,
        response_code=None if last is None else last.response_code,
        latency=None if last is None else last.latency,
        response_body=None if last is None else last.response_body,
        error=None if last is None else last.error,
    )


__all__ = ["QueuedWebhookStore"]

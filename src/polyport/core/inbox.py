"""The receivers' inbox port: received webhooks, deduplicated, leased, retried, dead-lettered.

What the webhook receivers edge (``POST /hooks/{name}``) keeps. It is a
leased work queue with a few fields of its own, so it is built on one:
:class:`QueuedReceiverInbox` keeps each receiver's deliveries in the
:class:`~polyport.core.workqueue.WorkQueue` queue ``hooks/{receiver}``, which
makes the inbox shared by every node on whichever engine holds the queue
(memory, SQLite, PostgreSQL, Redis, NATS). Over each of them it passes the
contract suite in ``tests/contract/inbox_contract.py``.

A delivery is named by ``(receiver, delivery id)``. It is stored, durable,
before the sender is answered, then processed from here::

    pending ──claim──▶ running ──complete──▶ done
       ▲                  │
       └──retry (later)───┤
                          └──bury──▶ dead ──redrive──▶ pending

Guarantees every backend gives (the contract suite checks each):

* **Idempotency within the retention window.** A delivery id is known from
  its insert until :meth:`ReceiverInbox.purge` forgets it (only once it is
  final, ``hooks.retention`` after it finished): inserting a known id changes
  nothing and answers False — across restarts, and across nodes sharing the
  store.
* **A claim is a lease.** A claim moves a due delivery to ``running`` with a
  fresh lease token, counts the attempt, and holds it until ``due``. A
  running delivery whose lease has passed (its node died mid-handler) is due
  again and claimed anew; of claims racing for one delivery, exactly one
  wins.
* **Only the current lease settles.** :meth:`InboxQueue.complete`,
  :meth:`~InboxQueue.retry`, :meth:`~InboxQueue.bury` and
  :meth:`~InboxQueue.release` act only on a running delivery whose lease
  token is still the one they carry; a node whose lease ran out is refused
  (False), never overwriting the node that took over.
* **Final states never change**, except by redrive: ``done`` never, ``dead``
  only through :meth:`InboxLog.redrive`, which makes it pending with a fresh
  count of attempts.

Inserts and redrives are durable when they return. Claims and outcomes are
durable, and seen by other nodes, by the time the caller next yields to its
event loop (SQLite commits them with that loop iteration's other writes):
one lost to a crash leaves the delivery pending or running, so its handler
runs again — at least once, never lost. Failures of the backend itself
propagate as the backend's exceptions.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import orjson

from polyport.core.workqueue import WorkItem, WorkQueue

InboxStatus = Literal["pending", "running", "done", "dead"]
INBOX_STATUSES: tuple[InboxStatus, ...] = ("pending", "running", "done", "dead")


@dataclass(frozen=True, slots=True)
class InboxEntry:
    """One received delivery and where its processing stands."""

    #: The order the inbox received it in (larger is newer): listings page by it.
    seq: int
    receiver: str
    id: str
    status: InboxStatus
    event_type: str | None
    signed_at: int | None
    received: float
    body: bytes
    headers: dict[str, str]
    #: Claims so far in this round (a redrive of a dead delivery starts at 0).
    attempts: int
    #: When a pending delivery may next run, or when a running one's lease ends.
    due: float
    #: The current claim's token, while running.
    lease: str | None
    finished: float | None
    error: str | None


class InboxQueue(Protocol):
    """Processing: claims (leases) and their outcomes.

    Times are Unix seconds, given by the caller. Each outcome answers whether
    it was written: False when the entry's lease is no longer current.
    """

    async def claim(
        self, receivers: Sequence[str], now: float, limit: int, lease_seconds: float
    ) -> list[InboxEntry]:
        """Lease up to ``limit`` due deliveries of ``receivers`` for ``lease_seconds``.

        Due means pending with ``due <= now``, or running with a lease that
        ended by ``now``. Earliest due first; each claimed entry is returned
        running, with its new lease token and its attempts counted.
        """
        ...

    async def complete(self, entry: InboxEntry, now: float) -> bool:
        """The handler succeeded: ``done``, finished at ``now``."""
        ...

    async def retry(self, entry: InboxEntry, due: float, error: str) -> bool:
        """The handler failed: pending again from ``due``, with the error kept."""
        ...

    async def bury(self, entry: InboxEntry, now: float, error: str) -> bool:
        """The handler failed for the last time: ``dead`` (a dead letter), with the error."""
        ...

    async def release(self, entry: InboxEntry, now: float) -> bool:
        """Give a claimed entry back unrun (the node is stopping): the claim does not count."""
        ...

    async def next_due(self, receivers: Sequence[str]) -> float | None:
        """When the earliest pending delivery (or running lease) of ``receivers`` falls due."""
        ...


class InboxLog(Protocol):
    """What each receiver was sent, and the way back for dead letters."""

    async def get(self, receiver: str, delivery_id: str) -> InboxEntry | None: ...

    async def deliveries(
        self, receiver: str, *, status: InboxStatus | None, before: int | None, limit: int
    ) -> list[InboxEntry]:
        """A receiver's deliveries, newest first; ``before`` is an entry's ``seq`` (a cursor)."""
        ...

    async def counts(self, receiver: str) -> dict[InboxStatus, int]:
        """How many deliveries the receiver has in each status (every status present)."""
        ...

    async def redrive(self, receiver: str, delivery_id: str, now: float) -> bool:
        """Make a dead (or waiting) delivery due ``now``; False if it is neither.

        A dead one starts a fresh count of attempts; a pending one keeps its
        count. Durable when this returns.
        """
        ...


class ReceiverInbox(InboxQueue, InboxLog, Protocol):
    """Received webhooks: stored once per id, then processed at least once.

    The node builds it (choosing the backend) and hands it to the edge
    through :class:`~polyport.core.runtime.Runtime`; the edge opens it when
    it starts and closes it when it stops.
    """

    async def open(self) -> None:
        """Connect and create what is missing."""
        ...

    async def close(self) -> None: ...

    async def insert(
        self,
        receiver: str,
        delivery_id: str,
        *,
        event_type: str | None,
        signed_at: int | None,
        body: bytes,
        headers: dict[str, str],
        now: float,
    ) -> bool:
        """Store a new delivery, pending and due ``now``; False if the id is known.

        Durable before it returns True (the sender's ``200`` waits for it).
        """
        ...

    async def purge(self, receivers: Sequence[str], before: float) -> int:
        """Forget ``receivers``' done and dead deliveries that finished before ``before``;
        how many.

        Their ids become unknown: this is where the idempotency window ends.
        """
        ...


#: The queue of a receiver's deliveries.
QUEUE_PREFIX = "hooks/"
_META_LENGTH = struct.Struct(">I")


def queue_of(receiver: str) -> str:
    return QUEUE_PREFIX + receiver


def encode_payload(
    event_type: str | None, signed_at: int | None, headers: dict[str, str], body: bytes
) -> bytes:
    """A delivery as a work item's payload: its fields as JSON, length first, then the body."""
    meta = orjson.dumps({"type": event_type, "signed_at": signed_at, "headers": headers})
    return _META_LENGTH.pack(len(meta)) + meta + body


def _entry(item: WorkItem) -> InboxEntry:
    (length,) = _META_LENGTH.unpack_from(item.payload)
    start = _META_LENGTH.size
    meta = orjson.loads(item.payload[start : start + length])
    return InboxEntry(
        seq=item.seq,
        receiver=item.queue.removeprefix(QUEUE_PREFIX),
        id=item.key,
        status=item.status,
        event_type=meta["type"],
        signed_at=meta["signed_at"],
        received=item.created,
        body=item.payload[start + length :],
        headers=meta["headers"],
        attempts=item.attempts,
        due=item.due,
        lease=item.lease,
        finished=item.finished,
        error=item.error,
    )


def _held(entry: InboxEntry) -> WorkItem:
    """The work item a claimed entry stands for, as far as settling it needs: its
    queue, key and lease token (the queue decides on those alone)."""
    return WorkItem(
        queue=queue_of(entry.receiver),
        key=entry.id,
        seq=entry.seq,
        payload=b"",
        status=entry.status,
        attempts=entry.attempts,
        created=entry.received,
        due=entry.due,
        lease=entry.lease,
        claimed=None,
        finished=entry.finished,
        error=entry.error,
        result=None,
    )


class QueuedReceiverInbox:
    """The receivers' inbox on a :class:`~polyport.core.workqueue.WorkQueue`: one queue
    per receiver, a delivery's fields in its item's payload."""

    def __init__(self, queue: WorkQueue) -> None:
        self.queue = queue

    async def open(self) -> None:
        await self.queue.open()

    async def close(self) -> None:
        await self.queue.close()

    async def insert(
        self,
        receiver: str,
        delivery_id: str,
        *,
        event_type: str | None,
        signed_at: int | None,
        body: bytes,
        headers: dict[str, str],
        now: float,
    ) -> bool:
        payload = encode_payload(event_type, signed_at, headers, body)
        return await self.queue.enqueue(queue_of(receiver), delivery_id, payload, now=now)

    async def purge(self, receivers: Sequence[str], before: float) -> int:
        return sum([await self.queue.purge(queue_of(r), before) for r in receivers])

    async def claim(
        self, receivers: Sequence[str], now: float, limit: int, lease_seconds: float
    ) -> list[InboxEntry]:
        items = await self.queue.claim(
            [queue_of(r) for r in receivers], now=now, limit=limit, lease=lease_seconds
        )
        return [_entry(item) for item in items]

    async def complete(self, entry: InboxEntry, now: float) -> bool:
        return await self.queue.ack(_held(entry), now=now)

    async def retry(self, entry: InboxEntry, due: float, error: str) -> bool:
        return await self.queue.retry(_held(entry), due=due, error=error)

    async def bury(self, entry: InboxEntry, now: float, error: str) -> bool:
        return await self.queue.dead_letter(_held(entry), now=now, error=error)

    async def release(self, entry: InboxEntry, now: float) -> bool:
        return await self.queue.release(_held(entry), now=now)

    async def next_due(self, receivers: Sequence[str]) -> float | None:
        return await self.queue.next_due([queue_of(r) for r in receivers])

    async def get(self, receiver: str, delivery_id: str) -> InboxEntry | None:
        item = await self.queue.get(queue_of(receiver), delivery_id)
        return None if item is None else _entry(item)

    async def deliveries(
        self, receiver: str, *, status: InboxStatus | None, before: int | None, limit: int
    ) -> list[InboxEntry]:
        items = await self.queue.items(
            queue_of(receiver), status=status, before=before, limit=limit
        )
        return [_entry(item) for item in items]

    async def counts(self, receiver: str) -> dict[InboxStatus, int]:
        return await self.queue.counts(queue_of(receiver))

    async def redrive(self, receiver: str, delivery_id: str, now: float) -> bool:
        return await self.queue.redrive(queue_of(receiver), delivery_id, now=now)

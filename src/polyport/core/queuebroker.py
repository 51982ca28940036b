"""The broker on the node's own work queue: embedded by default, shared on an engine.

:class:`WorkQueueBroker` keeps each message queue as the
:class:`~polyport.core.workqueue.WorkQueue` queue ``queues/{name}``: a message
is a work item named by its id (so the work queue's idempotent enqueue is the
producer deduplication), its ordering key is the item's group (one at a time,
in order), its delay the item's due time, and a dead letter a dead item with
its attempts and last error. So it is durable wherever the work queue is —
the SQLite file by default (group commit), or PostgreSQL, Redis or NATS when
the node runs on that engine — and shared by every node that shares it.

An acknowledged message stays in the work queue as a done item, holding its
id, until :meth:`WorkQueueBroker.expire` purges it once ``dedup_window`` has
passed (the queue runner calls it from time to time).

A consumer waiting in :meth:`WorkQueueBroker.receive` is woken at once by a
send or settlement in this process; what other nodes send it finds by
looking again every ``poll_interval`` seconds, or at the next due time it
knows of.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import struct
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson

from polyport.core.broker import (
    Delivery,
    OutgoingMessage,
    QueuedMessage,
    QueueOptions,
    QueueStats,
)
from polyport.core.workqueue import WorkItem, WorkQueue

#: The work queue's queues that hold message queues are named with this prefix.
PREFIX = "queues/"
_META_LENGTH = struct.Struct(">I")
#: Items read per page when redriving every dead letter.
_PAGE = 200


def encode(message: OutgoingMessage) -> bytes:
    """A message as a work item's payload: its id, headers and key as JSON, length first,
    then the body."""
    meta = orjson.dumps({"id": message.id, "headers": dict(message.headers), "key": message.key})
    return _META_LENGTH.pack(len(meta)) + meta + message.body


def decode(payload: bytes) -> tuple[str | None, Mapping[str, str], str | None, bytes]:
    """``(id, headers, key, body)`` of a payload made by :func:`encode`."""
    (length,) = _META_LENGTH.unpack_from(payload)
    start = _META_LENGTH.size
    meta = orjson.loads(payload[start : start + length])
    return meta.get("id"), meta["headers"], meta["key"], payload[start + length :]


class WorkQueueBroker:
    """A :class:`~polyport.core.broker.Broker` whose queues are queues of a work queue."""

    def __init__(
        self,
        work_queue: WorkQueue,
        *,
        kind: str,
        owner: str | None = None,
        poll_interval: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.work_queue = work_queue
        self.kind = kind
        self.owner = owner
        self.poll_interval = poll_interval
        self.clock = clock
        self._options: dict[str, QueueOptions] = {}
        #: Queue → an event set whenever something in this process may have made work due.
        self._changed: dict[str, asyncio.Event] = {}

    async def open(self) -> None:
        await self.work_queue.open()

    async def close(self) -> None:
        await self.work_queue.close()

    async def declare(self, queue: QueueOptions) -> None:
        self._options[queue.name] = queue

    # -- producing ------------------------------------------------------------------------

    async def send(self, queue: str, messages: Sequence[OutgoingMessage]) -> list[bool]:
        name = PREFIX + queue
        now = self.clock()
        stored = []
        for message in messages:
            due = now + message.delay if message.delay > 0 else None
            added = await self.work_queue.enqueue(
                name,
                _token(message.id),
                encode(message),
                now=now,
                due=due,
                group=_group(message.key),
            )
            stored.append(added)
        if any(stored):
            self._poke(queue)
        return stored

    # -- consuming ------------------------------------------------------------------------

    async def receive(self, queue: str, *, limit: int, lease: float, wait: float) -> list[Delivery]:
        name = PREFIX + queue
        changed = self._changed.setdefault(queue, asyncio.Event())
        deadline = time.monotonic() + wait
        while True:
            changed.clear()
            now = self.clock()
            items = await self.work_queue.claim(
                [name], now=now, limit=limit, lease=lease, owner=self.owner
            )
            if items:
                return [_delivery(queue, item) for item in items]
            left = deadline - time.monotonic()
            if left <= 0:
                return []
            sleep = min(left, self.poll_interval)
            due = await self.work_queue.next_due([name])
            if due is not None:
                sleep = min(sleep, max(0.001, due - self.clock()))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(sleep):
                    await changed.wait()

    async def extend(self, deliveries: Sequence[Delivery], lease: float) -> int:
        if not deliveries:
            return 0
        return await self.work_queue.extend(
            [_held(d) for d in deliveries], until=self.clock() + lease
        )

    async def ack(self, delivery: Delivery) -> bool:
        done = await self.work_queue.ack(_held(delivery), now=self.clock())
        if done and delivery.key is not None:
            self._poke(delivery.queue)  # the next message of its key is due
        return done

    async def retry(self, delivery: Delivery, *, delay: float, error: str) -> bool:
        due = self.clock() + max(0.0, delay)
        retried = await self.work_queue.retry(_held(delivery), due=due, error=error)
        if retried:
            self._poke(delivery.queue)
        return retried

    async def release(self, delivery: Delivery) -> bool:
        released = await self.work_queue.release(_held(delivery), now=self.clock())
        if released:
            self._poke(delivery.queue)
        return released

    async def dead_letter(self, delivery: Delivery, *, error: str) -> bool:
        dead = await self.work_queue.dead_letter(_held(delivery), now=self.clock(), error=error)
        if dead and delivery.key is not None:
            self._poke(delivery.queue)
        return dead

    # -- operating ------------------------------------------------------------------------

    async def dead(
        self, queue: str, *, limit: int = 50, after: str | None = None
    ) -> list[QueuedMessage]:
        before = int(after) if after is not None and after.isdigit() else None
        items = await self.work_queue.items(
            PREFIX + queue, status="dead", before=before, limit=limit
        )
        return [_listed(queue, item) for item in items]

    async def redrive(self, queue: str, ids: Sequence[str] | None = None) -> int:
        name = PREFIX + queue
        now = self.clock()
        count = 0
        if ids is not None:
            for id_ in ids:
                item = await self.work_queue.get(name, _token(id_))
                if item is not None and item.status == "dead":
                    count += await self.work_queue.redrive(name, item.key, now=now)
        else:
            # Newest first by seq; a redriven item leaves the dead ones, so each page
            # starts after the last one read, not over again.
            before: int | None = None
            while True:
                page = await self.work_queue.items(name, status="dead", before=before, limit=_PAGE)
                for item in page:
                    count += await self.work_queue.redrive(name, item.key, now=now)
                if len(page) < _PAGE:
                    break
                before = page[-1].seq
        if count:
            self._poke(queue)
        return count

    async def peek(self, queue: str, *, limit: int = 50) -> list[QueuedMessage]:
        name = PREFIX + queue
        running = await self.work_queue.items(name, status="running", limit=limit)
        pending = await self.work_queue.items(name, status="pending", limit=limit)
        items = sorted(running + pending, key=lambda item: item.seq)
        return [_listed(queue, item) for item in items[:limit]]

    async def stats(self, queue: str) -> QueueStats:
        counts = await self.work_queue.counts(PREFIX + queue)
        return QueueStats(
            waiting=counts["pending"], in_flight=counts["running"], dead=counts["dead"]
        )

    async def purge(self, queue: str) -> int:
        return await self.work_queue.drop(PREFIX + queue)

    async def expire(self, queue: str) -> int:
        """Forget the ids of messages handled longer ago than the queue's dedup window."""
        options = self._options.get(queue) or QueueOptions(queue)
        return await self.work_queue.purge(PREFIX + queue, self.clock() - options.dedup_window)

    def _poke(self, queue: str) -> None:
        changed = self._changed.get(queue)
        if changed is not None:
            changed.set()


def _group(key: str | None) -> str | None:
    """The work queue's group of an ordering key: the key itself when the work queue
    takes it as a name, else a digest of it (``~`` and 64 hex digits)."""
    return None if key is None else _token(key)


def _token(text: str) -> str:
    """``text`` as a work queue name or key: itself when it is printable and not shaped
    like a digest, else ``~`` and its SHA-256 (the broker takes any character but
    control ones; the work queue only printable ones). One text, one token."""
    if text.isprintable() and not text.startswith("~"):
        return text
    return "~" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _delivery(queue: str, item: WorkItem) -> Delivery:
    id_, headers, key, body = decode(item.payload)
    return Delivery(
        queue=queue,
        id=id_ or item.key,
        body=body,
        headers=headers,
        key=key,
        attempt=item.attempts,
        sent=item.created,
        lease_until=item.due,
        error=item.error,
        token=item,
    )


def _held(delivery: Delivery) -> WorkItem:
    item: Any = delivery.token
    if not isinstance(item, WorkItem):
        raise TypeError("this delivery was not received from a work queue broker")
    return item


def _listed(queue: str, item: WorkItem) -> QueuedMessage:
    id_, headers, key, body = decode(item.payload)
    state = {"pending": "waiting", "running": "in_flight"}.get(item.status, item.status)
    return QueuedMessage(
        queue=queue,
        id=id_ or item.key,
        body=body,
        headers=headers,
        key=key,
        state=state,
        attempts=item.attempts,
        sent=item.created,
        due=None if item.status == "dead" else item.due,
        died=item.finished if item.status == "dead" else None,
        error=item.error,
        cursor=str(item.seq),
    )


__all__ = ["PREFIX", "WorkQueueBroker", "decode", "encode"]

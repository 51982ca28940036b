"""The leased work queue on NATS JetStream: one KV bucket that any number of nodes share.

The port's times are the caller's (see :mod:`polyport.core.workqueue`), so a
lease cannot be JetStream's ack wait nor a retry its nak delay: a JetStream
work-queue consumer does not fit. Items are records in the KV bucket
``{name}-wq`` instead (:mod:`.workrecords` is their layout, :mod:`.workbucket`
their reads and writes), and every change of state is a compare-and-set on
the record's revision (``Nats-Expected-Last-Subject-Sequence``):

* **enqueue** creates the record only if its key holds none (expected
  revision 0, or the revision of a delete marker a purge left), so a known key
  answers False on every node; ``seq`` is the create's stream sequence, which
  grows with every write to the bucket;
* **claim** reads the due candidates its node's copy of the live items
  proposes (see :mod:`.workindex`) and rewrites each at the revision it read:
  of two nodes racing for an item, JetStream stores one write and refuses the
  other, whose node skips the item. Of an ordering group (named in the
  record's header) the copy proposes only the head, once it has seen every
  item of the group before it finish: so a group runs one item at a time, its
  exclusivity that compare-and-set, its order the stream's (an item's ``seq``
  is its create's stream sequence, so the order it became visible in);
* **ack, retry, release, dead letter, extend** check that the record is still
  running under the caller's lease token and rewrite it at that revision: the
  node that claimed it keeps the record it wrote and only reads again when
  that write is refused (the item was taken over, or this node's own other
  write got in between);
* **redrive** rewrites a dead or pending record (or a done one, to replay
  it) the same way.

Every call that writes returns once JetStream acknowledged the write, so
claims and outcomes are durable and visible to every node when they return.

Costs. A claim costs one request to learn the bucket's newest revision, then
one read and one write per item it takes (pipelined); ``next_due`` only the
first; an outcome one write when this node made the claim (it keeps the
record it wrote), a read and a write otherwise. Each node keeps the live
(pending and running) items of every queue in memory (some 330 bytes each:
33 MB for 100,000) and receives the header of every record written; a node that opens (or
reconnects) replays the headers of every record first. Other reads go
through an ephemeral headers-only consumer, whose cost is the records it
delivers (about ten thousand a second measured on a busy two-core machine,
most of it nats-py parsing headers):
:meth:`~NatsWorkQueue.items` reads back from the newest writes in widening
windows, so a page of recent items costs the records written since them;
:meth:`~NatsWorkQueue.counts`, :meth:`~NatsWorkQueue.purge` and
:meth:`~NatsWorkQueue.drop` read all the queue's records, live and finished
until purged — fine for dashboards and maintenance, not for hot paths.

Limits. Payloads, results and errors over 64 KiB are stored in chunks beside
the record (a server's ``max_payload`` counts headers too, so a 1 MiB payload
cannot be one message); the chunks of an enqueue or outcome whose answer was
lost may stay behind until the item is purged or its queue dropped.
:meth:`~NatsWorkQueue.drop` is for a queue nobody works on: an item rewritten
during the drop survives it, possibly without its chunks. Durability is the
stream's: a file stream on one server has written the record to its files
when it acknowledges (fsynced later); give the bucket ``replicas`` on a
cluster to survive the loss of a server.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import secrets
from collections.abc import Callable, Sequence

from polyport.backends.nats.client import TIMEOUT, JetStreamClient, message_seq, unavailable
from polyport.backends.nats.workbucket import WorkBucket, is_marker, pipelined
from polyport.backends.nats.workindex import Candidate, LiveItems
from polyport.backends.nats.workrecords import (
    HEADER,
    Stored,
    Summary,
    encode_body,
    error_bytes,
    name_token,
    work_header,
)
from polyport.core.errors import InvalidArgument
from polyport.core.workqueue import WORK_STATUSES, WorkItem, WorkStatus, check_name

_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
#: Writes an operation may lose to other writers of one record before it is Unavailable.
MAX_ATTEMPTS = 32
#: Rounds of candidates a claim tries when other nodes took the ones it read.
CLAIM_ROUNDS = 4
#: Records of items this node holds under a lease, kept to settle them without a read.
HELD_MAX = 10_000


def _valid(name: str) -> bool:
    """Whether ``name`` can name a queue or key at all (one that cannot holds nothing)."""
    try:
        check_name("name", name)
    except InvalidArgument:
        return False
    return True


class NatsWorkQueue:
    """The :class:`~polyport.core.workqueue.WorkQueue` in a NATS JetStream KV bucket.

    ``name`` names the bucket ``{name}-wq`` (its stream ``KV_{name}-wq``):
    every node that opens a work queue of the same name on the same NATS
    shares its queues.
    """

    def __init__(
        self,
        servers: str | Sequence[str] = "nats://127.0.0.1:4222",
        *,
        name: str = "polyport",
        replicas: int = 1,
        timeout: float = TIMEOUT,
    ) -> None:
        if not _NAME.fullmatch(name):
            raise InvalidArgument(f"invalid work queue name {name!r}: use 1-64 of A-Za-z0-9_-")
        self.bucket = f"{name}-wq"
        self.client = JetStreamClient(servers, timeout=timeout)
        self.records = WorkBucket(self.client, self.bucket, replicas)
        self.stream = self.records.stream
        self.live = LiveItems(self.client, self.bucket)
        self._opens = 0
        self._opening = asyncio.Lock()
        #: (queue, key) tokens this node is claiming now: its other claims skip them.
        self._claiming: set[tuple[str, str]] = set()
        #: (queue, key) tokens → the record this node last wrote for its lease on it.
        self._held: dict[tuple[str, str], Stored] = {}

    # -- opening ------------------------------------------------------------------

    async def open(self) -> None:
        async with self._opening:
            self._opens += 1
            if self._opens > 1:
                return
            try:
                await self.client.connect(f"polyport work queue {self.bucket}")
                await self.records.open()
                await self.live.follow()
            except BaseException:
                self._opens -= 1
                await self.live.stop()
                await self.client.close()
                raise

    async def close(self) -> None:
        async with self._opening:
            if self._opens == 0:
                return
            self._opens -= 1
            if self._opens == 0:
                await self.live.stop()
                await self.client.close()
                self._held.clear()

    # -- the port -----------------------------------------------------------------

    async def enqueue(
        self,
        queue: str,
        key: str,
        payload: bytes,
        *,
        now: float,
        due: float | None = None,
        group: str | None = None,
    ) -> bool:
        check_name("queue", queue)
        check_name("key", key)
        if group is not None:
            check_name("group", group)
        q, k = name_token(queue), name_token(key)
        fresh = Stored(
            revision=0,
            seq=0,  # the create's own revision
            status="pending",
            due=float(now if due is None else due),
            finished=None,
            attempts=0,
            created=float(now),
            lease=None,
            claimed=None,
            payload=bytes(payload),
            result=None,
            error=None,
            group=None if group is None else name_token(group),
        )
        records = self.records
        stored, blobs = await records.store_blobs(q, k, fresh)
        header = {HEADER: work_header("pending", stored.due, 0, None, stored.group)}
        subject, body, expected = records.record(q, k), encode_body(stored), 0
        for _ in range(MAX_ATTEMPTS):
            if await records.publish(subject, body, header, expected) is not None:
                return True
            msg = await records.last(subject)
            if msg is not None and not is_marker(msg):
                await records.forget_blobs(q, k, blobs)
                return False  # a known key
            # Nothing there any more, or a purge's delete marker: create after it.
            expected = 0 if msg is None else message_seq(msg)
        raise unavailable("could not enqueue a work item (too much contention)")

    async def claim(
        self,
        queues: Sequence[str],
        *,
        now: float,
        limit: int,
        lease: float,
        owner: str | None = None,
    ) -> list[WorkItem]:
        tokens = [name_token(q) for q in dict.fromkeys(queues) if _valid(q)]
        if limit <= 0 or not tokens:
            return []
        await self.live.barrier()
        claimed: list[tuple[Candidate, WorkItem]] = []
        tried: set[tuple[str, str]] = set()
        for _ in range(CLAIM_ROUNDS):
            skip = tried | self._claiming
            candidates = self.live.index.due(tokens, now, limit - len(claimed), skip)
            if not candidates:
                break
            keys = {(c.queue, c.key) for c in candidates}
            tried |= keys
            self._claiming |= keys
            try:
                claimed += await self._claim_some(candidates, now, lease, owner)
            finally:
                self._claiming -= keys
            if len(claimed) >= limit:
                break
        claimed.sort(key=lambda pair: (pair[0].due, pair[0].seq))
        return [item for _, item in claimed]

    async def _claim_some(
        self, candidates: list[Candidate], now: float, lease: float, owner: str | None
    ) -> list[tuple[Candidate, WorkItem]]:
        records = await self.records.read_many([(c.queue, c.key) for c in candidates])
        taking: list[tuple[Candidate, Stored]] = []
        for candidate, stored in zip(candidates, records, strict=True):
            if stored is None:
                self.live.index.forget(candidate.queue, candidate.key, candidate.revision)
            elif stored.status in ("pending", "running") and stored.due <= now:
                taking.append((candidate, stored))

        async def take(candidate: Candidate, stored: Stored) -> tuple[Candidate, WorkItem] | None:
            held = dataclasses.replace(
                stored,
                status="running",
                attempts=stored.attempts + 1,
                due=now + lease,
                lease=secrets.token_hex(8),
                claimed=now,
                owner=owner,
            )
            q, k = candidate.queue, candidate.key
            held, revision = await self.records.write(q, k, held, stored.revision)
            if revision is None:
                return None  # another node took it first
            self._hold(q, k, dataclasses.replace(held, revision=revision))
            return candidate, await self.records.item(q, k, held)

        return [got for got in await pipelined(take(c, s) for c, s in taking) if got is not None]

    async def _settle(self, item: WorkItem, change: Callable[[Stored], Stored]) -> bool:
        """Rewrite the record with ``change`` if ``item``'s lease still holds it."""
        if not (_valid(item.queue) and _valid(item.key)) or item.lease is None:
            return False
        q, k = name_token(item.queue), name_token(item.key)
        # The record this node wrote for the lease is the one to change, unless another
        # node took the item over since: then the write is refused, and the record read.
        stored = self._held.pop((q, k), None)
        if stored is not None and stored.lease != item.lease:
            self._hold(q, k, stored)  # another claim of this node's: not this lease's
            stored = None
        for _ in range(MAX_ATTEMPTS):
            if stored is None:
                stored = await self.records.read(q, k)
                if stored is None or stored.status != "running" or stored.lease != item.lease:
                    return False
            written, revision = await self.records.write(q, k, change(stored), stored.revision)
            if revision is not None:
                await self.records.forget_blobs(q, k, set(stored.blobs) - set(written.blobs))
                if written.status == "running":
                    self._hold(q, k, dataclasses.replace(written, revision=revision))
                return True
            stored = None  # taken over, or this node's own other write got in between
        raise unavailable("could not settle a work item (too much contention)")

    def _hold(self, queue: str, key: str, stored: Stored) -> None:
        held = self._held
        held.pop((queue, key), None)
        held[(queue, key)] = stored
        if len(held) > HELD_MAX:  # leases lost or never settled: forget the oldest
            del held[next(iter(held))]

    async def extend(self, items: Sequence[WorkItem], until: float) -> int:
        def push(stored: Stored) -> Stored:
            return dataclasses.replace(stored, due=float(until))

        return sum(await pipelined(self._settle(item, push) for item in items))

    async def ack(self, item: WorkItem, *, now: float, result: bytes | None = None) -> bool:
        def done(stored: Stored) -> Stored:
            return dataclasses.replace(
                stored,
                status="done",
                lease=None,
                owner=None,
                finished=float(now),
                error=None,
                result=None if result is None else bytes(result),
            )

        return await self._settle(item, done)

    async def retry(self, item: WorkItem, *, due: float, error: str) -> bool:
        def later(stored: Stored) -> Stored:
            return dataclasses.replace(
                stored,
                status="pending",
                due=float(due),
                lease=None,
                owner=None,
                error=error_bytes(error),
            )

        return await self._settle(item, later)

    async def release(self, item: WorkItem, *, now: float) -> bool:
        def back(stored: Stored) -> Stored:
            return dataclasses.replace(
                stored,
                status="pending",
                due=float(now),
                lease=None,
                owner=None,
                attempts=max(0, stored.attempts - 1),
            )

        return await self._settle(item, back)

    async def dead_letter(self, item: WorkItem, *, now: float, error: str) -> bool:
        def dead(stored: Stored) -> Stored:
            return dataclasses.replace(
                stored,
                status="dead",
                lease=None,
                owner=None,
                finished=float(now),
                error=error_bytes(error),
            )

        return await self._settle(item, dead)

    async def redrive(self, queue: str, key: str, *, now: float, replay: bool = False) -> bool:
        if not (_valid(queue) and _valid(key)):
            return False
        q, k = name_token(queue), name_token(key)
        allowed = ("dead", "pending", "done") if replay else ("dead", "pending")
        for _ in range(MAX_ATTEMPTS):
            stored = await self.records.read(q, k)
            if stored is None or stored.status not in allowed:
                return False
            fresh = stored.status != "pending"  # a new round: the last one's outcome goes
            again = dataclasses.replace(
                stored,
                status="pending",
                due=float(now),
                attempts=0 if fresh else stored.attempts,
                finished=None,
                result=None if fresh else stored.result,
            )
            written, revision = await self.records.write(q, k, again, stored.revision)
            if revision is not None:
                await self.records.forget_blobs(q, k, set(stored.blobs) - set(written.blobs))
                return True
        raise unavailable("could not redrive a work item (too much contention)")

    async def get(self, queue: str, key: str) -> WorkItem | None:
        if not (_valid(queue) and _valid(key)):
            return None
        q, k = name_token(queue), name_token(key)
        stored = await self.records.read(q, k)
        return None if stored is None else await self.records.item(q, k, stored)

    async def items(
        self,
        queue: str,
        *,
        status: WorkStatus | None = None,
        before: int | None = None,
        limit: int = 50,
    ) -> list[WorkItem]:
        if not _valid(queue) or limit <= 0:
            return []
        q = name_token(queue)

        def wanted(summary: Summary | Stored) -> bool:
            return (status is None or summary.status == status) and (
                before is None or summary.seq < before
            )

        # An item's record is at a revision no older than its seq, so the records written
        # since some revision hold every item of a later seq: scan back from the newest
        # in widening windows until one holds a page.
        newest = await self.records.last(self.records.prefix + ">")
        top = 0 if newest is None else message_seq(newest)
        if before is not None:
            top = min(top, before - 1)
        window = max(8 * limit, 1024)
        while True:
            since = max(1, top - window + 1)
            listed = sorted(
                (
                    (summary.seq, key)
                    for key, _, summary in await self.records.scan(q, since)
                    if summary.seq >= since and wanted(summary)
                ),
                reverse=True,
            )
            found: list[WorkItem] = []
            while listed and len(found) < limit:
                page, listed = listed[: limit - len(found)], listed[limit - len(found) :]
                records = await self.records.read_many([(q, key) for _, key in page])
                for (_, key), stored in zip(page, records, strict=True):
                    # Read again: a record may have moved on (or gone) since the scan.
                    if stored is not None and wanted(stored):
                        found.append(await self.records.item(q, key, stored))
            if len(found) >= limit or since == 1:
                return found
            window *= 8

    async def counts(self, queue: str) -> dict[WorkStatus, int]:
        counts: dict[WorkStatus, int] = dict.fromkeys(WORK_STATUSES, 0)
        if _valid(queue):
            for _, _, summary in await self.records.scan(name_token(queue)):
                counts[summary.status] += 1
        return counts

    async def next_due(self, queues: Sequence[str]) -> float | None:
        tokens = [name_token(q) for q in dict.fromkeys(queues) if _valid(q)]
        if not tokens:
            return None
        await self.live.barrier()
        return self.live.index.next_due(tokens)

    async def purge(self, queue: str, before: float) -> int:
        if not _valid(queue):
            return 0
        q = name_token(queue)
        old = [
            (key, revision)
            for key, revision, summary in await self.records.scan(q)
            if summary.status in ("done", "dead")
            and summary.finished is not None
            and summary.finished < before
        ]
        # A record that moved on since the scan (redriven) is not deleted.
        return sum(await pipelined(self.records.delete(q, key, rev) for key, rev in old))

    async def drop(self, queue: str) -> int:
        if not _valid(queue):
            return 0
        q = name_token(queue)
        # The marker first: every node's copy forgets the queue's items older than it,
        # and items enqueued after it are not dropped.
        records = self.records
        marker = await records.publish(records.drop_marker(q), b"", {HEADER: "drop"})
        assert marker is not None  # no expected revision: never refused as a race
        had = sum(1 for _, revision, _ in await records.scan(q) if revision < marker)
        await records.purge(records.record(q, "*"), marker)
        await records.purge(records.queue_blobs(q), marker)
        return had


__all__ = ["NatsWorkQueue"]

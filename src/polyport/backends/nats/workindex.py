"""Each node's copy of the live work items: what claims and ``next_due`` read.

A claim must find the earliest due of the pending and running items without
reading every item ever stored, and JetStream cannot order a bucket's keys by
a value. So every node follows the work queue's records with an ordered,
headers-only consumer (the record header holds status, due and seq: see
:mod:`.workrecords`) and keeps the live ones in memory, one heap per queue by
``(due, seq)``; done and dead items are dropped from the copy as their
records arrive. A claim then costs what it takes, not what the queue holds.

The copy only proposes: a claim reads each candidate's record and settles it
with a compare-and-set on its revision, so a stale entry costs one read and
is skipped. It must not *miss* an item, so a claim first calls
:meth:`LiveItems.barrier`, which returns once the copy has applied every
record written before the call — an item enqueued on any node is seen by the
next claim anywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from polyport.backends.nats.client import JetStreamClient, engine_errors, message_seq, unavailable
from polyport.backends.nats.workrecords import HEADER, Summary, parse_header

if TYPE_CHECKING:
    from nats.aio.msg import Msg
    from nats.aio.subscription import Subscription

#: A heap holding more stale entries than this many times its live ones is rebuilt.
_GARBAGE = 2


@dataclass(frozen=True, slots=True)
class Candidate:
    """A live item as the copy knows it: a claim reads its record at ``revision`` or later."""

    due: float
    seq: int
    queue: str  # the queue's token
    key: str  # the key's token
    revision: int


class LiveIndex:
    """The live items of every queue, by due time (queues and keys as their tokens)."""

    def __init__(self) -> None:
        #: queue → key → (revision, due, seq)
        self._entries: dict[str, dict[str, tuple[int, float, int]]] = {}
        #: queue → heap of (due, seq, revision, key); entries whose revision is no
        #: longer the key's are stale and skipped (removed lazily).
        self._heaps: dict[str, list[tuple[float, int, int, str]]] = {}

    def clear(self) -> None:
        self._entries.clear()
        self._heaps.clear()

    def __len__(self) -> int:
        return sum(len(entries) for entries in self._entries.values())

    def apply(self, queue: str, key: str, revision: int, summary: Summary | None) -> None:
        """A record at ``revision`` (None: deleted); older news than the copy holds is ignored."""
        entries = self._entries.get(queue)
        old = entries.get(key) if entries is not None else None
        if old is not None and old[0] >= revision:
            return
        if summary is None or summary.status in ("done", "dead"):
            if entries is not None and old is not None:
                del entries[key]
                self._tidy(queue)
            return
        entries = self._entries.setdefault(queue, {})
        entries[key] = (revision, summary.due, summary.seq)
        heap = self._heaps.setdefault(queue, [])
        heapq.heappush(heap, (summary.due, summary.seq, revision, key))
        self._tidy(queue)

    def forget(self, queue: str, key: str, revision: int) -> None:
        """Drop the entry at ``revision`` whose record is gone without a word (a dropped queue)."""
        entries = self._entries.get(queue)
        if entries is not None and entries.get(key, (-1,))[0] == revision:
            del entries[key]
            self._tidy(queue)

    def drop(self, queue: str, before: int) -> None:
        """The queue was dropped at ``before``: forget its items of earlier revisions."""
        entries = self._entries.get(queue)
        if entries is None:
            return
        for key in [key for key, entry in entries.items() if entry[0] < before]:
            del entries[key]
        self._tidy(queue)

    def _tidy(self, queue: str) -> None:
        entries = self._entries.get(queue, {})
        heap = self._heaps.get(queue, [])
        if not entries:
            self._entries.pop(queue, None)
            self._heaps.pop(queue, None)
        elif len(heap) > _GARBAGE * len(entries) + 64:
            heap[:] = [(due, seq, rev, key) for key, (rev, due, seq) in entries.items()]
            heapq.heapify(heap)

    def _live(self, queue: str, top: tuple[float, int, int, str]) -> bool:
        entry = self._entries.get(queue, {}).get(top[3])
        return entry is not None and entry[0] == top[2]

    def due(
        self, queues: Sequence[str], now: float, limit: int, skip: set[tuple[str, str]]
    ) -> list[Candidate]:
        """Up to ``limit`` items due by ``now``, earliest first (by due, then seq)."""
        found: list[Candidate] = []
        for queue in queues:
            heap = self._heaps.get(queue)
            if not heap:
                continue
            taken: list[tuple[float, int, int, str]] = []
            wanted = 0
            while heap and heap[0][0] <= now and wanted < limit:
                top = heapq.heappop(heap)
                if not self._live(queue, top):
                    continue  # stale: dropped for good
                taken.append(top)
                if (queue, top[3]) not in skip:
                    found.append(Candidate(top[0], top[1], queue, top[3], top[2]))
                    wanted += 1
            for top in taken:  # they stay in the copy until their new records arrive
                heapq.heappush(heap, top)
        found.sort(key=lambda c: (c.due, c.seq))
        return found[:limit]

    def next_due(self, queues: Sequence[str]) -> float | None:
        """When the earliest live item of ``queues`` falls due."""
        earliest: float | None = None
        for queue in queues:
            heap = self._heaps.get(queue)
            while heap and not self._live(queue, heap[0]):
                heapq.heappop(heap)
            if heap and (earliest is None or heap[0][0] < earliest):
                earliest = heap[0][0]
        return earliest


class LiveItems:
    """A :class:`LiveIndex` fed from the bucket by an ordered, headers-only consumer."""

    def __init__(self, client: JetStreamClient, bucket: str) -> None:
        self.client = client
        self.stream = f"KV_{bucket}"
        self.prefix = f"$KV.{bucket}.i."
        self.index = LiveIndex()
        self._seen = 0  # the newest revision of an item record applied
        self._progress = asyncio.Event()
        self._sub: Subscription | None = None
        self._follow_again = False
        client.on_reconnect.append(self._reconnected)

    def _reconnected(self) -> None:
        # The consumer may be gone with the server: follow anew at the next barrier
        # (nats-py's ordered consumer would notice only after missed heartbeats).
        self._follow_again = True

    async def follow(self) -> None:
        """Start (or start again) the copy: every live record is delivered anew."""
        from nats.js.api import DeliverPolicy

        await self.stop()
        self.index.clear()
        self._seen = 0
        self._follow_again = False
        with engine_errors("follow the work queue"):
            js = self.client.conn.jetstream(timeout=self.client.timeout)
            self._sub = await js.subscribe(
                self.prefix + ">",
                stream=self.stream,
                cb=self._apply,
                ordered_consumer=True,
                deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
                headers_only=True,
            )

    async def stop(self) -> None:
        sub, self._sub = self._sub, None
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _apply(self, msg: Msg) -> None:
        assert msg.metadata.sequence is not None
        revision = msg.metadata.sequence.stream
        tokens = msg.subject[len(self.prefix) :].split(".")
        headers = msg.headers or {}
        if len(tokens) == 1:  # a drop marker: the queue's earlier items are gone
            self.index.drop(tokens[0], revision)
        elif len(tokens) == 2:
            summary = None
            value = headers.get(HEADER)
            if value is not None and "KV-Operation" not in headers:
                with contextlib.suppress(ValueError):
                    summary = parse_header(value, revision)
            self.index.apply(tokens[0], tokens[1], revision, summary)
        self._seen = max(self._seen, revision)
        self._progress.set()

    async def barrier(self) -> None:
        """Return once the copy holds every record written before the call."""
        if self._follow_again or self._sub is None:
            await self.follow()
        last = await self.client.direct_get(self.stream, {"last_by_subj": self.prefix + ">"})
        target = message_seq(last) if last is not None else 0
        while self._seen < target:
            # A copy made anew takes as long as the records it replays: the timeout
            # bounds a wait without progress, not the whole wait.
            self._progress.clear()
            try:
                async with asyncio.timeout(self.client.timeout):
                    await self._progress.wait()
            except TimeoutError as exc:
                self._follow_again = True  # the consumer may be lost: make it anew next time
                raise unavailable("did not deliver the work queue's records") from exc


__all__ = ["Candidate", "LiveIndex", "LiveItems"]

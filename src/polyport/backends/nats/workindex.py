"""Each node's copy of the live work items: what claims and ``next_due`` read.

A claim must find the earliest due of the pending and running items without
reading every item ever stored, and JetStream cannot order a bucket's keys by
a value. So every node follows the work queue's records with an ordered,
headers-only consumer (the record header holds status, due, seq and group:
see :mod:`.workrecords`) and keeps the live ones in memory, one heap per
queue by ``(due, seq)`` of the items a claim may take, and each ordering
group's items by ``seq`` (its head the first); done and dead items are
dropped from the copy as their records arrive. A claim then costs what it
takes, not what the queue holds.

The copy only proposes: a claim reads each candidate's record and settles it
with a compare-and-set on its revision, so a stale entry costs one read and
is skipped. It must not *miss* an item, so a claim first calls
:meth:`LiveItems.barrier`, which returns once the copy has applied every
record written before the call — an item enqueued on any node is seen by the
next claim anywhere. That is also what keeps a group to one item at a time:
an item is proposed only once the copy has seen every item of its group
before it finish, and the compare-and-set lets one claim take it. (A stale
copy errs the safe way: an item it still holds live holds its group back.)
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


class _Group:
    """The live items of one ordering group by seq; its head is the first."""

    __slots__ = ("heap", "members")

    def __init__(self) -> None:
        #: key → seq
        self.members: dict[str, int] = {}
        #: (seq, key); entries of keys no longer members are stale (removed lazily).
        self.heap: list[tuple[int, str]] = []

    def add(self, key: str, seq: int) -> None:
        if self.members.get(key) != seq:
            self.members[key] = seq
            heapq.heappush(self.heap, (seq, key))

    def remove(self, key: str) -> None:
        self.members.pop(key, None)
        if len(self.heap) > _GARBAGE * len(self.members) + 64:
            self.heap[:] = [(seq, key) for key, seq in self.members.items()]
            heapq.heapify(self.heap)

    def head(self) -> str | None:
        heap = self.heap
        while heap and self.members.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)
        return heap[0][1] if heap else None


class LiveIndex:
    """The live items of every queue, by due time (queues, keys and groups as their tokens).

    Only items a claim may take are proposed: those without a group, and the
    head of each ordering group (its live item of the smallest seq). The items
    behind a head are kept with their group, and offered (pushed on the due
    heap) when it becomes theirs: so a group's backlog costs a claim nothing,
    and ``next_due`` is the earliest of the items a claim may take.
    """

    def __init__(self) -> None:
        #: queue → key → (revision, due, seq, group)
        self._entries: dict[str, dict[str, tuple[int, float, int, str | None]]] = {}
        #: queue → heap of (due, seq, revision, key) of the items a claim may take;
        #: entries whose revision is no longer the key's, or whose key is no longer
        #: its group's head, are stale and skipped (removed lazily).
        self._heaps: dict[str, list[tuple[float, int, int, str]]] = {}
        #: queue → group → its live items
        self._groups: dict[str, dict[str, _Group]] = {}

    def clear(self) -> None:
        self._entries.clear()
        self._heaps.clear()
        self._groups.clear()

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
                self._remove(queue, key)
            return
        entries = self._entries.setdefault(queue, {})
        group = summary.group
        if old is not None and old[3] is not None and old[3] != group:
            self._remove(queue, key)  # a key enqueued anew, in another group
        entries[key] = (revision, summary.due, summary.seq, group)
        if group is None:
            self._offer(queue, key)
        else:
            members = self._groups.setdefault(queue, {}).setdefault(group, _Group())
            members.add(key, summary.seq)
            # It is offered if it is the head now (a new head: the one it displaced, by
            # coming back with an earlier seq, is stale on the heap).
            if members.head() == key:
                self._offer(queue, key)
        self._tidy(queue)

    def _offer(self, queue: str, key: str) -> None:
        """Push ``key``'s entry, as it is now, on its queue's due heap."""
        revision, due, seq, _ = self._entries[queue][key]
        heapq.heappush(self._heaps.setdefault(queue, []), (due, seq, revision, key))

    def _remove(self, queue: str, key: str) -> None:
        """Forget ``key``; if it led its group, offer the group's next item."""
        entries = self._entries[queue]
        group = entries.pop(key)[3]
        if group is None:
            return
        groups = self._groups[queue]
        members = groups[group]
        before = members.head()
        members.remove(key)
        after = members.head()
        if after is None:
            del groups[group]
        elif after != before:
            self._offer(queue, after)

    def forget(self, queue: str, key: str, revision: int) -> None:
        """Drop the entry at ``revision`` whose record is gone without a word (a dropped queue)."""
        entries = self._entries.get(queue)
        if entries is not None and entries.get(key, (-1,))[0] == revision:
            self._remove(queue, key)
            self._tidy(queue)

    def drop(self, queue: str, before: int) -> None:
        """The queue was dropped at ``before``: forget its items of earlier revisions."""
        entries = self._entries.get(queue)
        if entries is None:
            return
        for key in [key for key, entry in entries.items() if entry[0] < before]:
            del entries[key]
        groups: dict[str, _Group] = {}
        for key, (_, _, seq, group) in entries.items():
            if group is not None:
                groups.setdefault(group, _Group()).add(key, seq)
        self._groups[queue] = groups
        self._heaps[queue] = []  # offered anew below
        self._tidy(queue, rebuild=True)

    def _tidy(self, queue: str, *, rebuild: bool = False) -> None:
        entries = self._entries.get(queue, {})
        heap = self._heaps.get(queue, [])
        if not entries:
            self._entries.pop(queue, None)
            self._heaps.pop(queue, None)
            self._groups.pop(queue, None)
        elif rebuild or len(heap) > _GARBAGE * len(entries) + 64:
            groups = self._groups.get(queue, {})
            heap[:] = [
                (due, seq, rev, key)
                for key, (rev, due, seq, group) in entries.items()
                if group is None or groups[group].head() == key
            ]
            heapq.heapify(heap)
            self._heaps[queue] = heap

    def _live(self, queue: str, top: tuple[float, int, int, str]) -> bool:
        """Whether a heap entry is the item as it is now, and an item a claim may take."""
        entry = self._entries.get(queue, {}).get(top[3])
        if entry is None or entry[0] != top[2]:
            return False
        group = entry[3]
        return group is None or self._groups[queue][group].head() == top[3]

    def due(
        self, queues: Sequence[str], now: float, limit: int, skip: set[tuple[str, str]]
    ) -> list[Candidate]:
        """Up to ``limit`` items a claim may take due by ``now``, earliest first (by due,
        then seq): at most one of each group."""
        found: list[Candidate] = []
        for queue in queues:
            heap = self._heaps.get(queue)
            if not heap:
                continue
            taken: list[tuple[float, int, int, str]] = []
            seen: set[str] = set()
            wanted = 0
            while heap and heap[0][0] <= now and wanted < limit:
                top = heapq.heappop(heap)
                if top[3] in seen or not self._live(queue, top):
                    continue  # stale, or offered twice: dropped for good
                seen.add(top[3])
                taken.append(top)
                if (queue, top[3]) not in skip:
                    found.append(Candidate(top[0], top[1], queue, top[3], top[2]))
                    wanted += 1
            for top in taken:  # they stay in the copy until their new records arrive
                heapq.heappush(heap, top)
        found.sort(key=lambda c: (c.due, c.seq))
        return found[:limit]

    def next_due(self, queues: Sequence[str]) -> float | None:
        """When the earliest live item of ``queues`` that a claim may take falls due."""
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

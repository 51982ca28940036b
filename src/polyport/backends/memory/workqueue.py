"""The leased work queue in this process's memory: the :class:`~polyport.core.workqueue.WorkQueue`
port for tests and for nodes that need no durability.

Items live in one dict per queue, in insertion order (so ``seq`` order).
Claims scan the queues they name, and find each ordering group's head (its
first unfinished item) on the way: fine for the thousands of items a test or
a demo holds, not for millions (use a real engine). Several nodes of one
process share an instance, as they would share a network engine.
"""

from __future__ import annotations

import dataclasses
import itertools
import secrets
from collections.abc import Iterator, Sequence

from polyport.core.workqueue import WORK_STATUSES, WorkItem, WorkStatus, check_name

_LIVE = ("pending", "running")


class MemoryWorkQueue:
    """Queues of work items in a dict, lost when the process ends."""

    def __init__(self) -> None:
        self._queues: dict[str, dict[str, WorkItem]] = {}
        self._seq = itertools.count(1)

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def _current(self, item: WorkItem) -> WorkItem | None:
        """The stored item, if ``item``'s lease is still the one holding it."""
        found = self._queues.get(item.queue, {}).get(item.key)
        if found is None or found.status != "running" or found.lease != item.lease:
            return None
        return found

    def _put(self, item: WorkItem) -> None:
        self._queues[item.queue][item.key] = item

    def _claimable(self, queues: Sequence[str]) -> Iterator[WorkItem]:
        """The live items of ``queues`` a claim may take, due or not: those without a
        group, and the first live one (by seq) of each group."""
        for queue in dict.fromkeys(queues):
            heads: set[str] = set()
            for item in self._queues.get(queue, {}).values():  # in seq order
                if item.status not in _LIVE:
                    continue
                if item.group is None:
                    yield item
                elif item.group not in heads:
                    heads.add(item.group)
                    yield item

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
        items = self._queues.setdefault(queue, {})
        if key in items:
            return False
        items[key] = WorkItem(
            queue=queue,
            key=key,
            seq=next(self._seq),
            payload=bytes(payload),
            status="pending",
            attempts=0,
            created=now,
            due=now if due is None else due,
            lease=None,
            claimed=None,
            finished=None,
            error=None,
            result=None,
            group=group,
        )
        return True

    async def claim(
        self,
        queues: Sequence[str],
        *,
        now: float,
        limit: int,
        lease: float,
        owner: str | None = None,
    ) -> list[WorkItem]:
        due = sorted(
            (item for item in self._claimable(queues) if item.due <= now),
            key=lambda item: (item.due, item.seq),
        )[: max(0, limit)]
        claimed = []
        for item in due:
            held = dataclasses.replace(
                item,
                status="running",
                attempts=item.attempts + 1,
                due=now + lease,
                lease=secrets.token_hex(8),
                claimed=now,
                owner=owner,
            )
            self._put(held)
            claimed.append(held)
        return claimed

    async def extend(self, items: Sequence[WorkItem], until: float) -> int:
        extended = 0
        for item in items:
            found = self._current(item)
            if found is not None:
                self._put(dataclasses.replace(found, due=until))
                extended += 1
        return extended

    async def ack(self, item: WorkItem, *, now: float, result: bytes | None = None) -> bool:
        found = self._current(item)
        if found is None:
            return False
        self._put(
            dataclasses.replace(
                found,
                status="done",
                lease=None,
                owner=None,
                finished=now,
                error=None,
                result=None if result is None else bytes(result),
            )
        )
        return True

    async def retry(self, item: WorkItem, *, due: float, error: str) -> bool:
        found = self._current(item)
        if found is None:
            return False
        self._put(
            dataclasses.replace(
                found, status="pending", due=due, lease=None, owner=None, error=error
            )
        )
        return True

    async def release(self, item: WorkItem, *, now: float) -> bool:
        found = self._current(item)
        if found is None:
            return False
        self._put(
            dataclasses.replace(
                found,
                status="pending",
                due=now,
                lease=None,
                owner=None,
                attempts=max(0, found.attempts - 1),
            )
        )
        return True

    async def dead_letter(self, item: WorkItem, *, now: float, error: str) -> bool:
        found = self._current(item)
        if found is None:
            return False
        self._put(
            dataclasses.replace(
                found, status="dead", lease=None, owner=None, finished=now, error=error
            )
        )
        return True

    async def redrive(self, queue: str, key: str, *, now: float, replay: bool = False) -> bool:
        found = self._queues.get(queue, {}).get(key)
        allowed = ("dead", "pending", "done") if replay else ("dead", "pending")
        if found is None or found.status not in allowed:
            return False
        fresh = found.status != "pending"
        self._put(
            dataclasses.replace(
                found,
                status="pending",
                due=now,
                attempts=0 if fresh else found.attempts,
                finished=None,
                result=None if fresh else found.result,
            )
        )
        return True

    async def get(self, queue: str, key: str) -> WorkItem | None:
        return self._queues.get(queue, {}).get(key)

    async def items(
        self,
        queue: str,
        *,
        status: WorkStatus | None = None,
        before: int | None = None,
        limit: int = 50,
    ) -> list[WorkItem]:
        found = [
            item
            for item in reversed(self._queues.get(queue, {}).values())
            if (status is None or item.status == status) and (before is None or item.seq < before)
        ]
        return found[: max(0, limit)]

    async def counts(self, queue: str) -> dict[WorkStatus, int]:
        counts: dict[WorkStatus, int] = dict.fromkeys(WORK_STATUSES, 0)
        for item in self._queues.get(queue, {}).values():
            counts[item.status] += 1
        return counts

    async def next_due(self, queues: Sequence[str]) -> float | None:
        return min((item.due for item in self._claimable(queues)), default=None)

    async def purge(self, queue: str, before: float) -> int:
        items = self._queues.get(queue, {})
        gone = [
            key
            for key, item in items.items()
            if item.status in ("done", "dead") and item.finished is not None
            if item.finished < before
        ]
        for key in gone:
            del items[key]
        return len(gone)

    async def drop(self, queue: str) -> int:
        return len(self._queues.pop(queue, {}))


__all__ = ["MemoryWorkQueue"]

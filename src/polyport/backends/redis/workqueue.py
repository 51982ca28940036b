"""The leased work queue on Redis: the :class:`~polyport.core.workqueue.WorkQueue` port
that every node pointed at the same Redis and prefix shares.

**Structure** (the keys are listed in :mod:`.workqueue_scripts`). Each item is
a hash; each queue keeps three kinds of sorted set beside them: its pending and
running items by due time, its items by ``seq`` (one set per status), and its
done and dead items by finish time. So:

* a claim reads the lowest scores of each named queue's due set and claims
  the earliest of them all: O(queues · limit · log n), however many items
  wait or are finished;
* an ordering group keeps its unfinished items in a sorted set by ``seq``, and
  only its head (the first) is in the due set: items held back by their group
  cost a claim nothing, and the scripts that change a group's head find the
  next one in O(log n);
* a listing reads the highest seqs below the cursor of each status it wants,
  counts are the status sets' sizes, ``next_due`` the due sets' lowest scores;
* a purge walks the finish-time set from its oldest entry, a batch per call;
* a drop starts the queue's next generation (the generation is part of every
  key of the queue), so the dropped items are out of reach in one step and
  deleted afterwards, a batch per call; deletion a crash interrupted is
  finished by the next drop on any node.

Queue names are written into key names with their length before them (see
:mod:`.workqueue_scripts`), so ``a:b`` and ``{a}`` are ordinary names, and
every key starts with the hash tag ``{prefix}``: in a Redis Cluster all of
them are in one slot, as the scripts that use several at once need.

**Atomicity: Lua.** Every change of state is one script: it reads the item,
checks that it may change (a known key for enqueue, the lease token for
settling), and changes the item and its sets together. A script runs alone in
Redis, so of claims racing for an item exactly one wins, and a node whose lease
was claimed over is refused, never overwriting the node that took over. Lease
tokens are a random salt per claim call and the item's place in it, since Lua in
Redis has no randomness of its own.

**Round trips.** A node's calls go through one
:class:`~polyport.backends.redis.pipeline.ScriptPipeline`: alone, a call is
one ``EVALSHA``; made while another is in flight (a worker acking the items of
its claim at once), they go together in the next pipeline, on one connection.
Scripts answer items as one string each call, parsed here (see
:mod:`.workqueue_scripts`).

**Times** are sent as Python's ``repr`` of the float and kept as that string
in the item's hash, so they read back exactly (``T0 + 60.0`` is the same float
after the round trip); sorted-set scores are the same doubles.

**Durable** means what Redis acknowledged: every method returns once its
script's reply arrived (see :mod:`polyport.backends.redis.eventlog` for what
each persistence setting makes of that; Redis must not evict these keys either:
``maxmemory-policy noeviction``). A call that fails on the wire (a
timeout, a dropped connection) raises :class:`~polyport.core.errors.Unavailable`
although Redis may have run it: an enqueue then answers False when tried again,
and a claim whose reply was lost leaves its items running until their lease
ends, when they are claimed again — at least once, never lost.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from polyport.backends.redis import workqueue_scripts as scripts
from polyport.backends.redis.client import Script, key_base
from polyport.backends.redis.pipeline import ScriptedClient
from polyport.core.workqueue import WORK_STATUSES, WorkItem, WorkStatus, check_name

if TYPE_CHECKING:
    from redis.asyncio import Redis

#: Items a purge or the deletion after a drop forgets per script call: a call
#: holds Redis for a few milliseconds at most, whatever the queue's size.
BATCH = 1000

_WHAT = "the work queue (Redis)"
_STATUS: dict[bytes, WorkStatus] = {status.encode(): status for status in WORK_STATUSES}

_ENQUEUE = Script(scripts.ENQUEUE)
_CLAIM = Script(scripts.CLAIM)
_EXTEND = Script(scripts.EXTEND)
_SETTLE = Script(scripts.SETTLE)
_REDRIVE = Script(scripts.REDRIVE)
_GET = Script(scripts.GET)
_ITEMS = Script(scripts.ITEMS)
_COUNTS = Script(scripts.COUNTS)
_NEXT_DUE = Script(scripts.NEXT_DUE)
_PURGE = Script(scripts.PURGE)
_DROP = Script(scripts.DROP)
_CLEAN = Script(scripts.CLEAN)
_SCRIPTS = [_ENQUEUE, _CLAIM, _EXTEND, _SETTLE, _REDRIVE, _GET]
_SCRIPTS += [_ITEMS, _COUNTS, _NEXT_DUE, _PURGE, _DROP, _CLEAN]


def _time(value: float) -> str:
    """A time as the scripts keep it: the shortest text that reads back as the same float."""
    return repr(float(value))


def _time_or_none(value: bytes) -> float | None:
    return None if value == b"-" else float(value)


def _items(queues: Sequence[str], page: bytes | None) -> list[WorkItem]:
    """The items of a script's answer (see :mod:`.workqueue_scripts`); ``queues`` by number."""
    out: list[WorkItem] = []
    pos, end = 0, len(page or b"")
    while page and pos < end:
        line = page.index(b"\n", pos)
        (number, key_length, payload_length, status, attempts, seq, created, due, lease,
         claimed, finished, error_length, result_length, owner_length, group_length,
         ) = page[pos:line].split(b" ")  # fmt: skip
        key_end = line + 1 + int(key_length)
        payload_end = key_end + int(payload_length)
        error_end = payload_end + (0 if error_length == b"-" else int(error_length))
        result_end = error_end + (0 if result_length == b"-" else int(result_length))
        owner_end = result_end + (0 if owner_length == b"-" else int(owner_length))
        pos = owner_end + (0 if group_length == b"-" else int(group_length))
        out.append(
            WorkItem(
                queue=queues[int(number) - 1],
                key=page[line + 1 : key_end].decode(),
                seq=int(seq),
                payload=page[key_end:payload_end],
                status=_STATUS[status],
                attempts=int(attempts),
                created=float(created),
                due=float(due),
                lease=None if lease == b"-" else lease.decode(),
                claimed=_time_or_none(claimed),
                finished=_time_or_none(finished),
                error=None if error_length == b"-" else page[payload_end:error_end].decode(),
                result=None if result_length == b"-" else page[error_end:result_end],
                owner=None if owner_length == b"-" else page[result_end:owner_end].decode(),
                group=None if group_length == b"-" else page[owner_end:pos].decode(),
            )
        )
    return out


class RedisWorkQueue:
    """The :class:`~polyport.core.workqueue.WorkQueue` kept in Redis, shared by nodes.

    ``redis`` is a URL (the queue makes its own client and closes it when its
    last user closes it) or a redis-py asyncio client (left open). Queues with
    the same ``prefix`` on the same Redis are one store; a prefix may be shared
    with a :class:`~polyport.backends.redis.RedisEventLog` (their keys differ).
    """

    def __init__(
        self, redis: str | Redis = "redis://127.0.0.1:6379/0", *, prefix: str = "polyport"
    ) -> None:
        self._base = key_base(prefix)
        self._gens = self._base + ":wq:gens"
        self._redis = ScriptedClient(redis, _WHAT, _SCRIPTS)
        self._client = self._redis.client
        self._calls = self._redis.calls

    async def open(self) -> None:
        """Load the scripts into Redis (which checks that it answers). Raises Unavailable."""
        await self._redis.open()

    async def close(self) -> None:
        """Close the client this queue made, once every user that opened it has closed it."""
        await self._redis.close()

    async def _run(self, script: Script, *args: str | bytes | int) -> Any:
        return await self._calls(script, 1, self._gens, self._base, *args)

    # -- enqueue and claim ----------------------------------------------------------

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
        added = await self._run(
            _ENQUEUE,
            queue,
            key,
            bytes(payload),
            _time(now),
            _time(now if due is None else due),
            group or "",  # a group is never empty: "" is none
        )
        return bool(added)

    async def claim(
        self,
        queues: Sequence[str],
        *,
        now: float,
        limit: int,
        lease: float,
        owner: str | None = None,
    ) -> list[WorkItem]:
        names = list(dict.fromkeys(queues))
        if not names or limit <= 0:
            return []
        named = (0, "") if owner is None else (1, owner)
        page = await self._run(
            _CLAIM, _time(now), _time(now + lease), limit, secrets.token_hex(8), *named, *names
        )
        return _items(names, page)

    # -- settling -------------------------------------------------------------------

    async def extend(self, items: Sequence[WorkItem], until: float) -> int:
        held = [
            value for item in items if item.lease for value in (item.queue, item.key, item.lease)
        ]
        if not held:
            return 0
        return int(await self._run(_EXTEND, _time(until), *held))

    async def _settle(self, item: WorkItem, outcome: str, time: float, *text: str | bytes) -> bool:
        if item.lease is None:
            return False
        return bool(
            await self._run(_SETTLE, item.queue, item.key, item.lease, outcome, _time(time), *text)
        )

    async def ack(self, item: WorkItem, *, now: float, result: bytes | None = None) -> bool:
        return await self._settle(item, "ack", now, *(() if result is None else (bytes(result),)))

    async def retry(self, item: WorkItem, *, due: float, error: str) -> bool:
        return await self._settle(item, "retry", due, error)

    async def release(self, item: WorkItem, *, now: float) -> bool:
        return await self._settle(item, "release", now)

    async def dead_letter(self, item: WorkItem, *, now: float, error: str) -> bool:
        return await self._settle(item, "dead", now, error)

    async def redrive(self, queue: str, key: str, *, now: float, replay: bool = False) -> bool:
        return bool(await self._run(_REDRIVE, queue, key, _time(now), int(replay)))

    # -- reading --------------------------------------------------------------------

    async def get(self, queue: str, key: str) -> WorkItem | None:
        found = _items((queue,), await self._run(_GET, queue, key))
        return found[0] if found else None

    async def items(
        self,
        queue: str,
        *,
        status: WorkStatus | None = None,
        before: int | None = None,
        limit: int = 50,
    ) -> list[WorkItem]:
        if limit <= 0 or (status is not None and status not in WORK_STATUSES):
            return []
        page = await self._run(
            _ITEMS, queue, status or "", "" if before is None else int(before), limit
        )
        return _items((queue,), page)

    async def counts(self, queue: str) -> dict[WorkStatus, int]:
        found = await self._run(_COUNTS, queue)
        return dict(zip(WORK_STATUSES, map(int, found), strict=True))

    async def next_due(self, queues: Sequence[str]) -> float | None:
        names = list(dict.fromkeys(queues))
        if not names:
            return None
        found = await self._run(_NEXT_DUE, *names)
        return None if found is None else float(found)

    # -- forgetting -----------------------------------------------------------------

    async def purge(self, queue: str, before: float) -> int:
        """Forget done and dead items that finished before ``before``, ``BATCH`` per
        script call: each batch is atomic, a purge of more is several steps."""
        purged = 0
        while True:
            gone = int(await self._run(_PURGE, queue, _time(before), BATCH))
            purged += gone
            if gone < BATCH:
                return purged

    async def drop(self, queue: str) -> int:
        """Forget the queue at once (one script starts its next generation), then delete
        its items a batch per call, and whatever an earlier drop left undeleted."""
        had = int(await self._run(_DROP, queue))
        while await self._run(_CLEAN, BATCH):
            pass
        return had


__all__ = ["RedisWorkQueue"]

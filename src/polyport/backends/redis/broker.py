"""Message queues on Redis Streams: ``queues.broker = redis://host:port/db?prefix=NAME``.

Not the work queue on Redis (``--engine redis://``, hashes and sorted sets that
only polyport reads): here each queue is a **stream** other clients can write
and read, ``{prefix}:queue:{name}`` (prefix ``polyport`` by default), in the
entry format of :mod:`.broker_entries`, consumed by one consumer group,
``polyport``, shared by every node; each node is a consumer of it named by its
owner. The keys beside the stream, and the scripts, are in :mod:`.broker_scripts`.

**Sending** is ``XADD`` in a Lua script that first checks the message id
(``Q:ids``): a duplicate stores nothing, as in the work queue. An id is known
while its message waits, runs or is a dead letter, and for the queue's
``dedup_window`` after its acknowledgement; then :meth:`expire` forgets it.
(Not ``SET NX EX`` per id: a message delayed or held back longer than the window
must keep its id, and a purge must forget them all, which needs them in one set.)

**Receiving** is a script too, run by any node (so no single mover has to be
alive): it moves the delayed messages that are due into the stream, takes over
the entries whose lease ran out, then reads new entries with ``XREADGROUP``.
When none is ready, the node waits in ``XREAD BLOCK`` on the stream after its
last entry (a read that changes nothing), so a send from any node wakes it at
once; it looks again at the next delay or lease end the script saw, and every
``poll_interval`` at most. A retry or delayed send of this node wakes it too.

**Leases** are the PEL: the entry is pending for the node that received it, and
its delivery count counts the receipts. The port lets each receive choose its
lease and each extension renew it, so when a lease ends is kept beside the PEL
(``Q:leases``, entry ID → end); a receive takes over the entries past their end
with ``XCLAIM`` (which counts one more delivery). This is ``XAUTOCLAIM``'s job
with the holder's lease instead of one ``min-idle-time`` for all: a node
receiving with a long lease must not wait that long for a short lease that ran
out, nor take over a long one early. :meth:`extend` moves the end and resets the
entry's idle time (``XCLAIM … JUSTID``, which counts nothing). A delivery is
settled only by the consumer whose receipt it is, checked in the script: the
PEL must name this node *and* the delivery count of that receipt, so a node
whose lease ran out is refused (False) even when it took the entry back itself.

**Attempts** are the entry's ``attempts`` field (receipts before the entry was
added) plus its delivery count. A retry acknowledges the entry and adds the
message again, delayed, with its attempts and error (one script); a release
adds it again at once with the receipt not counted.

**Ordering keys**: only one message of a key — its head — is in the stream or
delayed at a time; the others wait in the key's list (``Q:k:{key}``) in order,
and when the head is acknowledged or dead the next one takes its place. So
nodes never hold two of a key, and a retried head holds its key back. An entry
another client added with a ``key`` field whose key has another head goes
behind it when it is read. A redriven dead letter of a key goes behind the
key's messages. A head whose entry another client deleted from the stream is
lost with it, and the next message of its key takes its place at the key's
next send or read (the scripts check that a key's head still exists).

**Dead letters** are a second stream, ``{stream}:dead`` (attempts, last error,
``sent`` and ``died``), listed in its order (the cursor is its entry ID),
redriven by id or all; they stay until redriven or purged.

**Trimming**: settling an entry deletes it (``XACK`` and ``XDEL`` in one
script), so the stream holds exactly the messages ready or in flight and
nothing acknowledged accumulates. The price: another consumer group reading
the same stream sees only what is still there when it reads — in practice a
queue polyport does not consume, or a tap that keeps up. (``XTRIM MINID`` would
keep acknowledged entries behind the oldest one in flight, so one slow handler
would hold back trimming of the whole stream.)

**Stats**: waiting = stream entries not in the PEL, plus delayed, plus behind
their key; in flight = the PEL's size; dead = the dead stream's length.

**Durable** means what Redis acknowledged (see
:mod:`polyport.backends.redis.eventlog` for each persistence setting: ``appendonly
yes`` with ``appendfsync always`` for acknowledged sends to survive a crash of
the host, ``maxmemory-policy noeviction`` so a full Redis refuses instead of
evicting queues). A call that fails on the wire raises
:class:`~polyport.core.errors.Unavailable` although Redis may have run it: a
send tried again with its id then answers False (a duplicate, never a loss); a
receive whose reply was lost leaves its entries leased to this node until the
lease ends, when they are received again. Consumers keep receiving once Redis
answers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import re
import secrets
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from polyport.backends.redis import broker_scripts as scripts
from polyport.backends.redis.broker_entries import fields_of, read_entry
from polyport.backends.redis.client import TIMEOUT, Script, engine_errors, key_base
from polyport.backends.redis.pipeline import ScriptedClient
from polyport.core.broker import (
    Broker,
    Delivery,
    OutgoingMessage,
    QueuedMessage,
    QueueOptions,
    QueueStats,
)
from polyport.core.errors import InvalidArgument

if TYPE_CHECKING:
    from redis.asyncio import Redis

#: The consumer group of every node.
GROUP = "polyport"
#: Delayed messages a receive moves into the stream at most, ids an expire call forgets,
#: dead letters a redrive-all call revives.
BATCH = 500
#: The longest a receive blocks in one ``XREAD`` (below the client's socket timeout).
MAX_BLOCK = 2.0
#: A consumer of the group that holds nothing and was quiet this long (ms) is deleted.
QUIET_CONSUMER_MS = 86_400_000

_WHAT = "the message broker (Redis Streams)"
_QUEUE = re.compile(r"^[A-Za-z0-9_.-]{1,200}$")
_ENTRY_ID = re.compile(r"^\d+-\d+$")
_SEND = Script(scripts.SEND)
_RECEIVE = Script(scripts.RECEIVE)
_EXTEND = Script(scripts.EXTEND)
_SETTLE = Script(scripts.SETTLE)
_REDRIVE = Script(scripts.REDRIVE)
_PEEK = Script(scripts.PEEK)
_STATS = Script(scripts.STATS)
_PURGE = Script(scripts.PURGE)
_EXPIRE = Script(scripts.EXPIRE)
_SCRIPTS = [_SEND, _RECEIVE, _EXTEND, _SETTLE, _REDRIVE, _PEEK, _STATS, _PURGE, _EXPIRE]


def stream_key(prefix: str, queue: str) -> str:
    """The stream of ``queue``: ``{prefix}:queue:{queue}``. InvalidArgument for a queue
    name beyond letters, digits and ``_.-`` (a ``:`` could name another queue's keys)."""
    if not _QUEUE.fullmatch(queue):
        raise InvalidArgument(f"queue name {queue[:80]!r}: letters, digits and _.- only")
    return f"{key_base(prefix)}:queue:{queue}"


def _ms(seconds: float) -> int:
    """Whole milliseconds, rounded up: a delay never ends early."""
    return max(0, math.ceil(seconds * 1000))


@dataclass(frozen=True, slots=True)
class _Receipt:
    """What settles a delivery: its entry and the delivery count it was received with."""

    entry: str
    count: int


class RedisStreamsBroker:
    """A :class:`~polyport.core.broker.Broker` whose queues are Redis streams, shared by
    every node on the same Redis and prefix.

    ``redis`` is a URL (the broker makes its own client and closes it when its
    last user closes it) or a redis-py asyncio client (left open). ``owner``
    names this node's consumer in the group: unique per node (the node passes
    its own; by default host, process and a random part).
    """

    kind = "redis-streams"

    def __init__(
        self,
        redis: str | Redis = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "polyport",
        owner: str | None = None,
        poll_interval: float = 1.0,
    ) -> None:
        key_base(prefix)  # ConfigError now for a prefix that cannot be one
        self.prefix = prefix
        self.owner = owner or f"{socket.gethostname()}/{os.getpid()}/{secrets.token_hex(4)}"
        self.poll_interval = poll_interval
        self._redis = ScriptedClient(redis, _WHAT, _SCRIPTS)
        self._client = self._redis.client
        self._calls = self._redis.calls
        self._options: dict[str, QueueOptions] = {}
        #: Queue → set when this node made something due sooner than a waiting receive knows.
        self._changed: dict[str, asyncio.Event] = {}

    async def open(self) -> None:
        """Load the scripts into Redis (which checks that it answers). Raises Unavailable."""
        await self._redis.open()

    async def close(self) -> None:
        """Close the client this broker made, once every user that opened it has closed it."""
        await self._redis.close()

    async def declare(self, queue: QueueOptions) -> None:
        """Create the stream and its consumer group (reading from its first entry, so what
        other clients added before any node started is received too)."""
        from redis.exceptions import ResponseError

        stream = stream_key(self.prefix, queue.name)
        with engine_errors(_WHAT):
            try:
                await self._client.xgroup_create(stream, GROUP, id="0", mkstream=True)
            except ResponseError as exc:
                if not str(exc).startswith("BUSYGROUP"):
                    raise
        self._options[queue.name] = queue

    async def _run(self, script: Script, queue: str, *args: str | bytes | int) -> Any:
        return await self._calls(script, 1, stream_key(self.prefix, queue), *args)

    # -- producing ------------------------------------------------------------------------

    async def send(self, queue: str, messages: Sequence[OutgoingMessage]) -> list[bool]:
        if not messages:
            return []
        args: list[str | bytes | int] = []
        for message in messages:
            fields = fields_of(message)
            args += [message.id, _ms(message.delay), len(fields), *fields]
        stored = [bool(added) for added in await self._run(_SEND, queue, *args)]
        if any(m.delay > 0 for m in messages):
            self._poke(queue)
        return stored

    # -- consuming ------------------------------------------------------------------------

    async def receive(self, queue: str, *, limit: int, lease: float, wait: float) -> list[Delivery]:
        if limit <= 0:
            return []
        changed = self._changed.setdefault(queue, asyncio.Event())
        deadline = time.monotonic() + wait
        while True:
            changed.clear()
            reply = await self._run(_RECEIVE, queue, self.owner, limit, _ms(lease), BATCH)
            last, wake, again, *found = reply
            if found:
                return [_delivery(queue, item) for item in found]
            if again:
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                return []
            block = min(left, self.poll_interval, MAX_BLOCK)
            if wake >= 0:
                block = min(block, wake / 1000)
            await self._wait(queue, last, block, changed)

    async def _wait(self, queue: str, last: bytes, seconds: float, changed: asyncio.Event) -> None:
        """Until an entry is added after ``last``, this node pokes, or ``seconds`` pass."""
        if seconds < 0.001:
            return  # BLOCK 0 would wait forever
        stream = stream_key(self.prefix, queue)
        read = asyncio.ensure_future(self._read_after(stream, last, _ms(seconds)))
        poked = asyncio.ensure_future(changed.wait())
        try:
            await asyncio.wait(
                (read, poked), timeout=seconds + TIMEOUT, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for task in (read, poked):
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poked
            try:
                await read
            except asyncio.CancelledError:
                # Ours (a poke came first: redis-py drops the cancelled read's connection),
                # or the caller's, which goes on.
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise

    async def _read_after(self, stream: str, last: bytes, block_ms: int) -> None:
        with engine_errors(_WHAT):
            await self._client.xread({stream: last}, count=1, block=block_ms)

    async def extend(self, deliveries: Sequence[Delivery], lease: float) -> int:
        by_queue: dict[str, list[str | int]] = {}
        for delivery in deliveries:
            receipt = _receipt(delivery)
            by_queue.setdefault(delivery.queue, []).extend((receipt.entry, receipt.count))
        renewed = 0
        for queue, held in by_queue.items():
            renewed += int(await self._run(_EXTEND, queue, self.owner, _ms(lease), *held))
        return renewed

    async def _settle(self, delivery: Delivery, outcome: str, *args: str | int) -> bool:
        receipt = _receipt(delivery)
        return bool(
            await self._run(
                _SETTLE, delivery.queue, receipt.entry, self.owner, receipt.count, outcome, *args
            )
        )

    async def ack(self, delivery: Delivery) -> bool:
        window = (self._options.get(delivery.queue) or QueueOptions(delivery.queue)).dedup_window
        return await self._settle(delivery, "ack", _ms(window))

    async def retry(self, delivery: Delivery, *, delay: float, error: str) -> bool:
        retried = await self._settle(delivery, "retry", _ms(max(0.0, delay)), error)
        if retried:
            self._poke(delivery.queue)
        return retried

    async def release(self, delivery: Delivery) -> bool:
        return await self._settle(delivery, "release")

    async def dead_letter(self, delivery: Delivery, *, error: str) -> bool:
        return await self._settle(delivery, "dead", error)

    # -- operating ------------------------------------------------------------------------

    async def dead(
        self, queue: str, *, limit: int = 50, after: str | None = None
    ) -> list[QueuedMessage]:
        if limit <= 0:
            return []
        start = f"({after}" if after is not None and _ENTRY_ID.fullmatch(after) else "-"
        with engine_errors(_WHAT):
            # (entry ID, {field: value}) pairs, which redis-py's annotation does not say
            page: Any = await self._client.xrange(
                stream_key(self.prefix, queue) + ":dead", min=start, max="+", count=limit
            )
        return [_listed(queue, "dead", entry_id, 0, None, fields) for entry_id, fields in page]

    async def redrive(self, queue: str, ids: Sequence[str] | None = None) -> int:
        if ids is not None:
            count = 0
            for start in range(0, len(ids), BATCH):
                count += int(await self._run(_REDRIVE, queue, "ids", *ids[start : start + BATCH]))
            return count
        count = 0
        while True:
            revived = int(await self._run(_REDRIVE, queue, "all", BATCH))
            count += revived
            if revived < BATCH:
                return count

    async def peek(self, queue: str, *, limit: int = 50) -> list[QueuedMessage]:
        if limit <= 0:
            return []
        found = await self._run(_PEEK, queue, limit)
        return [
            _listed(queue, state.decode(), cursor, count, due, fields)
            for state, cursor, count, due, fields in found
        ]

    async def stats(self, queue: str) -> QueueStats:
        waiting, in_flight, dead = await self._run(_STATS, queue)
        return QueueStats(waiting=int(waiting), in_flight=int(in_flight), dead=int(dead))

    async def purge(self, queue: str) -> int:
        return int(await self._run(_PURGE, queue))

    async def expire(self, queue: str) -> int:
        """Forget the ids whose dedup window has passed (and the group's consumers of nodes
        long gone that hold nothing)."""
        forgotten = 0
        while True:
            gone = int(await self._run(_EXPIRE, queue, BATCH, QUIET_CONSUMER_MS))
            forgotten += gone
            if gone < BATCH:
                return forgotten

    def _poke(self, queue: str) -> None:
        changed = self._changed.get(queue)
        if changed is not None:
            changed.set()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _delivery(queue: str, item: list[Any]) -> Delivery:
    entry_id, count, lease_end, fields = _text(item[0]), int(item[1]), int(item[2]), item[3]
    entry = read_entry(entry_id, fields)
    return Delivery(
        queue=queue,
        id=entry.id,
        body=entry.body,
        headers=entry.headers,
        key=entry.key,
        attempt=entry.attempts + count,
        sent=entry.sent,
        lease_until=lease_end / 1000,
        error=entry.error,
        token=_Receipt(entry_id, count),
    )


def _receipt(delivery: Delivery) -> _Receipt:
    receipt: Any = delivery.token
    if not isinstance(receipt, _Receipt):
        raise TypeError("this delivery was not received from a Redis Streams broker")
    return receipt


def _listed(
    queue: str,
    state: str,
    cursor: bytes | str,
    count: int,
    due: int | None,
    fields: Sequence[bytes] | Mapping[bytes, bytes],
) -> QueuedMessage:
    cursor = _text(cursor)
    entry = read_entry(cursor if _ENTRY_ID.fullmatch(cursor) else "", fields)
    if state == "dead":
        when = None
    elif due is not None and due >= 0:
        when = due / 1000
    else:
        when = None
    return QueuedMessage(
        queue=queue,
        id=entry.id,
        body=entry.body,
        headers=entry.headers,
        key=entry.key,
        state=state,
        attempts=entry.attempts + int(count),
        sent=entry.sent,
        due=when,
        died=entry.died if state == "dead" else None,
        error=entry.error,
        cursor=cursor,
    )


def build(url: str, options: dict[str, str], *, owner: str, poll_interval: float) -> Broker:
    """The broker at ``url``, its streams under ``{prefix}`` (``polyport`` by default)."""
    return RedisStreamsBroker(
        url, prefix=options.get("prefix", "polyport"), owner=owner, poll_interval=poll_interval
    )


__all__ = ["GROUP", "RedisStreamsBroker", "build", "stream_key"]

"""Message queues as native NATS JetStream work queues: ``queues.broker = nats://…``.

    polyport serve app:svc --broker 'nats://127.0.0.1:4222?prefix=shop'

Not the NATS *engine* (``--engine nats://``), whose work queue is records in a
KV bucket: here each queue is JetStream's own, so clients polyport did not
write produce and consume it (the format is :mod:`.broker_wire`'s). Options:
``prefix`` (default ``polyport-queues``; ``A-Za-z0-9-``) names the streams and
subjects, ``replicas`` (default 1) their copies on a cluster.

**A queue is a work-queue stream** ``{prefix}_{queue}`` (file storage; an
acked message is gone) with subjects ``{prefix}.{queue}`` and
``{prefix}.{queue}.k.{key}``, a dead-letter stream ``{prefix}_{queue}_DEAD``
and a stream of lease records ``{prefix}_{queue}_LEASES`` (see
:mod:`.broker_records`, :mod:`.broker_receipts` for what a receipt does,
:mod:`.broker_settle` for settlements and :mod:`.broker_leases` for the
leases). A stream per queue, not one for all, because JetStream's dedup
window is a stream's setting and each queue has its own; and because
purging a queue must forget its ids, which only deleting its stream does (a
JetStream purge keeps the dedup window's ids: tested on 2.9.10). Every node
shares the one durable pull consumer ``polyport`` (explicit acks,
``MaxDeliver`` unlimited, ``MaxAckPending`` unlimited).

How each rule of the port is kept:

* **Producer dedup**: the id is the ``Nats-Msg-Id``; the stream's
  ``duplicate_window`` is the queue's ``dedup_window``, so JetStream answers
  ``duplicate`` for an id it saw within it — acked, waiting or dead. JetStream
  keeps those ids in the server's memory; a restarted server rebuilds them
  from the messages it still stores, so it forgets the ids of messages handled
  before the restart (seen on 2.9.10).
* **Leases**: ``AckWait`` is the lease: the consumer is made by the first
  receive with its lease and taken as it is by the others. :meth:`extend`
  sends ``+WPI`` (in progress), which restarts the ack wait. A receive asking
  a longer lease than ``AckWait`` is kept by the node sending ``+WPI`` every
  third of it; one asking a shorter lease gets ``AckWait``. A node killed
  with SIGKILL sends nothing more: its messages come back after ``AckWait``.
* **Stale holders**: JetStream takes an ack from a holder whose ack wait ran
  out and whose message was delivered again since. So every receipt writes
  the message's lease record with its ``num_delivered`` (which grows with each
  delivery) and every settlement is a compare-and-set on the revision its
  receipt wrote: a holder that was received over finds a newer revision and
  gets False, before it acks, naks or terms anything. The compare-and-set is
  what settles: an ack returns once it holds, and JetStream's ack follows,
  answered without being awaited (a lost one brings the message back to a
  receipt that finds the record done and finishes it). Only that answer —
  the message gone from the stream — removes the record and wakes the key's
  next, and a node's own stats and listings wait for the answers of its acks.
* **Attempts** are counted in the lease record, not taken from
  ``num_delivered``: a receipt counts one; a lost lease leaves the count and
  the next receipt adds one; a release takes its receipt's back. The
  deliveries that only set a message aside (before its delay, behind its
  key, or to a receive that gave up) write nothing, so they count nothing.
* **Retries** nak with the backoff as delay, the error and due time in the
  record: the message keeps its place in the stream (and its key).
* **Delays** (JetStream 2.9 cannot schedule): a delayed message carries
  ``Polyport-Not-Before``; delivered before then, it is naked for the rest of
  its delay, uncounted. A delay stream moved by a timer would take a keyed
  message out of its place in the key's subject, and so out of order.
* **Ordering keys**: a keyed message is on its key's subject, and since
  acked messages leave a work-queue stream, the first message on that subject
  is the key's oldest live one. A receipt of a keyed message asks for it
  (``DIRECT.GET`` ``next_by_subj``) and takes the message only if it is that
  one; the others are naked for a short, growing delay (50 ms doubling to
  1 s), and woken as soon as the head is acked or buried on any node (see
  :mod:`.broker_keys`). So one message of a key runs at a time, in order,
  across every node, and a message retried, delayed or in flight holds its
  key; a dead letter (termed, so gone) no longer does. No lock can be left
  behind by a dead node.
* **Dead letters**: the record turns ``dead``; the message is published to
  the dead-letter stream with its attempts, error and times (its
  ``Nats-Msg-Id`` the original's sequence and time, so a node that finishes
  the job for one that died there stores it once), then termed (``+TERM``
  removes it from a work-queue stream). Redrive publishes a dead letter again
  as a new message (a new ``Nats-Msg-Id``, its id in ``Polyport-Id``) and
  deletes it from the dead-letter stream.
* **Stats**: in flight is the lease records held; waiting the rest of the
  stream's messages (ready, delayed, retrying, behind a key); dead the
  dead-letter stream's count.
* **Purge** deletes the queue's three streams (and the consumer): messages,
  dead letters and ids are gone. The next use makes them again — a send, a
  listing, or a consuming node's pending pull, which the deletion ends (so a
  node's reply queue, purged when it stops, leaves nothing behind); another
  node waits half a second first (see :meth:`NatsJetStreamBroker._remake`).
* **Connection loss**: every call needs the server's answer (an ack, its
  record's) and raises
  :class:`~polyport.core.errors.Unavailable` without one, never a silent loss;
  nats-py reconnects, and the durable consumer is the server's, so consumers
  go on where they were (a lost consumer — a purge on another node — is made again).

Costs and limits: beside a bare consumer's share of a pull and its ack, a
message costs two writes of its lease record, each awaited: the receipt's
(those of one pull's first deliveries sent together, one round trip for
them all) and the settlement's compare-and-set (one round trip each); the
ack's answer (not awaited); and the record's deletion by its sequence (sent
without a reply subject). So 4 messages go out and 4 come in per message
handled where a bare consumer sends 1 and receives 1, and the server stores
2 writes and 1 deletion more. A key with a backlog costs deliveries while
its head runs (those delivered are naked behind it, up to once a second
each). ``AckWait`` is changed by an
operator (``nats consumer edit``; nodes read it when they open), never by a
node asking another lease. Delays and retries use each node's clock (keep
them in sync). A NATS server killed with SIGKILL may bring back messages
acked shortly before (2.9.10 files acks lazily): they are handled again,
never lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import orjson

from polyport.backends.nats.broker_admin import QueueAdmin
from polyport.backends.nats.broker_keys import KeyWaiters
from polyport.backends.nats.broker_leases import LeaseKeeper
from polyport.backends.nats.broker_pull import ConsumerMissing, Puller
from polyport.backends.nats.broker_receipts import Receipts
from polyport.backends.nats.broker_records import LeaseRecords
from polyport.backends.nats.broker_settle import Settlements
from polyport.backends.nats.broker_streams import DURABLE, ConsumerState, QueueStreams
from polyport.backends.nats.broker_wire import (
    QueueNames,
    check_prefix,
    wire_headers,
)
from polyport.backends.nats.client import TIMEOUT, ApiError, JetStreamClient, status, unavailable
from polyport.core.broker import (
    Delivery,
    OutgoingMessage,
    QueuedMessage,
    QueueOptions,
    QueueStats,
)
from polyport.core.errors import (
    ConfigError,
    InvalidArgument,
    NotFound,
    PayloadTooLarge,
    Unavailable,
)

if TYPE_CHECKING:
    from nats.aio.msg import Msg

log = logging.getLogger("polyport.backends.nats.broker")
T = TypeVar("T")

#: Seconds a node waits before making again the streams another node deleted.
REMAKE_AFTER = 0.5
#: Bytes of a message's protocol line and headers' framing, beside its headers.
_ROOM = 512


class NatsJetStreamBroker:
    """A :class:`~polyport.core.broker.Broker` of JetStream work-queue streams."""

    kind = "nats"

    def __init__(
        self,
        servers: str | Sequence[str] = "nats://127.0.0.1:4222",
        *,
        prefix: str = "polyport-queues",
        replicas: int = 1,
        owner: str | None = None,
        timeout: float = TIMEOUT,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.prefix = check_prefix(prefix)
        self.owner = owner
        self.clock = clock
        self.client = JetStreamClient(servers, timeout=timeout)
        self.streams = QueueStreams(self.client, replicas)
        self.records = LeaseRecords(self.client)
        self.puller = Puller(self.client)
        self.admin = QueueAdmin(self.client, self.streams, self.records, clock)
        self.waiters = KeyWaiters(self.client, self.prefix)
        self._options: dict[str, QueueOptions] = {}
        self._names: dict[str, QueueNames] = {}
        self._declared: set[str] = set()
        self._consumers: dict[str, ConsumerState] = {}
        self.leases = LeaseKeeper(self.client)
        self.receipts = Receipts(
            self.client, self.records, self.leases, self.waiters, self.admin, clock
        )
        self.settlements = Settlements(
            self.client, self.records, self.leases, self.receipts, self.waiters, clock
        )

    # -- lifecycle ------------------------------------------------------------------------

    async def open(self) -> None:
        await self.client.connect(f"polyport broker {self.owner or ''}".strip())
        await self.waiters.open()
        self.leases.start()

    async def close(self) -> None:
        with contextlib.suppress(Exception):  # what is still settling is finished later
            await self.settlements.acks_answered()
        await self.leases.stop()
        self._declared.clear()
        self._consumers.clear()
        await self.puller.close()
        await self.waiters.close()
        await self.client.close()

    async def declare(self, queue: QueueOptions) -> None:
        names = self.names(queue.name)
        await self.streams.declare(names, queue)
        self._options[queue.name] = queue
        self._declared.add(queue.name)

    def names(self, queue: str) -> QueueNames:
        names = self._names.get(queue)
        if names is None:
            names = self._names[queue] = QueueNames.of(self.prefix, queue)
        return names

    async def _ready(self, queue: str) -> QueueNames:
        """The queue's names, its streams declared (as asked, or with the defaults)."""
        if queue not in self._declared:
            await self.declare(self._options.get(queue) or QueueOptions(queue))
        return self.names(queue)

    def _forget(self, queue: str) -> None:
        """Find the queue's streams and consumer again next time (another node purged it)."""
        self._declared.discard(queue)
        self._consumers.pop(queue, None)

    async def _remake(self, queue: str) -> QueueNames:
        """Make the queue's streams again after another node deleted them (a purge).

        Not at once: JetStream (2.9.10) ends a consumer's pending pulls before it has
        removed the stream's files, and a stream made again in between can lose its
        new files to that removal. The purging node makes nothing again itself."""
        self._forget(queue)
        await asyncio.sleep(REMAKE_AFTER)
        return await self._ready(queue)

    # -- producing ------------------------------------------------------------------------

    async def send(self, queue: str, messages: Sequence[OutgoingMessage]) -> list[bool]:
        if queue not in self._options:
            # Not this node's queue (a reply to another node's reply queue): its streams
            # are the declaring node's to make; one that is gone is not made again here.
            try:
                return await self._publish(self.names(queue), messages)
            except _NoStream:
                raise NotFound(f"queue {queue[:100]!r} has no stream on the broker") from None
        names = await self._ready(queue)
        try:
            return await self._publish(names, messages)
        except _NoStream:
            return await self._publish(await self._remake(queue), messages)

    async def _publish(self, names: QueueNames, messages: Sequence[OutgoingMessage]) -> list[bool]:
        now = self.clock()
        sends = [
            (names.subject_for(message.key), message.body, self._headers(message, now))
            for message in messages
        ]
        # Sent one after the other (stored in this order), answers awaited together.
        return [_stored(msg) for msg in await self.client.request_many(sends)]

    def _headers(self, message: OutgoingMessage, now: float) -> dict[str, str]:
        """A message's headers on the wire; PayloadTooLarge if it is over the server's limit."""
        not_before = now + message.delay if message.delay > 0 else None
        headers = wire_headers(message.id, message.headers, message.key, not_before)
        size = len(message.body) + 4 * len(headers)
        size += sum(map(len, headers)) + sum(map(len, headers.values()))
        if size + _ROOM > self.client.max_message:
            raise PayloadTooLarge(
                f"a message of {len(message.body)} bytes with its headers is over the "
                f"NATS server's max_payload ({self.client.max_message} bytes)"
            )
        return headers

    # -- consuming ------------------------------------------------------------------------

    async def receive(self, queue: str, *, limit: int, lease: float, wait: float) -> list[Delivery]:
        names = await self._ready(queue)
        deadline = time.monotonic() + wait
        out: list[Delivery] = []
        while True:
            want = limit - len(out)
            if want <= 0:
                return out
            pulled = await self._pull(names, lease, want, None)
            out += await self.receipts.admit(names, *pulled, lease)
            if out:
                return out
            if pulled[1]:
                continue  # all of them set aside (delayed, behind their key): look again
            left = deadline - time.monotonic()
            if left <= 0.001:
                return out
            # Wait for one; the next round takes what else is ready with it.
            out += await self.receipts.admit(names, *await self._pull(names, lease, 1, left), lease)

    async def _consumer(self, names: QueueNames, lease: float) -> ConsumerState:
        consumer = self._consumers.get(names.queue)
        if consumer is None:
            consumer = self._consumers[names.queue] = await self.streams.consumer(names, lease)
        return consumer

    async def _pull(
        self, names: QueueNames, lease: float, batch: int, wait: float | None
    ) -> tuple[ConsumerState, list[Msg]]:
        """What the consumer delivers to one pull request, and the consumer as found."""
        consumer = await self._consumer(names, lease)
        try:
            return consumer, await self.puller.pull(names.stream, DURABLE, batch, wait)
        except ConsumerMissing:
            # Purged (so deleted) by another node, or deleted by hand: make it again, once.
            await self._remake(names.queue)
            consumer = await self._consumer(names, lease)
        try:
            return consumer, await self.puller.pull(names.stream, DURABLE, batch, wait)
        except ConsumerMissing as exc:
            raise unavailable(f"did not answer pulls from {names.stream}") from exc

    # -- leases ---------------------------------------------------------------------------

    async def extend(self, deliveries: Sequence[Delivery], lease: float) -> int:
        return await self.leases.extend(deliveries, lease)

    # -- settling (see .broker_settle) ----------------------------------------------------

    async def ack(self, delivery: Delivery) -> bool:
        return await self.settlements.ack(delivery)

    async def retry(self, delivery: Delivery, *, delay: float, error: str) -> bool:
        return await self.settlements.retry(delivery, delay=delay, error=error)

    async def release(self, delivery: Delivery) -> bool:
        return await self.settlements.release(delivery)

    async def dead_letter(self, delivery: Delivery, *, error: str) -> bool:
        return await self.settlements.dead_letter(delivery, error=error)

    # -- operating ------------------------------------------------------------------------

    async def _on_streams(self, queue: str, op: Callable[[QueueNames], Awaitable[T]]) -> T:
        """``op`` on the queue's streams, made again first if another node purged them."""
        names = await self._ready(queue)
        try:
            return await op(names)
        except (Unavailable, ApiError):
            if not await self.streams.missing(names):
                raise
        return await op(await self._remake(queue))

    async def dead(
        self, queue: str, *, limit: int = 50, after: str | None = None
    ) -> list[QueuedMessage]:
        return await self._on_streams(
            queue, lambda names: self.admin.dead(names, limit=limit, after=after)
        )

    async def redrive(self, queue: str, ids: Sequence[str] | None = None) -> int:
        return await self._on_streams(queue, lambda names: self.admin.redrive(names, ids))

    async def peek(self, queue: str, *, limit: int = 50) -> list[QueuedMessage]:
        await self.settlements.acks_answered()
        return await self._on_streams(queue, lambda names: self.admin.peek(names, limit=limit))

    async def stats(self, queue: str) -> QueueStats:
        await self.settlements.acks_answered()
        return await self._on_streams(queue, self.admin.stats)

    async def expire(self, queue: str) -> int:
        """JetStream forgets ids older than the window by itself (0); this only removes
        the lease records a crash left behind."""
        await self._on_streams(queue, self.admin.sweep)
        return 0

    async def purge(self, queue: str) -> int:
        names = self.names(queue)
        count = await self.admin.count(names)
        await self.streams.delete(names)
        self._forget(queue)
        self.leases.let_go_queue(queue)
        return count


class _NoStream(Exception):
    """A publish found no stream to store it (deleted by a purge, or never made)."""


def _stored(msg: Msg) -> bool:
    """Whether a publish stored a new message (False: a duplicate id)."""
    if status(msg) == "503":
        raise _NoStream()
    answer: dict[str, Any] = orjson.loads(msg.data) if msg.data else {}
    error = answer.get("error")
    if error:
        raise unavailable(f"refused a message: {error.get('description', '')}")
    if "seq" not in answer:
        raise unavailable("did not store a message")
    return not answer.get("duplicate", False)


def build(
    url: str, options: dict[str, str], *, owner: str, poll_interval: float
) -> NatsJetStreamBroker:
    """The broker at ``url``: ``?prefix=`` names its streams and subjects, ``?replicas=``
    their copies. Consumers wait on JetStream's pull requests, so ``poll_interval`` is
    not needed."""
    del poll_interval
    unknown = set(options) - {"prefix", "replicas"}
    if unknown:
        raise ConfigError(
            f"queues.broker: unknown option(s) {', '.join(sorted(unknown))}; "
            "a nats:// broker takes prefix and replicas"
        )
    try:
        replicas = int(options.get("replicas", "1"))
    except ValueError:
        raise ConfigError("queues.broker: replicas must be a number") from None
    try:
        return NatsJetStreamBroker(
            url, prefix=options.get("prefix", "polyport-queues"), replicas=replicas, owner=owner
        )
    except InvalidArgument as exc:  # the prefix
        raise ConfigError(f"queues.broker: {exc}") from exc


__all__ = ["NatsJetStreamBroker", "build"]

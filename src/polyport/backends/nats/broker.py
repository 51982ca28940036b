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
* **Stale holders**: JetStream takes an ack (or nak, or term) for a message
  from anyone, even a holder whose ack wait ran out and whose message was
  delivered again since (2.9.10's ``processAckMsg`` checks neither the
  delivery count nor the delivery sequence of the ack's subject). Two fences:

  - *Time*, for the usual message — the **fast path**: a first delivery
    without key or delay (:func:`.broker_receipts.fast_path`) is handed out
    with no lease record, and an **ack** of it within its lease is
    JetStream's ack alone, its answer awaited. JetStream starts the ack wait
    when it sends the message, after it got the pull request; the node counts
    from before it sent that request, so until that moment plus ``AckWait``
    no other node can have received the message. The ack goes only until
    ``AckWait`` less a margin (:func:`.broker_leases.fast_margin`, ½ s or a
    tenth) after it, and returns True once answered; an answer that comes
    later than ``AckWait`` after it (a connection stalled or made again,
    nats-py sending its buffer late) proves nothing, and the record decides,
    as below. Why wait for the answer: the port's ack means the message left
    the queue — an ack that is lost (the connection drops) raises
    Unavailable instead of passing for done, and what the node reads next
    (stats, listings) no longer has the message; it costs one small message
    from the server, not a round trip's wait of the handler (the queue
    runner settles after freeing the handler's slot).
  - *The lease record*, for everything else: a retry, release or dead
    letter of a fast receipt, or its ack after that margin, first writes
    its record (``num_delivered`` 1, one attempt) as a compare-and-set on
    "none yet" — a later delivery's receipt has written one, so a holder
    that was received over is refused (False) before JetStream hears from
    it. Every other receipt writes the record at receipt, with its
    ``num_delivered`` (which grows with each delivery), and settles by a
    compare-and-set on the revision it wrote. That compare-and-set is what
    settles: an ack returns once it holds, and JetStream's ack follows,
    answered without being awaited (a lost one brings the message back to a
    receipt that finds the record done and finishes it). Only that answer —
    the message gone from the stream — removes the record and wakes the
    key's next, and a node's own stats and listings wait for the answers of
    its acks.

  An ack is the only settlement without a record because a stale one loses
  nothing: its handler succeeded, and only unkeyed messages take the fast
  path, so no key's order rests on it. (Were the time fence ever beaten — a
  server whose clock jumps forward, an ``AckWait`` shortened by hand under
  running nodes — the message, already handled, would be handled again.)
  A consumer deleted by hand and made again takes any ack for a sequence,
  and a queue's streams made again after a purge count their sequences from
  1 again: so a node that sees its consumer gone (a pull ended as deleted, a
  new consumer found) lets go its receipts of the queue — their
  settlements are refused — and the node that makes a consumer, or purges
  a queue, says so on the core subject ``{prefix}.{queue}.reset`` (best
  effort) for the others to do the same. What none of that covers is an ack
  sent in the instant between a purge and the notice reaching its node.
* **Attempts** are counted in the lease record, not taken from
  ``num_delivered``: a receipt counts one; a lost lease leaves the count and
  the next receipt adds one; a release takes its receipt's back. A message
  that takes the fast path has no record while it is first held, and gets
  none when that holder dies or its ack is lost: a later delivery that finds
  no record of it counts that first attempt. The deliveries that only set a
  message aside (before its delay, behind its key) write nothing and count
  nothing; a first delivery that reaches a receive which gave up writes its
  record (no attempt) before it is naked, since the next receipt would
  otherwise count it. A consumer made again restarts ``num_delivered``: a
  message its predecessor held fast comes back as a first attempt.
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
* **Stats**: in flight is the lease records held (every node's) and this
  node's fast receipts, which have none — so another node's fast receipts
  count as waiting here, a limit like RabbitMQ's per-node count. The
  consumer's ``num_ack_pending`` is no better: it also counts every message
  naked for a delay (retries, delays, keys), which stay pending on 2.9.10.
  Waiting is the rest of the stream's messages (ready, delayed, retrying,
  behind a key); dead the dead-letter stream's count.
* **Purge** deletes the queue's three streams (and the consumer): messages,
  dead letters and ids are gone; every node is told first (above). The next
  use makes them again — a send, a
  listing, or a consuming node's pending pull, which the deletion ends (so a
  node's reply queue, purged when it stops, leaves nothing behind); another
  node waits half a second first (see :meth:`NatsJetStreamBroker._remake`).
* **Connection loss**: every call needs the server's answer (an ack, its
  record's) and raises
  :class:`~polyport.core.errors.Unavailable` without one, never a silent loss;
  nats-py reconnects, and the durable consumer is the server's, so consumers
  go on where they were (a lost consumer — a purge on another node — is made again).

Costs and limits: a message on the fast path, handled and acked within
its lease, costs what a bare consumer's does — its share of a pull, and its
ack — and the ack's answer (one small message in). Any other costs two
writes of its lease record, each awaited: the receipt's (those of one
pull's first deliveries sent together, one round trip for them all) and the
settlement's compare-and-set (one round trip each); the ack's answer (not
awaited); and the record's deletion by its sequence (sent without a reply
subject): 4 messages out and 4 in where a bare consumer sends 1 and
receives 1, and 3 more changes to the server's files. A key with a backlog
costs deliveries while its head runs (those delivered are naked behind it,
up to once a second each). ``AckWait`` is changed by an operator
(``nats consumer edit``; nodes read it when they open), never by a node
asking another lease: lengthen it at will, shorten it with the nodes stopped
(a node with the old one would ack fast past the new one). Delays and
retries use each node's clock (keep them in sync). A NATS server killed
with SIGKILL may bring back messages acked shortly before (2.9.10 files
acks lazily): they are handled again, never lost.
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
    ack_stream,
    check_prefix,
    received,
    wire_headers,
)
from polyport.backends.nats.client import (
    TIMEOUT,
    ApiError,
    JetStreamClient,
    engine_errors,
    status,
    unavailable,
)
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
    from nats.aio.subscription import Subscription

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
        self.puller = Puller(self.client, self._give_back)
        self.admin = QueueAdmin(self.client, self.streams, self.records, clock)
        self.waiters = KeyWaiters(self.client, self.prefix)
        self._options: dict[str, QueueOptions] = {}
        self._names: dict[str, QueueNames] = {}
        self._by_stream: dict[str, QueueNames] = {}
        self._declared: set[str] = set()
        self._consumers: dict[str, ConsumerState] = {}
        self.leases = LeaseKeeper(self.client)
        self.receipts = Receipts(
            self.client, self.records, self.leases, self.waiters, self.admin, clock
        )
        self.settlements = Settlements(
            self.client, self.records, self.leases, self.receipts, self.waiters, clock
        )
        #: Deliveries being given back (their records written first), kept from the GC.
        self._giving_back: set[asyncio.Task[None]] = set()
        self._resets: Subscription | None = None

    # -- lifecycle ------------------------------------------------------------------------

    async def open(self) -> None:
        await self.client.connect(f"polyport broker {self.owner or ''}".strip())
        await self.waiters.open()
        with engine_errors("subscribe"):
            self._resets = await self.client.conn.subscribe(
                f"{self.prefix}.*.reset", cb=self._on_reset
            )
        self.leases.start()

    async def close(self) -> None:
        with contextlib.suppress(Exception):  # what is still settling is finished later
            await self.settlements.acks_answered()
        if self._giving_back:
            await asyncio.wait(list(self._giving_back), timeout=self.client.timeout)
        await self.leases.stop()
        self._declared.clear()
        self._consumers.clear()
        await self.puller.close()
        await self.waiters.close()
        resets, self._resets = self._resets, None
        if resets is not None:
            with contextlib.suppress(Exception):
                await resets.unsubscribe()
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
            self._by_stream[names.stream] = names
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

    async def _remake(self, queue: str, *, gone: bool = True) -> QueueNames:
        """Make the queue's streams again after another node deleted them (a purge);
        ``gone`` (known deleted, not only silent): its receipts are let go at once.

        Not at once: JetStream (2.9.10) ends a consumer's pending pulls before it has
        removed the stream's files, and a stream made again in between can lose its
        new files to that removal. The purging node makes nothing again itself."""
        if gone:  # their acks could name the sequences of the stream made again
            self.leases.let_go_queue(queue)
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
            consumer, msgs, since = await self._pull(names, lease, want, None)
            out += await self.receipts.admit(names, consumer, msgs, lease, since)
            if out:
                return out
            if msgs:
                continue  # all of them set aside (delayed, behind their key): look again
            left = deadline - time.monotonic()
            if left <= 0.001:
                return out
            # Wait for one; the next round takes what else is ready with it.
            consumer, msgs, since = await self._pull(names, lease, 1, left)
            out += await self.receipts.admit(names, consumer, msgs, lease, since)

    async def _consumer(self, names: QueueNames, lease: float) -> ConsumerState:
        consumer = self._consumers.get(names.queue)
        if consumer is None:
            consumer, made = await self.streams.consumer(names, lease)
            self._consumers[names.queue] = consumer
            # Receipts of an older consumer of the queue (deleted since) are void.
            self.leases.let_go_queue(names.queue, but=consumer.created)
            if made:  # and so are other nodes' (see _on_reset)
                await self._announce_reset(names, consumer.created)
        return consumer

    async def _pull(
        self, names: QueueNames, lease: float, batch: int, wait: float | None
    ) -> tuple[ConsumerState, list[Msg], float]:
        """What the consumer delivers to one pull request, the consumer as found, and when
        the request was sent (monotonic, just before)."""
        consumer = await self._consumer(names, lease)
        try:
            since = time.monotonic()
            return consumer, await self.puller.pull(names.stream, DURABLE, batch, wait), since
        except ConsumerMissing as exc:
            # Purged (so deleted) by another node, or deleted by hand: make it again, once.
            await self._remake(names.queue, gone=exc.deleted)
            consumer = await self._consumer(names, lease)
        try:
            since = time.monotonic()
            return consumer, await self.puller.pull(names.stream, DURABLE, batch, wait), since
        except ConsumerMissing as exc:
            raise unavailable(f"did not answer pulls from {names.stream}") from exc

    async def _announce_reset(self, names: QueueNames, created: str) -> None:
        """Tell every node that the queue's consumer is new (made at ``created``), or that
        its streams are being deleted (``""``): best effort, on the core subject
        ``{prefix}.{queue}.reset``."""
        if self.client.connected:
            with contextlib.suppress(Exception):
                await self.client.conn.publish(f"{names.subject}.reset", created.encode())

    async def _on_reset(self, msg: Msg) -> None:
        """Another node made the queue's consumer anew, or deletes its streams: the receipts
        of any other consumer are let go (their acks would reach the new one: JetStream
        takes an ack for a sequence, from anyone), and the new consumer is found at the
        next pull."""
        queue = msg.subject[len(self.prefix) + 1 : -len(".reset")]
        created = msg.data.decode(errors="replace")
        if not created:
            self.leases.let_go_queue(queue)
            return
        consumer = self._consumers.get(queue)
        if consumer is not None and consumer.created != created:
            del self._consumers[queue]
        self.leases.let_go_queue(queue, but=created)

    async def _give_back(self, msg: Msg) -> None:
        """Give back a delivery no receive will hand out (see :meth:`Receipts.give_back`),
        on a task of its own: the pull that found it does not wait for its record."""
        stream = ack_stream(msg.reply)
        names = self._by_stream.get(stream) if stream is not None else None
        consumer = self._consumers.get(names.queue) if names is not None else None
        if names is None or consumer is None:
            await self.client.send(msg.reply, b"-NAK", "")
            return
        task = asyncio.create_task(self.receipts.give_back(names, consumer, received(msg)))
        self._giving_back.add(task)
        task.add_done_callback(self._gave_back)

    def _gave_back(self, task: asyncio.Task[None]) -> None:
        self._giving_back.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.debug("giving a delivery back failed: %s", task.exception())

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
        return await self._on_streams(
            queue, lambda names: self.admin.peek(names, limit=limit, here=self._held_here(queue))
        )

    async def stats(self, queue: str) -> QueueStats:
        await self.settlements.acks_answered()
        return await self._on_streams(
            queue, lambda names: self.admin.stats(names, here=len(self._held_here(queue)))
        )

    def _held_here(self, queue: str) -> dict[int, float]:
        """This node's fast receipts of ``queue`` (no record says they are in flight): the
        message's sequence, and when its lease ends (Unix seconds)."""
        return {held.received.seq: held.record.until for held in self.leases.fast_held(queue)}

    async def expire(self, queue: str) -> int:
        """JetStream forgets ids older than the window by itself (0); this only removes
        the lease records a crash left behind."""
        await self._on_streams(queue, self.admin.sweep)
        return 0

    async def purge(self, queue: str) -> int:
        names = self.names(queue)
        # Other nodes let go their receipts first: the streams made again count from 1.
        await self._announce_reset(names, "")
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

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
:mod:`.broker_records`, and :mod:`.broker_leases` for the leases). A stream
per queue, not one for all, because JetStream's dedup window is a stream's
setting and each queue has its own; and because purging a queue must forget
its ids, which only deleting its stream does (a JetStream purge keeps the
dedup window's ids: tested on 2.9.10). Every node shares the one durable
pull consumer ``polyport`` (explicit acks, ``MaxDeliver`` unlimited,
``MaxAckPending`` unlimited).

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
  gets False, before it acks, naks or terms anything.
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
* **Connection loss**: every call needs the server's answer and raises
  :class:`~polyport.core.errors.Unavailable` without one, never a silent loss;
  nats-py reconnects, and the durable consumer is the server's, so consumers
  go on where they were (a lost consumer — a purge on another node — is made again).

Costs and limits: a message costs a share of a pull, its lease record's
write, the settlement's compare-and-set, JetStream's ack and the record's
purge (not awaited) — two requests awaited more than a bare consumer's pull
and ack. A key
with a backlog costs deliveries while its head runs (those delivered are
naked behind it, up to once a second each). ``AckWait`` is changed by an
operator (``nats consumer edit``; nodes read it when they open), never by a
node asking another lease. Delays and retries use each node's clock (keep
them in sync). A NATS server killed with SIGKILL may bring back messages
acked shortly before (2.9.10 files acks lazily): they are handled again,
never lost.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import orjson

from polyport.backends.nats.broker_admin import QueueAdmin
from polyport.backends.nats.broker_keys import KeyWaiters
from polyport.backends.nats.broker_leases import Held, LeaseKeeper, held_of
from polyport.backends.nats.broker_pull import ConsumerMissing, Puller
from polyport.backends.nats.broker_records import LeaseRecord, LeaseRecords
from polyport.backends.nats.broker_streams import DURABLE, ConsumerState, QueueStreams
from polyport.backends.nats.broker_wire import (
    ERROR,
    NOT_BEFORE,
    QueueNames,
    Received,
    check_prefix,
    message_id,
    number,
    optional_text,
    port_headers,
    received,
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

#: The first delay a message waiting behind its key is naked for; it doubles with
#: each delivery, up to :data:`BEHIND_MAX`.
BEHIND_MIN = 0.05
BEHIND_MAX = 1.0
#: Times a receipt re-reads a lease record another node wrote in between.
RACES = 4
#: Seconds a node waits before making again the streams another node deleted.
REMAKE_AFTER = 0.5
#: Bytes of a message's protocol line and headers' framing, beside its headers.
_ROOM = 512


def behind_delay(delivered: int) -> float:
    return min(BEHIND_MAX, BEHIND_MIN * 2.0 ** min(delivered - 1, 16))


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

    # -- lifecycle ------------------------------------------------------------------------

    async def open(self) -> None:
        await self.client.connect(f"polyport broker {self.owner or ''}".strip())
        await self.waiters.open()
        self.leases.start()

    async def close(self) -> None:
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
        waits = []
        try:
            # Sent one after the other (stored in this order), answers awaited together.
            for message in messages:
                headers = wire_headers(
                    message.id,
                    message.headers,
                    message.key,
                    now + message.delay if message.delay > 0 else None,
                )
                size = len(message.body) + sum(len(k) + len(v) + 4 for k, v in headers.items())
                if size + _ROOM > self.client.max_message:
                    raise PayloadTooLarge(
                        f"a message of {len(message.body)} bytes with its headers is over the "
                        f"NATS server's max_payload ({self.client.max_message} bytes)"
                    )
                reply, token, future = self.client.expect()
                waits.append((token, future))
                await self.client.send(names.subject_for(message.key), message.body, reply, headers)
            async with asyncio.timeout(self.client.timeout):
                answers = [await future for _, future in waits]
        except TimeoutError as exc:
            raise unavailable("did not confirm a send") from exc
        finally:
            for token, _ in waits:
                self.client.drop(token)
        return [_stored(msg) for msg in answers]

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
            out += await self._admit(names, pulled, lease)
            if out:
                return out
            if pulled[1]:
                continue  # all of them set aside (delayed, behind their key): look again
            left = deadline - time.monotonic()
            if left <= 0.001:
                return out
            # Wait for one; the next round takes what else is ready with it.
            out += await self._admit(names, await self._pull(names, lease, 1, left), lease)

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

    async def _admit(
        self, names: QueueNames, pulled: tuple[ConsumerState, list[Msg]], lease: float
    ) -> list[Delivery]:
        """The deliveries among those pulled to hand out, in their order; the others set aside."""
        consumer, msgs = pulled
        if not msgs:
            return []
        results = await asyncio.gather(
            *(self._admit_one(names, consumer, received(msg), lease) for msg in msgs),
            return_exceptions=True,
        )
        out = [result for result in results if isinstance(result, Delivery)]
        failures = [result for result in results if isinstance(result, BaseException)]
        for failure in failures:
            if not isinstance(failure, Exception):
                raise failure
        if failures:
            if not out:
                raise failures[0]
            # Their messages come back after the ack wait; the others are handed out.
            log.warning(
                "%d message(s) of %s not taken: %s", len(failures), names.queue, failures[0]
            )
        return out

    async def _admit_one(
        self, names: QueueNames, consumer: ConsumerState, r: Received, lease: float
    ) -> Delivery | None:
        record, revision = (None, 0) if r.delivered == 1 else await self.records.read(names, r.seq)
        key = names.key_of(r.subject)
        head_checked = key is None
        for _ in range(RACES):
            now = self.clock()
            if record is None:
                not_before = number(r.wire, NOT_BEFORE)
                if not_before is not None and not_before > now:
                    await self._set_aside(r, not_before - now)
                    return None
            elif record.state in ("done", "dead"):
                # Its holder settled it and died before JetStream heard: finish for it.
                await self._finish(names, r, record)
                return None
            elif record.state == "waiting" and record.due > now:
                await self._set_aside(r, record.due - now)
                return None
            elif (
                record.state == "held"
                and record.consumer == consumer.created
                and record.holder >= r.delivered
            ):
                return None  # an older delivery than its holder's: not ours to settle
            if not head_checked:
                head = await self.client.direct_get(
                    names.stream, {"next_by_subj": r.subject, "seq": 0}
                )
                if head is None:
                    return None  # gone (purged) meanwhile
                if int((head.headers or {}).get("Nats-Sequence", 0)) != r.seq:
                    delay = behind_delay(r.delivered)
                    await self._set_aside(r, delay)
                    self.waiters.set_aside(r.subject, r.seq, r.reply, delay)
                    return None
                head_checked = True
            attempts = (record.attempts if record is not None else 0) + 1
            error = record.error if record is not None else optional_text(r.wire, ERROR)
            held_for = max(lease, consumer.ack_wait)
            new = LeaseRecord(
                "held", r.delivered, attempts, consumer.created, error=error, until=now + held_for
            )
            written = await self.records.write(names, r.seq, new, revision)
            if written is not None:
                if key is not None:
                    self.waiters.handed_out(r.subject, r.seq)
                return self._hand_out(names, r, new, written, consumer, lease, key)
            record, revision = await self.records.read(names, r.seq)
        return None  # others keep writing it: it comes back after the ack wait

    def _hand_out(
        self,
        names: QueueNames,
        r: Received,
        record: LeaseRecord,
        revision: int,
        consumer: ConsumerState,
        lease: float,
        key: str | None,
    ) -> Delivery:
        held = self.leases.hold(names, r, record, revision, consumer.ack_wait, lease)
        return Delivery(
            queue=names.queue,
            id=message_id(r.wire, r.seq),
            body=r.body,
            headers=port_headers(r.wire),
            key=key,
            attempt=record.attempts,
            sent=r.stored,
            lease_until=self.clock() + max(lease, consumer.ack_wait),
            error=record.error,
            token=held,
        )

    async def _set_aside(self, r: Received, delay: float) -> None:
        """Nak a delivery that is not to be handled yet (no record written: not counted)."""
        await self.client.send(r.reply, _nak(delay), "")

    async def _finish(self, names: QueueNames, r: Received, record: LeaseRecord) -> None:
        """Tell JetStream a settlement the record holds (done or dead), and forget it."""
        if record.state == "dead":
            await self.admin.bury(names, r, record)
            await self.client.request(r.reply, b"+TERM")
        else:
            await self.client.request(r.reply, b"+ACK")
        if r.subject != names.subject:  # a key's head is gone: wake the next
            await self.waiters.head_gone(names.subject, r.subject)
        try:
            await self.records.forget(names, r.seq, wait=False)
        except Unavailable as exc:  # settled all the same: expire's sweep removes it later
            log.debug("the lease record of %s #%d stays: %s", names.queue, r.seq, exc)

    # -- leases ---------------------------------------------------------------------------

    async def extend(self, deliveries: Sequence[Delivery], lease: float) -> int:
        return await self.leases.extend(deliveries, lease)

    # -- settling -------------------------------------------------------------------------

    async def _settle(self, delivery: Delivery, change: dict[str, Any]) -> Held | None:
        """Rewrite the record of a delivery still held, at the revision its receipt wrote;
        None if it is not (settled already, or received over since)."""
        held = held_of(delivery)
        if held.settled:
            return None
        record = held.record.but(**change)
        written = await self.records.write(held.names, held.received.seq, record, held.revision)
        self.leases.let_go(held)  # either way, no longer this receipt's to settle
        if written is None:
            return None
        held.record, held.revision = record, written
        return held

    async def ack(self, delivery: Delivery) -> bool:
        held = await self._settle(delivery, {"state": "done"})
        if held is None:
            return False
        await self._finish(held.names, held.received, held.record)
        return True

    async def retry(self, delivery: Delivery, *, delay: float, error: str) -> bool:
        delay = max(0.0, delay)
        held = await self._settle(
            delivery, {"state": "waiting", "due": self.clock() + delay, "error": error}
        )
        if held is None:
            return False
        await self.client.request(held.received.reply, _nak(delay))
        return True

    async def release(self, delivery: Delivery) -> bool:
        held = held_of(delivery)
        change = {"state": "waiting", "due": 0.0, "attempts": held.record.attempts - 1}
        if await self._settle(delivery, change) is None:
            return False
        await self.client.request(held.received.reply, b"-NAK")
        return True

    async def dead_letter(self, delivery: Delivery, *, error: str) -> bool:
        held = await self._settle(delivery, {"state": "dead", "error": error, "died": self.clock()})
        if held is None:
            return False
        await self._finish(held.names, held.received, held.record)
        return True

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
        return await self._on_streams(queue, lambda names: self.admin.peek(names, limit=limit))

    async def stats(self, queue: str) -> QueueStats:
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


def _nak(delay: float) -> bytes:
    if delay < 0.001:
        return b"-NAK"
    return b'-NAK {"delay": %d}' % int(delay * 1e9)


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

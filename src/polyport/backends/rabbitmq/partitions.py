"""Ordering keys on RabbitMQ: keyed messages in partitions, each held by one node at a time.

A keyed message is stored in partition ``crc32(key) % partitions`` of its
queue (``{queue}.key.{n}``), in the order it was sent. A node takes a
message of a partition only while it holds the partition's **lock**, an
exclusive queue (``{queue}.key.{n}.lock``) that RabbitMQ deletes when the
node's connection closes, and it takes **one at a time**:

1. It takes the partition's **head** (``{queue}.key.{n}.head``) if it has a
   message, else moves the partition's first message there: a consumer on the
   partition receives it, is cancelled, the message is copied to the head
   (confirmed), then acknowledged — so a node killed halfway leaves it first
   in the partition, or twice (in the head, then again in the partition).
2. It receives the head's message; the lock is held until it is settled.
   A retry, a release or a message not yet due goes back to the head as a
   copy (counting what it must) before the original is acknowledged, so it
   stays before everything later in the partition.
3. Settled, the node gives the lock up (acknowledge, close, delete the lock).

A node that dies mid-message: RabbitMQ returns the head's message and deletes
its lock. Another node that takes the lock first checks that the partition
and its head have no consumer left (RabbitMQ removes a dead consumer and
returns its messages in one step), else waits.

So the messages of a key run one at a time, in order, across nodes — and so
do the other keys of the same partition: a keyed message waiting for its
delay or its retry holds back its whole partition, and at most ``partitions``
keyed messages of a queue run at once, cluster-wide.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from polyport.backends.rabbitmq import wire
from polyport.backends.rabbitmq.connection import AmqpConnection, amqp_errors, unavailable
from polyport.backends.rabbitmq.held import Held
from polyport.backends.rabbitmq.idlog import IdLog
from polyport.backends.rabbitmq.layout import Layout

if TYPE_CHECKING:
    from aiormq.abc import AbstractChannel, DeliveredMessage

log = logging.getLogger("polyport.backends.rabbitmq")

#: Seconds to wait for the partition's first message once a consumer asked for it.
STAGE_WAIT = 2.0


class Partition:
    """What this node knows of one partition."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.lock = asyncio.Lock()
        #: The channel the lock and the head's message are held on, while held.
        self.channel: AbstractChannel | None = None
        self.held: Held | None = None
        #: Its head is not due before this (wall-clock seconds).
        self.blocked_until: float | None = None


class Partitions:
    """The keyed side of one queue, as this node takes and settles it."""

    def __init__(
        self,
        connection: AmqpConnection,
        layout: Layout,
        ids: IdLog,
        *,
        classic: bool,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.connection = connection
        self.layout = layout
        self.ids = ids
        self.classic = classic
        self.clock = clock
        self.parts = [Partition(n) for n in range(layout.partitions)]
        #: Partitions that may have messages (this node sent or settled one there).
        self.hints: set[int] = set()
        self._start = itertools.cycle(range(layout.partitions))

    def hint(self, n: int) -> None:
        self.hints.add(n)

    def held(self) -> list[Held]:
        return [p.held for p in self.parts if p.held is not None]

    def lost(self) -> None:
        """The connection was lost: its locks and deliveries are gone with it."""
        for part in self.parts:
            if part.held is not None:
                part.held.state = "lost"
            part.held = None
            part.channel = None

    # -- taking ---------------------------------------------------------------------------

    async def take(self, limit: int, lease: float) -> list[Held]:
        """Up to ``limit`` messages, one per hinted partition this node can lock."""
        if not self.hints:
            return []
        now = self.clock()
        got: list[Held] = []
        first = next(self._start)
        for i in range(self.layout.partitions):
            if len(got) >= limit:
                break
            n = (first + i) % self.layout.partitions
            part = self.parts[n]
            if n not in self.hints or part.held is not None:
                continue
            if part.blocked_until is not None and now < part.blocked_until:
                continue
            held = await self._take(part, lease)
            if held is not None:
                got.append(held)
        return got

    async def scan(self) -> bool:
        """Look for partitions with messages (ready in the partition or its head), as
        hints for :meth:`take`; whether there are any. Off the receiving path (each
        partition costs two passive declares): the broker runs it every poll interval
        while the queue is received from."""
        now = self.clock()
        for part in self.parts:
            if part.held is not None:
                continue
            if part.blocked_until is not None and now < part.blocked_until:
                continue
            for name in (self.layout.head(part.n), self.layout.part(part.n)):
                ready, _ = await self.connection.count(name)
                if ready:
                    self.hints.add(part.n)
                    break
        return bool(self.hints)

    async def _take(self, part: Partition, lease: float) -> Held | None:
        import aiormq

        async with part.lock:
            if part.held is not None:
                return None
            channel = await self.connection.channel()
            generation = self.connection.generation
            try:
                async with asyncio.timeout(self.connection.timeout):
                    await channel.queue_declare(
                        self.layout.lock(part.n), exclusive=True, durable=False
                    )
            except aiormq.ChannelLockedResource:
                return None  # another node holds it (RabbitMQ closed the channel)
            except (aiormq.AMQPError, aiormq.ChannelInvalidStateError, TimeoutError) as exc:
                await self._close(channel)
                raise unavailable("did not lock a partition") from exc
            try:
                held = await self._locked(part, channel, generation, lease)
            except BaseException:
                await self._release(part, channel)
                raise
            if held is None:
                await self._release(part, channel)
                return None
            part.channel, part.held = channel, held
            channel.closing.add_done_callback(lambda _: self._channel_closed(part, held))
            return held

    async def _locked(
        self, part: Partition, channel: AbstractChannel, generation: int, lease: float
    ) -> Held | None:
        """With the lock: the head's message, due and not a duplicate, or None."""
        head, partition = self.layout.head(part.n), self.layout.part(part.n)
        with amqp_errors("did not read a partition"):
            async with asyncio.timeout(self.connection.timeout):
                at_head = await channel.queue_declare(head, passive=True)
                in_part = await channel.queue_declare(partition, passive=True)
            if at_head.consumer_count or in_part.consumer_count:
                # A node that held it died and RabbitMQ is still giving its messages back.
                return None
            message = await self._get(channel, head) if at_head.message_count else None
            if message is None and in_part.message_count:
                message = await self._stage(channel, part)
        if message is None:
            self.hints.discard(part.n)
            return None
        received = wire.read(message, prefix=self.layout.prefix, classic=self.classic)
        tag = getattr(message.delivery, "delivery_tag", 0) or 0
        now = self.clock()
        if received.due is not None and received.due > now:
            # Not due: back to the head as it was (its count of attempts kept exactly).
            await self.connection.publish(
                message.body,
                routing_key=head,
                properties=wire.copy(
                    message, received, attempts=received.attempts + received.returns
                ),
            )
            with amqp_errors("did not acknowledge"):
                await channel.basic_ack(tag)
            part.blocked_until = received.due
            return None
        first = self.ids.first_send(received.id, now)
        if received.send is not None and first is not None and first != received.send:
            log.info("queue %s: dropped a second copy of %s", self.layout.queue, received.id)
            with amqp_errors("did not acknowledge"):
                await channel.basic_ack(tag)
            self.hints.add(part.n)
            return None
        part.blocked_until = None
        return Held(
            queue=self.layout.queue,
            source="key",
            generation=generation,
            channel=channel,
            tag=tag,
            message=message,
            received=received,
            attempt=1 + received.attempts + received.returns,
            lease_until=now + lease,
            partition=part.n,
        )

    async def _get(self, channel: AbstractChannel, queue: str) -> DeliveredMessage | None:
        from aiormq import spec

        async with asyncio.timeout(self.connection.timeout):
            message = await channel.basic_get(queue, no_ack=False)
        return message if isinstance(message.delivery, spec.Basic.GetOk) else None

    async def _stage(self, channel: AbstractChannel, part: Partition) -> DeliveredMessage | None:
        """Move the partition's first message to its head; the head's message after."""
        partition, head = self.layout.part(part.n), self.layout.head(part.n)
        pushed: asyncio.Future[DeliveredMessage] = asyncio.get_running_loop().create_future()

        async def arrived(message: DeliveredMessage) -> None:
            if not pushed.done():
                pushed.set_result(message)

        tag = f"polyport-stage-{uuid.uuid4().hex}"
        async with asyncio.timeout(self.connection.timeout):
            await channel.basic_qos(prefetch_count=1)
            await channel.basic_consume(partition, arrived, consumer_tag=tag)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(pushed), STAGE_WAIT)
        async with asyncio.timeout(self.connection.timeout):
            await channel.basic_cancel(tag)
        await asyncio.sleep(0)  # a delivery that raced the cancel runs its callback first
        if not pushed.done():
            pushed.cancel()
            return None
        message = pushed.result()
        received = wire.read(message, prefix=self.layout.prefix, classic=self.classic)
        # The partition's own returns are hand-overs, never runs: not counted.
        await self.connection.publish(
            message.body,
            routing_key=head,
            properties=wire.copy(message, received, attempts=received.attempts),
        )
        await channel.basic_ack(getattr(message.delivery, "delivery_tag", 0) or 0)
        return await self._get(channel, head)

    # -- settling -------------------------------------------------------------------------

    async def settle(
        self,
        held: Held,
        *,
        copy_to: str | None = None,
        properties: Any = None,
        blocked_until: float | None = None,
    ) -> bool:
        """Acknowledge the head's message (after storing ``properties``'s copy of it in
        ``copy_to``, if given) and give the partition up; False if it was not held."""
        assert held.partition is not None
        part = self.parts[held.partition]
        async with part.lock:
            if part.held is not held or held.state != "held":
                return False
            if held.generation != self.connection.generation:
                held.state = "lost"
                return False
            held.state = "settling"
            try:
                if copy_to is not None:
                    await self.connection.publish(
                        held.message.body, routing_key=copy_to, properties=properties
                    )
                with amqp_errors("did not acknowledge"):
                    await held.channel.basic_ack(held.tag)
            except BaseException:
                held.state = "held"
                raise
            held.state = "done"
            part.held, part.channel = None, None
            if blocked_until is not None:
                part.blocked_until = blocked_until
            self.hints.add(part.n)
            await self._release(part, held.channel)
            return True

    async def expire(self, held: Held) -> None:
        """Its lease ran out: give it back (counted: RabbitMQ counts the return)."""
        assert held.partition is not None
        part = self.parts[held.partition]
        async with part.lock:
            if part.held is not held or held.state != "held":
                return
            held.state = "lost"
            part.held, part.channel = None, None
            with contextlib.suppress(Exception):
                await held.channel.basic_nack(held.tag, requeue=True)
            self.hints.add(part.n)
            await self._release(part, held.channel)

    def _channel_closed(self, part: Partition, held: Held) -> None:
        # RabbitMQ closed the channel (a delivery held past its consumer_timeout): the
        # message went back to the head, but the lock belongs to the connection.
        if part.held is not held or not self.connection.alive:
            return
        log.warning("queue %s: partition %d was taken back", self.layout.queue, part.n)
        held.state = "lost"
        part.held, part.channel = None, None

        async def unlock() -> None:
            with contextlib.suppress(Exception):
                channel = await self.connection.ctl()
                await channel.queue_delete(self.layout.lock(part.n))

        asyncio.get_running_loop().create_task(unlock())

    async def _release(self, part: Partition, channel: AbstractChannel) -> None:
        """Close the partition's channel (what it held goes back), then delete the lock."""
        await self._close(channel)
        if self.connection.alive:
            with contextlib.suppress(Exception):
                ctl = await self.connection.ctl()
                async with asyncio.timeout(self.connection.timeout):
                    await ctl.queue_delete(self.layout.lock(part.n))

    async def _close(self, channel: AbstractChannel) -> None:
        if not channel.is_closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(channel.close(), self.connection.timeout)


__all__ = ["Partition", "Partitions"]

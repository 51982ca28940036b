"""The RabbitMQ broker: sending, receiving under a lease, settling (see :mod:`.broker`).

Unkeyed messages are received from the queue itself by the node's consumer
(:mod:`.feed`); keyed messages come from the partitions (:mod:`.partitions`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from polyport.backends.rabbitmq import operations, topology, wire
from polyport.backends.rabbitmq.connection import AmqpConnection, amqp_errors, unavailable
from polyport.backends.rabbitmq.feed import Consumer, Feed
from polyport.backends.rabbitmq.held import Held, held_of
from polyport.backends.rabbitmq.idlog import IdLog
from polyport.backends.rabbitmq.layout import Layout, delay_key, partition_of, ticks
from polyport.backends.rabbitmq.partitions import Partitions
from polyport.core.broker import (
    Delivery,
    OutgoingMessage,
    QueuedMessage,
    QueueOptions,
    QueueStats,
)
from polyport.core.errors import NotFound

if TYPE_CHECKING:
    from aiormq.abc import DeliveredMessage

log = logging.getLogger("polyport.backends.rabbitmq")

#: The first RabbitMQ whose quorum queues have message TTLs and at-least-once dead-lettering.
QUORUM_SINCE = (3, 10)
#: The first RabbitMQ with streams (the shared id log).
STREAMS_SINCE = (3, 9)


@dataclass(eq=False)
class QueueState:
    """One declared queue as this node uses it."""

    options: QueueOptions
    layout: Layout
    ids: IdLog
    partitions: Partitions
    feed: Feed
    #: Unkeyed deliveries this node holds (keyed ones are in ``partitions``).
    held: set[Held] = field(default_factory=set)
    #: Set when this node sent or settled something a waiting receive may take now.
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    #: When a receive last ran (monotonic): the partitions are looked at only meanwhile.
    receiving: float = 0.0
    scanner: asyncio.Task[None] | None = None


class RabbitBroker:
    """A :class:`~polyport.core.broker.Broker` on RabbitMQ (aio-pika), shared by every node
    that connects with the same prefix."""

    kind = "rabbitmq"

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "polyport",
        partitions: int = 8,
        queue_type: str | None = None,
        owner: str = "polyport",
        poll_interval: float = 1.0,
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.partitions = partitions
        self.queue_type = queue_type
        self.poll_interval = poll_interval
        self.connection = AmqpConnection(url, name=f"polyport {owner}")
        self.connection.on_lost.append(self._lost)
        self.connection.on_restored.append(self._restore)
        self.classic = queue_type == "classic"
        self.streams = True
        self.queues: dict[str, QueueState] = {}
        #: A consumer's prefetch is set on the channel before it is made: one at a time.
        self._consuming = asyncio.Lock()
        self._leases: asyncio.Task[None] | None = None
        self._lease_changed = asyncio.Event()

    # -- lifecycle ------------------------------------------------------------------------

    async def open(self) -> None:
        await self.connection.open()
        version = self.connection.version
        if self.queue_type is None:
            self.classic = version < QUORUM_SINCE
        self.streams = version >= STREAMS_SINCE
        if not self.streams:
            log.warning(
                "RabbitMQ %s has no streams: message ids are deduplicated per node", version
            )
        self._leases = asyncio.get_running_loop().create_task(
            self._expire_leases(), name="polyport-rabbitmq-leases"
        )

    async def close(self) -> None:
        if self._leases is not None:
            self._leases.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._leases
            self._leases = None
        for state in self.queues.values():
            if state.scanner is not None:
                state.scanner.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await state.scanner
                state.scanner = None
            if self.connection.alive:
                await state.feed.stop()
                await self._give_back_spare(state)
            await state.ids.stop()
        await self.connection.close()

    async def _give_back_spare(self, state: QueueState) -> None:
        """Received ahead and never handed out: back to the queue, not counted (a copy,
        then the ack; closing the connection would return them counted)."""
        for message, _ in state.feed.take(len(state.feed.buffer)):
            with contextlib.suppress(Exception):
                received = self.read(message)
                props = wire.copy(message, received, attempts=received.attempts + received.returns)
                await self.connection.publish(
                    message.body, routing_key=state.layout.main, properties=props
                )
                await message.channel.basic_ack(getattr(message.delivery, "delivery_tag", 0) or 0)

    async def declare(self, queue: QueueOptions) -> None:
        state = self.queues.get(queue.name)
        if state is None:
            partitions = 0 if queue.temporary else self.partitions
            layout = Layout(self.prefix, queue.name, partitions, temporary=queue.temporary)
            shared = self.streams and not queue.temporary
            ids = IdLog(self.connection, layout.ids, queue.dedup_window, shared=shared)
            state = QueueState(
                queue,
                layout,
                ids,
                Partitions(self.connection, layout, ids, classic=self.classic),
                Feed(self.connection, layout.main, self._consuming),
            )
        await topology.declare(self.connection, state.layout, classic=self.classic)
        await state.ids.declare()
        self.queues[queue.name] = state
        await state.ids.start()

    def _lost(self) -> None:
        for state in self.queues.values():
            for held in state.held:
                held.state = "lost"
            state.held.clear()
            state.feed.lost()
            state.partitions.lost()

    async def _restore(self) -> None:
        for state in self.queues.values():
            await topology.declare(self.connection, state.layout, classic=self.classic)
            await state.ids.stop()
            await state.ids.declare()
            await state.ids.start()

    def read(self, message: DeliveredMessage) -> wire.Received:
        return wire.read(message, prefix=self.prefix, classic=self.classic)

    def state(self, queue: str) -> QueueState:
        try:
            return self.queues[queue]
        except KeyError:
            raise NotFound(f"queue {queue!r} was not declared on this broker") from None

    # -- producing ------------------------------------------------------------------------

    async def send(self, queue: str, messages: Sequence[OutgoingMessage]) -> list[bool]:
        if queue not in self.queues:
            return await self._send_elsewhere(queue, messages)
        state = self.state(queue)
        now = time.time()
        stored: list[bool] = []
        plans: list[tuple[OutgoingMessage, str, Any, str, str]] = []
        try:
            for message in messages:
                send = os.urandom(16).hex()  # 128 random bits (uuid4: 122), a quarter of the cost
                route = self._route(state, message, now, send)
                if not state.ids.reserve(message.id, send, now):
                    stored.append(False)
                    continue
                plans.append((message, send, *route))
                stored.append(True)
            publishing = [
                self.connection.publish(
                    message.body, exchange=exchange, routing_key=key, properties=props
                )
                for message, _, props, exchange, key in plans
            ]
            if len(publishing) == 1:
                await publishing[0]  # the usual send: one message, no task to gather it
            else:
                await asyncio.gather(*publishing)
        except BaseException:
            for message, send, *_ in plans:
                state.ids.forget(message.id, send)
            raise
        await state.ids.record([(message.id, send, now) for message, send, *_ in plans])
        if any(message.key is not None for message, *_ in plans):
            state.wake.set()
        return stored

    async def _send_elsewhere(self, queue: str, messages: Sequence[OutgoingMessage]) -> list[bool]:
        """Send to a queue this node did not declare: a reply to another node's reply
        queue, or (``amqp:{name}``) to a queue another client made. Its queues are
        whoever declared them to make: one that is gone is NotFound, never made here.
        Not deduplicated (this node does not follow that queue's ids)."""
        target = wire.reply_address(self.prefix, queue)
        now = time.time()
        for message in messages:
            props = wire.outgoing(message, now=now, send=uuid.uuid4().hex, prefix=self.prefix)
            await self.connection.publish(
                message.body,
                routing_key=target,
                properties=props,
                unroutable=lambda: NotFound(f"queue {queue[:100]!r} has no queue on RabbitMQ"),
            )
        return [True] * len(messages)

    def _route(
        self, state: QueueState, message: OutgoingMessage, now: float, send: str
    ) -> tuple[Any, str, str]:
        """(properties, exchange, routing key) a new message is published with."""
        layout = state.layout
        props = wire.outgoing(message, now=now, send=send, prefix=self.prefix)
        if layout.temporary:  # a reply queue: replies are neither keyed nor delayed
            return props, "", layout.main
        if message.key is not None:
            n = partition_of(message.key, layout.partitions)
            state.partitions.hint(n)
            if message.delay > 0:
                due = now + message.delay
                props = wire.outgoing(message, now=now, send=send, prefix=self.prefix, due=due)
            return props, "", layout.part(n)
        if ticks(message.delay):
            return props, layout.delay_in, delay_key(ticks(message.delay))
        return props, "", layout.main

    # -- consuming ------------------------------------------------------------------------

    async def receive(self, queue: str, *, limit: int, lease: float, wait: float) -> list[Delivery]:
        state = self.state(queue)
        deadline = time.monotonic() + wait
        while True:
            if not self.connection.alive:
                raise unavailable("is not connected")
            state.wake.clear()
            state.receiving = time.monotonic()
            self._scan_keys(state)
            got = await state.partitions.take(limit, lease)
            left = deadline - time.monotonic()
            if len(got) < limit:
                waits = not got and left > 0
                got += await self._unkeyed(state, limit, limit - len(got), lease, wait=waits)
            if got or left <= 0:
                for held in got:
                    if held.source == "main":
                        state.held.add(held)
                self._lease_changed.set()
                got.sort(key=lambda held: held.received.sent)
                return [held.delivery() for held in got]
            await self._wait(state, min(deadline - time.monotonic(), self.poll_interval))

    async def _unkeyed(
        self, state: QueueState, limit: int, room: int, lease: float, *, wait: bool
    ) -> list[Held]:
        """Unkeyed messages: those received ahead, or (when none) what the consumer or,
        if this receive may not wait, ``basic.get`` finds."""
        taken: list[tuple[DeliveredMessage, Consumer | None]] = [*state.feed.take(room)]
        if not taken:
            if wait:
                await state.feed.ensure(limit)
            else:
                taken += [(message, None) for message in await self._get(state, room)]
        return await self._held(state, taken, lease)

    def _scan_keys(self, state: QueueState) -> None:
        """Look for keyed messages other nodes sent, every poll interval, in a task of the
        queue's own (while it is received from), not in the receives themselves."""
        if state.layout.temporary or (state.scanner is not None and not state.scanner.done()):
            return
        queue = state.layout.queue

        async def scan() -> None:
            while time.monotonic() - state.receiving < 10 * self.poll_interval + 5:
                try:
                    if await state.partitions.scan():
                        state.wake.set()
                except Exception as exc:
                    log.debug("queue %s: looking for keyed messages failed: %s", queue, exc)
                await asyncio.sleep(self.poll_interval)

        state.scanner = asyncio.get_running_loop().create_task(
            scan(), name=f"polyport-rabbitmq-keys-{queue}"
        )

    async def _wait(self, state: QueueState, seconds: float) -> None:
        """Until the consumer receives something, this node sends or settles something
        a receive may take, or ``seconds`` passed."""
        if seconds <= 0:
            return
        waits = [asyncio.ensure_future(e.wait()) for e in (state.feed.arrived, state.wake)]
        try:
            await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()

    async def _get(self, state: QueueState, limit: int) -> list[DeliveredMessage]:
        """Unkeyed messages ready now, without waiting (``basic.get``)."""
        from aiormq import spec

        channel = self.connection.work
        arrived: list[DeliveredMessage] = []
        with amqp_errors(f"did not read {state.layout.main}"):
            while len(arrived) < limit:
                async with asyncio.timeout(self.connection.timeout):
                    message = await channel.basic_get(state.layout.main, no_ack=False)
                if not isinstance(message.delivery, spec.Basic.GetOk):
                    break
                arrived.append(message)
        return arrived

    async def _held(
        self,
        state: QueueState,
        arrived: list[tuple[DeliveredMessage, Consumer | None]],
        lease: float,
    ) -> list[Held]:
        """Deliveries of the main queue as held, second copies of an id dropped."""
        now = time.time()
        got: list[Held] = []
        generation = self.connection.generation
        for message, consumer in arrived:
            received = self.read(message)
            tag = getattr(message.delivery, "delivery_tag", 0) or 0
            first_send = state.ids.first_send(received.id, now)
            if received.send is not None and first_send not in (None, received.send):
                log.info("queue %s: dropped a second copy of %s", state.layout.queue, received.id)
                await state.feed.settling(consumer)
                with amqp_errors("did not acknowledge"):
                    await message.channel.basic_ack(tag)
                continue
            got.append(
                Held(
                    queue=state.layout.queue,
                    source="main",
                    generation=generation,
                    channel=message.channel,
                    tag=tag,
                    message=message,
                    received=received,
                    attempt=1 + received.attempts + received.returns,
                    lease_until=now + lease,
                    consumer=consumer,
                )
            )
        return got

    async def extend(self, deliveries: Sequence[Delivery], lease: float) -> int:
        until = time.time() + lease
        count = 0
        for delivery in deliveries:
            held = held_of(delivery)
            if held.state == "held" and held.generation == self.connection.generation:
                held.lease_until = until
                count += 1
        return count

    # -- settling -------------------------------------------------------------------------

    async def ack(self, delivery: Delivery) -> bool:
        return await self._settle(held_of(delivery), None, None)

    async def retry(self, delivery: Delivery, *, delay: float, error: str) -> bool:
        held = held_of(delivery)
        r = held.received
        count = ticks(delay)
        if held.source == "key":
            due = time.time() + delay if count else None
            props = wire.copy(held.message, r, attempts=held.attempt, error=error, due=due)
            assert held.partition is not None
            return await held_state(self, held).partitions.settle(
                held,
                copy_to=held_state(self, held).layout.head(held.partition),
                properties=props,
                blocked_until=due,
            )
        layout = held_state(self, held).layout
        props = wire.copy(held.message, r, attempts=held.attempt, error=error)
        if count:
            return await self._settle(held, (layout.delay_in, delay_key(count)), props)
        return await self._settle(held, ("", layout.main), props)

    async def release(self, delivery: Delivery) -> bool:
        held = held_of(delivery)
        props = wire.copy(held.message, held.received, attempts=held.attempt - 1)
        layout = held_state(self, held).layout
        if held.source == "key":
            assert held.partition is not None
            return await held_state(self, held).partitions.settle(
                held, copy_to=layout.head(held.partition), properties=props
            )
        return await self._settle(held, ("", layout.main), props)

    async def dead_letter(self, delivery: Delivery, *, error: str) -> bool:
        held = held_of(delivery)
        props = wire.copy(
            held.message, held.received, attempts=held.attempt, error=error, died=time.time()
        )
        layout = held_state(self, held).layout
        if held.source == "key":
            return await held_state(self, held).partitions.settle(
                held, copy_to=layout.dead, properties=props
            )
        return await self._settle(held, ("", layout.dead), props)

    async def _settle(self, held: Held, target: tuple[str, str] | None, props: Any) -> bool:
        """Acknowledge ``held`` after storing its copy in ``target`` (exchange, routing key)."""
        state = held_state(self, held)
        if held.source == "key":
            return await state.partitions.settle(held)
        if held.state != "held" or held.generation != self.connection.generation:
            return False
        held.state = "settling"
        try:
            if target is not None:
                exchange, key = target
                await self.connection.publish(
                    held.message.body, exchange=exchange, routing_key=key, properties=props
                )
            if held.generation != self.connection.generation:
                held.state = "lost"
                return False
            await state.feed.settling(held.consumer)
            with amqp_errors("did not acknowledge"):
                await held.channel.basic_ack(held.tag)
        except BaseException:
            held.state = "held"
            raise
        held.state = "done"
        state.held.discard(held)
        return True

    async def _expire_leases(self) -> None:
        """Give back every message whose lease ran out (RabbitMQ counts the return)."""
        while True:
            self._lease_changed.clear()
            now = time.time()
            soonest = now + 1.0
            for state in self.queues.values():
                for held in [*state.held, *state.partitions.held()]:
                    if held.state != "held":
                        continue
                    if held.lease_until > now:
                        soonest = min(soonest, held.lease_until)
                        continue
                    log.info("queue %s: the lease of %s ran out", held.queue, held.received.id)
                    await self._give_back(state, held)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.01, soonest - time.time())):
                    await self._lease_changed.wait()

    async def _give_back(self, state: QueueState, held: Held) -> None:
        if held.source == "key":
            await state.partitions.expire(held)
            return
        held.state = "lost"
        state.held.discard(held)
        if held.generation == self.connection.generation and not held.channel.is_closed:
            # A full consumer here would take it straight back: it goes to whoever asks.
            await state.feed.cancel_if_full()
            await state.feed.settling(held.consumer)
            with contextlib.suppress(Exception):
                await held.channel.basic_nack(held.tag, requeue=True)

    # -- operating ------------------------------------------------------------------------

    async def dead(
        self, queue: str, *, limit: int = 50, after: str | None = None
    ) -> list[QueuedMessage]:
        return await operations.dead(self, self.state(queue), limit=limit, after=after)

    async def redrive(self, queue: str, ids: Sequence[str] | None = None) -> int:
        return await operations.redrive(self, self.state(queue), ids)

    async def peek(self, queue: str, *, limit: int = 50) -> list[QueuedMessage]:
        return await operations.peek(self, self.state(queue), limit=limit)

    async def stats(self, queue: str) -> QueueStats:
        return await operations.stats(self, self.state(queue))

    async def purge(self, queue: str) -> int:
        return await operations.purge(self, self.state(queue))

    async def expire(self, queue: str) -> int:
        return self.state(queue).ids.expire(time.time())


def held_state(broker: RabbitBroker, held: Held) -> QueueState:
    return broker.state(held.queue)


__all__ = ["QueueState", "RabbitBroker"]

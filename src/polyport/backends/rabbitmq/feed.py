"""A queue's unkeyed messages as this node receives them: one consumer, cancelled when full.

RabbitMQ pushes a queue's messages to its consumers, up to each consumer's
prefetch. This node keeps one consumer per queue, made by the first receive
that needed it with that receive's ``limit`` as prefetch — for the queue
runner, its ``prefetch`` — so the node holds what its runner holds and has
room for (received ahead, as the port allows), and another node's consumer
receives the rest at once.

Cancelling a consumer that has room races RabbitMQ: a message pushed just as
the cancel arrives is given back by the server *and counted* as a return
(``x-delivery-count``), as if a run had failed. So a consumer is cancelled
only when it is full — it holds its whole prefetch, so RabbitMQ sends it
nothing — and no settlement of its messages is sent before the cancel is
answered (they wait for it). That happens when a receive needs room while the
consumer is full (it makes a new one), and before a message whose lease ran
out is given back (so that it goes to whichever node asks, not back here).
Only a node closing cancels a consumer with room.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

from polyport.backends.rabbitmq.connection import AmqpConnection, amqp_errors

if TYPE_CHECKING:
    from aiormq.abc import DeliveredMessage


@dataclass(eq=False)
class Consumer:
    """One consumer of this node on a queue, and what it holds."""

    tag: str
    prefetch: int
    generation: int
    #: Delivered and not yet settled: when it reaches ``prefetch``, RabbitMQ sends no more.
    outstanding: int = 0
    #: Set once its cancel was answered; settlements of its messages wait for it.
    cancelled: asyncio.Event | None = None
    active: bool = True


class Feed:
    """This node's consumer of one queue, and the messages it received ahead."""

    def __init__(self, connection: AmqpConnection, queue: str, lock: asyncio.Lock) -> None:
        self.connection = connection
        self.queue = queue
        #: Shared by the feeds of one connection: a prefetch applies to the next consumer.
        self.lock = lock
        self.buffer: deque[tuple[DeliveredMessage, Consumer]] = deque()
        self.active: Consumer | None = None
        self.arrived = asyncio.Event()

    def lost(self) -> None:
        """The connection was lost: RabbitMQ has taken back everything."""
        self.buffer.clear()
        self.active = None

    def take(self, limit: int) -> list[tuple[DeliveredMessage, Consumer]]:
        """Up to ``limit`` messages received ahead, oldest first."""
        taken: list[tuple[DeliveredMessage, Consumer]] = []
        while self.buffer and len(taken) < limit:
            message, consumer = self.buffer.popleft()
            if message.channel.is_closed:
                continue  # the connection was lost since: RabbitMQ has it back
            taken.append((message, consumer))
        if not self.buffer:
            self.arrived.clear()
        return taken

    async def ensure(self, prefetch: int) -> None:
        """A consumer with room: the one there is, or (cancelling a full one) a new one
        with ``prefetch``."""
        active = self.active
        if active is not None and active.generation == self.connection.generation:
            if active.outstanding < active.prefetch:
                return
            await self.cancel_if_full()
        channel = self.connection.work
        consumer = Consumer(f"polyport-{uuid.uuid4().hex}", prefetch, self.connection.generation)

        async def deliver(message: DeliveredMessage) -> None:
            consumer.outstanding += 1
            self.buffer.append((message, consumer))
            self.arrived.set()

        with amqp_errors(f"did not consume {self.queue}"):
            async with self.lock, asyncio.timeout(self.connection.timeout):
                await channel.basic_qos(prefetch_count=prefetch)
                await channel.basic_consume(self.queue, deliver, consumer_tag=consumer.tag)
        self.active = consumer

    async def cancel_if_full(self) -> None:
        """Cancel the consumer if it holds its whole prefetch (then nothing can race the
        cancel); settlements of its messages wait until RabbitMQ answered."""
        consumer = self.active
        if consumer is None or consumer.outstanding < consumer.prefetch:
            return
        self.active = None
        consumer.active = False
        consumer.cancelled = asyncio.Event()
        try:
            if consumer.generation == self.connection.generation:
                with contextlib.suppress(Exception):
                    channel = self.connection.work
                    async with asyncio.timeout(self.connection.timeout):
                        await channel.basic_cancel(consumer.tag)
        finally:
            consumer.cancelled.set()

    async def stop(self) -> None:
        """Cancel the consumer, full or not: the node is closing. (With room, a message
        RabbitMQ pushes at that very moment is given back counted: the one race left.)"""
        consumer, self.active = self.active, None
        if consumer is None or consumer.generation != self.connection.generation:
            return
        consumer.active = False
        consumer.cancelled = asyncio.Event()
        try:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self.connection.timeout):
                    await self.connection.work.basic_cancel(consumer.tag)
        finally:
            consumer.cancelled.set()

    async def settling(self, consumer: Consumer | None) -> None:
        """Call before settling a message of ``consumer``: waits for its cancel if one
        is under way, then counts the room the settlement makes."""
        if consumer is None:
            return
        if consumer.cancelled is not None:
            await consumer.cancelled.wait()
        consumer.outstanding -= 1


__all__ = ["Consumer", "Feed"]

"""Listing, counting, redriving and purging a queue on RabbitMQ, without the management API.

AMQP reads a queue only by taking its messages, so a listing takes them on a
channel of its own and gives them back:

* **dead letters** (:func:`dead`): every dead letter is taken (up to
  :data:`BROWSE`), then the channel is closed, which returns them all, in
  order; a page is cut from them by cursor (when each died, then its id);
* **peek** (:func:`peek`): the messages this node holds, the first ready
  ones of the queue — each *copied* back to the queue's end, its count of
  attempts unchanged (a plain return would count as one), so a peek moves
  them to the back — and the delayed ones, taken from the delay levels and
  returned (their time is kept). Keyed messages waiting in the partitions are
  counted, not listed: taking them could break their order;
* **stats** (:func:`stats`) read ready counts with passive declares: waiting
  is every ready message (queue, partitions, heads, delay levels); in flight
  is what **this node** holds, handed out or received ahead (RabbitMQ tells
  AMQP clients nothing of other consumers' unacknowledged messages); dead is
  the dead-letter queue's count.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from polyport.backends.rabbitmq import wire
from polyport.backends.rabbitmq.connection import amqp_errors
from polyport.backends.rabbitmq.layout import LEVELS, partition_of
from polyport.core.broker import QueuedMessage, QueueStats

if TYPE_CHECKING:
    from aiormq.abc import AbstractChannel, DeliveredMessage

    from polyport.backends.rabbitmq.rabbitbroker import QueueState, RabbitBroker

#: The most messages one listing takes from a queue.
BROWSE = 10_000


async def _take_all(
    channel: AbstractChannel, queue: str, limit: int, within: float
) -> list[DeliveredMessage]:
    """Up to ``limit`` messages of ``queue``, received (not acknowledged) on ``channel``."""
    from aiormq import spec

    got: list[DeliveredMessage] = []
    with amqp_errors(f"did not read {queue}"):
        while len(got) < limit:
            async with asyncio.timeout(within):
                message = await channel.basic_get(queue, no_ack=False)
            if not isinstance(message.delivery, spec.Basic.GetOk):
                break
            got.append(message)
    return got


async def _close(channel: AbstractChannel, within: float) -> None:
    """Close a listing's channel: what it took and did not acknowledge goes back."""
    if not channel.is_closed:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(channel.close(), within)


def _tag(message: DeliveredMessage) -> int:
    return getattr(message.delivery, "delivery_tag", 0) or 0


def _dead_listed(broker: RabbitBroker, queue: str, message: DeliveredMessage) -> QueuedMessage:
    r = broker.read(message)
    died = r.died if r.died is not None else r.sent
    return QueuedMessage(
        queue=queue,
        id=r.id,
        body=r.body,
        headers=r.headers,
        key=r.key,
        state="dead",
        attempts=r.attempts,
        sent=r.sent,
        due=None,
        died=died,
        error=r.error,
        cursor=f"{int(died * 1e6):016d}:{r.id}",
    )


async def dead(
    broker: RabbitBroker, state: QueueState, *, limit: int, after: str | None
) -> list[QueuedMessage]:
    if state.layout.temporary:
        return []
    connection = broker.connection
    channel = await connection.channel()
    try:
        taken = await _take_all(channel, state.layout.dead, BROWSE, connection.timeout)
    finally:
        await _close(channel, connection.timeout)
    listed = sorted(
        (_dead_listed(broker, state.layout.queue, m) for m in taken),
        key=lambda m: m.cursor,
    )
    if after is not None:
        listed = [m for m in listed if m.cursor > after]
    return listed[:limit]


async def redrive(broker: RabbitBroker, state: QueueState, ids: Sequence[str] | None) -> int:
    """Dead letters back to their queue (keyed ones to their partition's end), attempts
    from zero, sent now; the others go back to the dead letters."""
    connection = broker.connection
    layout = state.layout
    if layout.temporary:
        return 0
    wanted = None if ids is None else set(ids)
    count = 0
    while True:
        channel = await connection.channel()
        try:
            taken = await _take_all(channel, layout.dead, BROWSE, connection.timeout)
            now = time.time()
            for message in taken:
                r = broker.read(message)
                if wanted is not None and r.id not in wanted:
                    continue
                target = layout.main
                if r.key is not None:
                    n = partition_of(r.key, layout.partitions)
                    target = layout.part(n)
                    state.partitions.hint(n)
                props = wire.copy(message, r, attempts=0, error=None, due=None, sent=now)
                await connection.publish(message.body, routing_key=target, properties=props)
                with amqp_errors("did not acknowledge"):
                    await channel.basic_ack(_tag(message))
                count += 1
        finally:
            await _close(channel, connection.timeout)
        if wanted is not None or len(taken) < BROWSE:
            break
    if count:
        state.wake.set()
    return count


async def peek(broker: RabbitBroker, state: QueueState, *, limit: int) -> list[QueuedMessage]:
    connection = broker.connection
    layout = state.layout
    found = [held.listed() for held in [*state.held, *state.partitions.held()]]
    for message, _ in state.feed.buffer:  # received ahead: held by this node too
        r = broker.read(message)
        found.append(replace(_waiting(layout.queue, r, due=None), state="in_flight"))
    channel = await connection.channel()
    try:
        # Ready messages: copied to the back of the queue, then acknowledged.
        for message in await _take_all(channel, layout.main, limit, connection.timeout):
            r = broker.read(message)
            props = wire.copy(message, r, attempts=r.attempts + r.returns)
            await connection.publish(message.body, routing_key=layout.main, properties=props)
            with amqp_errors("did not acknowledge"):
                await channel.basic_ack(_tag(message))
            found.append(_waiting(layout.queue, r, due=None))
        # Delayed messages: taken from the levels and given back with the channel.
        for k in reversed(range(LEVELS)):
            if len(found) >= limit or layout.temporary:
                break
            level = layout.level(k)
            ready, _ = await connection.count(level)
            if not ready:
                continue
            for message in await _take_all(channel, level, limit, connection.timeout):
                r = broker.read(message)
                found.append(_waiting(layout.queue, r, due=None))
    finally:
        await _close(channel, connection.timeout)
    found.sort(key=lambda m: m.cursor)
    return found[:limit]


def _waiting(queue: str, r: wire.Received, *, due: float | None) -> QueuedMessage:
    return QueuedMessage(
        queue=queue,
        id=r.id,
        body=r.body,
        headers=r.headers,
        key=None,
        state="waiting",
        attempts=r.attempts + r.returns,
        sent=r.sent,
        due=due,
        died=None,
        error=r.error,
        cursor=f"{int(r.sent * 1e6):016d}:{r.id}",
    )


async def stats(broker: RabbitBroker, state: QueueState) -> QueueStats:
    connection = broker.connection
    layout = state.layout
    waiting = 0
    for name in layout.queues():
        if name == layout.dead:
            continue
        ready, _ = await connection.count(name)
        waiting += ready
    dead_count = 0 if layout.temporary else (await connection.count(layout.dead))[0]
    in_flight = len(state.held) + len(state.partitions.held()) + len(state.feed.buffer)
    return QueueStats(waiting=waiting, in_flight=in_flight, dead=dead_count)


async def purge(broker: RabbitBroker, state: QueueState) -> int:
    """Every message ready anywhere in the queue, and those this node holds; and its ids.
    What other nodes hold is theirs to settle (their settlements still work).

    The queues are purged first: this node's consumer, given room by the acks of
    what it held, would otherwise receive what was still ready after counting.
    """
    connection = broker.connection
    count = 0
    channel = await connection.ctl()
    with amqp_errors(f"did not purge {state.layout.main}"):
        for name in state.layout.queues():
            async with asyncio.timeout(connection.timeout):
                ok = await channel.queue_purge(name)
            count += ok.message_count or 0
    for held in [*state.held, *state.partitions.held()]:
        if await broker.ack(held.delivery()):
            count += 1
    for message, consumer in state.feed.take(len(state.feed.buffer)):
        await state.feed.settling(consumer)
        with amqp_errors("did not acknowledge"):
            await message.channel.basic_ack(_tag(message))
        count += 1
    await state.ids.purge()
    return count


__all__ = ["BROWSE", "dead", "peek", "purge", "redrive", "stats"]

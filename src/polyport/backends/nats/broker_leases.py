"""The receipts a node holds, and their leases: ``+WPI`` when renewed, and when asked for
longer than the consumer's ``AckWait``.

JetStream's lease is the consumer's ``AckWait``, restarted by each ``+WPI``
(in progress) from the holder. :meth:`LeaseKeeper.extend` is the port's
renewal; the keeper's own loop holds a receipt whose lease was asked longer
than ``AckWait`` by sending ``+WPI`` every third of it until the lease asked
for is within one ``AckWait``. A receipt whose ack wait ran out without one
(an event loop stalled past it) is let go: JetStream may have delivered the
message again, and its lease record decides who settles it.

A **fast** receipt (a first delivery without key or delay, see :mod:`.broker`)
has no lease record; what fences it is time. JetStream starts a delivery's
ack wait when it sends the message, after it got the pull request, so the
node counts the lease from *before* it sent that request (``since``): the
server's deadline is never earlier. Until :attr:`Held.fast_until` — that
moment plus ``AckWait`` less :func:`fast_margin` for the ack's way there —
an ack needs no record. ``+WPI`` does not move that moment (a progress ack
is not answered, so the node cannot know when, or whether, it arrived).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from polyport.backends.nats.broker_records import LeaseRecord
from polyport.backends.nats.broker_wire import QueueNames, Received
from polyport.backends.nats.client import JetStreamClient
from polyport.core.broker import Delivery
from polyport.core.errors import Unavailable


def fast_margin(ack_wait: float) -> float:
    """Seconds of a fast receipt's lease kept back for its ack's way to the server."""
    return max(0.5, ack_wait / 10)


@dataclass(slots=True, eq=False)
class Held:
    """A receipt as its node holds it: the :attr:`Delivery.token`."""

    names: QueueNames
    received: Received
    #: The record this receipt wrote; a fast receipt's is the one it would write
    #: (``held`` by its delivery, one attempt), with no revision.
    record: LeaseRecord
    #: The lease record's revision this receipt wrote: settlements are set at it
    #: (0 for a fast receipt: a settlement that writes the record sets it on "none yet").
    revision: int
    ack_wait: float
    #: When the ack wait last restarted (receipt, progress), monotonic.
    touched: float
    #: When the lease asked for ends, monotonic.
    until: float
    #: When the pull request that brought it was sent, monotonic (see the module's docstring).
    since: float
    #: Without a lease record (see the module's docstring).
    fast: bool = False
    settled: bool = False

    def lapsed(self, now: float) -> bool:
        return now > self.touched + self.ack_wait

    @property
    def fast_until(self) -> float:
        """Until when an ack of this fast receipt may go without a record (monotonic)."""
        return self.since + self.ack_wait - fast_margin(self.ack_wait)


def held_of(delivery: Delivery) -> Held:
    held: Any = delivery.token
    if not isinstance(held, Held):
        raise TypeError("this delivery was not received from a NATS JetStream broker")
    return held


class LeaseKeeper:
    """The receipts of one broker still held, kept until settled or let go."""

    def __init__(self, client: JetStreamClient) -> None:
        self.client = client
        self._held: set[Held] = set()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._keep(), name="polyport-nats-broker-leases")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._held.clear()

    def hold(
        self,
        names: QueueNames,
        r: Received,
        record: LeaseRecord,
        revision: int,
        ack_wait: float,
        lease: float,
        since: float,
        *,
        fast: bool = False,
    ) -> Held:
        now = time.monotonic()
        held = Held(names, r, record, revision, ack_wait, now, now + lease, since=since, fast=fast)
        self._held.add(held)
        return held

    def let_go(self, held: Held) -> None:
        held.settled = True
        self._held.discard(held)

    def let_go_queue(self, queue: str, *, but: str | None = None) -> None:
        """Let go the queue's receipts (those of its consumer made at ``but`` excepted):
        their consumer is gone, so their settlements are refused."""
        for held in [held for held in self._held if held.names.queue == queue]:
            if but is None or held.record.consumer != but:
                self.let_go(held)

    def fast_held(self, queue: str) -> list[Held]:
        """This node's fast receipts of ``queue`` still held (they have no lease record)."""
        now = time.monotonic()
        return [
            held
            for held in self._held
            if held.fast and held.names.queue == queue and not held.lapsed(now)
        ]

    async def extend(self, deliveries: Sequence[Delivery], lease: float) -> int:
        now = time.monotonic()
        count = 0
        for delivery in deliveries:
            held = held_of(delivery)
            if held.settled or held.lapsed(now):
                continue
            held.until = now + lease
            await self.client.send(held.received.reply, b"+WPI", "")
            held.touched = now
            count += 1
        return count

    async def _keep(self) -> None:
        while True:
            waits = [held.ack_wait for held in self._held]
            await asyncio.sleep(max(0.05, min([0.25, *(w / 4 for w in waits)])))
            now = time.monotonic()
            for held in list(self._held):
                if held.settled or held.lapsed(now):
                    self._held.discard(held)
                elif (
                    held.until > held.touched + held.ack_wait
                    and now >= held.touched + held.ack_wait / 3
                ):
                    try:
                        await self.client.send(held.received.reply, b"+WPI", "")
                    except Unavailable:
                        continue  # tried again next round, while the ack wait lasts
                    held.touched = now


__all__ = ["Held", "LeaseKeeper", "fast_margin", "held_of"]

"""A message this node received and has not settled: the lease RabbitMQ does not keep.

RabbitMQ keeps a received message unacknowledged until the channel that got
it acks it, gives it back, or closes — it has no lease of its own. So each
node keeps, per delivery, when its lease ends (:class:`Held`), gives the
message back itself when that time passes (a later settlement of it answers
False), and renews it on :meth:`~polyport.core.broker.Broker.extend`. A node
that dies needs no lease: its connection closes and RabbitMQ gives its
messages back at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from polyport.backends.rabbitmq.wire import Received
from polyport.core.broker import Delivery, QueuedMessage

if TYPE_CHECKING:
    from aiormq.abc import AbstractChannel, DeliveredMessage

    from polyport.backends.rabbitmq.feed import Consumer

#: held: leased; settling: an ack or a copy is on its way; done: settled; lost: given back.
State = Literal["held", "settling", "done", "lost"]


@dataclass(eq=False, slots=True)
class Held:
    """One delivery held by this node, as :attr:`Delivery.token`."""

    queue: str
    #: ``main``: from the queue itself; ``key``: the head of partition ``partition``.
    source: Literal["main", "key"]
    #: The connection's generation it was received on: an older one's deliveries are gone.
    generation: int
    channel: AbstractChannel
    tag: int
    message: DeliveredMessage
    received: Received
    attempt: int
    lease_until: float
    partition: int | None = None
    #: The consumer it came from (unkeyed, not by ``basic.get``): its room is counted.
    consumer: Consumer | None = None
    state: State = field(default="held")

    def delivery(self) -> Delivery:
        r = self.received
        return Delivery(
            queue=self.queue,
            id=r.id,
            body=r.body,
            headers=r.headers,
            key=r.key if self.source == "key" else None,
            attempt=self.attempt,
            sent=r.sent,
            lease_until=self.lease_until,
            error=r.error,
            token=self,
        )

    def listed(self) -> QueuedMessage:
        r = self.received
        return QueuedMessage(
            queue=self.queue,
            id=r.id,
            body=r.body,
            headers=r.headers,
            key=r.key if self.source == "key" else None,
            state="in_flight",
            attempts=self.attempt,
            sent=r.sent,
            due=self.lease_until,
            died=None,
            error=r.error,
            cursor=f"{int(r.sent * 1e6):016d}:{r.id}",
        )


def held_of(delivery: Delivery) -> Held:
    token = delivery.token
    if not isinstance(token, Held):
        raise TypeError("this delivery was not received from a RabbitMQ broker")
    return token


__all__ = ["Held", "State", "held_of"]

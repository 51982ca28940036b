"""The message broker port: durable queues of messages, consumed at least once.

What the message-queue pattern stands on (``shop.queue(...)``, see
:mod:`polyport.core.queues`). A broker keeps named queues; a producer sends
messages to one, durable before :meth:`Broker.send` returns; consumers
receive them under a **lease** and settle each: ack, retry later, dead-letter,
or give it back. A message whose consumer died is received again once its
lease has run out. Each backend passes the one contract suite in
``tests/contract/broker_contract.py``.

A message's life::

    ready ──receive──▶ in flight ──ack──▶ (gone)
      ▲  (or delayed)     │
      ├──retry (later)────┤
      ├──release──────────┤
      ├──lease ran out────┘
      │                   └──dead_letter──▶ dead ──redrive──▶ ready
      └───────────────────────────────────────────────────────┘

Guarantees every backend gives (the contract suite checks each):

* **Durable sends, deduplicated within a window.** A message is named by its
  ``id`` (the producer's, or one made for it); sending an id the queue has
  seen within its ``dedup_window`` stores nothing and answers False.
* **At least once, never lost.** A received message is in flight until its
  lease ends; a consumer that dies (SIGKILL, a lost host) leaves its messages
  to be received again after the lease. :meth:`Broker.extend` keeps a long
  handler's lease.
* **Only the current lease settles**: a consumer whose lease ran out and was
  received over is refused (False), never overwriting the one that took over.
* **Counted attempts.** A delivery's ``attempt`` counts receipts since the
  message was sent (or redriven): a retry or a lost lease counts one more, a
  release does not.
* **Dead letters keep their story**: attempts, the last error, when the
  message was sent and when it died — until redriven (ready again, attempts
  from zero) or purged.
* **Delays**: a message sent with ``delay``, or retried with one, is not
  received before it has passed.
* **Ordering keys**: messages of one queue that share a ``key`` are received
  one at a time, in the order they were sent: the next is not received while
  an earlier one is ready, delayed or in flight (a dead one no longer holds
  the key back).

Times are Unix seconds from the broker's clock (a backend may take it from
its server). Failures of the broker itself (lost connection, full disk)
propagate as :class:`~polyport.core.errors.Unavailable`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from polyport.core.errors import InvalidArgument

#: The longest queue name, message id and ordering key.
MAX_NAME = 200
#: What a message id or ordering key may be: 1-200 characters, none of them a control
#: character (C0, DEL, C1). As a JSON Schema pattern, so documents say exactly this.
NAME_PATTERN = "^[^\\u0000-\\u001f\\u007f-\\u009f]{1,200}$"
_NAME = re.compile("[^\x00-\x1f\x7f-\x9f]{1,200}")


@dataclass(frozen=True, slots=True)
class QueueOptions:
    """What a broker must know of a queue to keep it."""

    name: str
    #: Seconds a message id is remembered at least, from its send.
    dedup_window: float = 86400.0
    #: This node's alone and gone with it (its reply queue): only it receives, others
    #: only send (unkeyed, undelayed), and a broker may tie it to the node's connection.
    temporary: bool = False


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """A message to send: its id, body and headers, and when and in what order it may run."""

    id: str
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)
    #: Messages sharing a key are received one at a time, in order (None: no order).
    key: str | None = None
    #: Seconds before it may be received.
    delay: float = 0.0


@dataclass(frozen=True, slots=True)
class Delivery:
    """A message received under a lease, as a consumer settles it."""

    queue: str
    id: str
    body: bytes
    headers: Mapping[str, str]
    key: str | None
    #: 1 on the first receipt; each retry or lost lease counts one more.
    attempt: int
    #: When the message was sent (or last redriven).
    sent: float
    #: When the lease ends unless extended.
    lease_until: float
    #: The error the last attempt ended with, if it failed.
    error: str | None
    #: What the backend needs to settle this receipt (a lease token, a tag).
    token: Any = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class QueuedMessage:
    """A message as a listing shows it (peek, the dead letters)."""

    queue: str
    id: str
    body: bytes
    headers: Mapping[str, str]
    key: str | None
    #: ``waiting``, ``in_flight`` or ``dead``.
    state: str
    attempts: int
    sent: float
    #: When it may next be received (waiting) or its lease ends (in flight).
    due: float | None
    #: When it died (dead letters only).
    died: float | None
    error: str | None
    #: The broker's order of the message, as a listing's cursor.
    cursor: str


@dataclass(frozen=True, slots=True)
class QueueStats:
    """How many messages a queue holds, by state."""

    #: Waiting to be received: ready now or delayed (the queue's depth).
    waiting: int
    #: Received and not yet settled.
    in_flight: int
    dead: int


class Broker(Protocol):
    """Named queues of messages in one broker, shared by the nodes that connect to it.

    The node builds it (choosing the backend) and opens it; the queue runner
    (:class:`~polyport.core.queuerunner.QueueRunner`) declares the service's
    queues and sends, receives and settles through it.
    """

    #: The backend's name for logs and ``/metrics`` (``sqlite``, ``rabbitmq``, …).
    kind: str

    async def open(self) -> None:
        """Connect."""
        ...

    async def close(self) -> None: ...

    async def declare(self, queue: QueueOptions) -> None:
        """Create what ``queue`` needs on the broker, or check it exists as asked."""
        ...

    async def send(self, queue: str, messages: Sequence[OutgoingMessage]) -> list[bool]:
        """Store ``messages`` in order; for each, False if its id was a duplicate.

        Durable when it returns: each True message will be received.
        """
        ...

    async def receive(self, queue: str, *, limit: int, lease: float, wait: float) -> list[Delivery]:
        """Up to ``limit`` messages, each leased for ``lease`` seconds.

        Waits up to ``wait`` seconds for the first when none is ready; returns
        as soon as it has some.
        """
        ...

    async def extend(self, deliveries: Sequence[Delivery], lease: float) -> int:
        """Renew the leases of ``deliveries`` still held, to ``lease`` seconds from now;
        how many were still held."""
        ...

    async def ack(self, delivery: Delivery) -> bool:
        """Handled: the message leaves the queue (its id stays known for dedup)."""
        ...

    async def retry(self, delivery: Delivery, *, delay: float, error: str) -> bool:
        """Failed: ready again after ``delay`` seconds, the error kept."""
        ...

    async def release(self, delivery: Delivery) -> bool:
        """Given back unhandled (the consumer stops): ready now, the receipt not counted."""
        ...

    async def dead_letter(self, delivery: Delivery, *, error: str) -> bool:
        """Failed for the last time (or invalid): kept as a dead letter with ``error``."""
        ...

    async def dead(
        self, queue: str, *, limit: int = 50, after: str | None = None
    ) -> list[QueuedMessage]:
        """The dead letters, a page in the broker's order; ``after`` is the previous
        page's last ``cursor``."""
        ...

    async def redrive(self, queue: str, ids: Sequence[str] | None = None) -> int:
        """Make dead letters ready again (those named, or all); how many were.

        Each starts a fresh count of attempts. Durable when it returns.
        """
        ...

    async def peek(self, queue: str, *, limit: int = 50) -> list[QueuedMessage]:
        """Messages waiting or in flight, in the broker's order, without receiving them."""
        ...

    async def stats(self, queue: str) -> QueueStats: ...

    async def expire(self, queue: str) -> int:
        """Forget message ids older than the queue's dedup window, if the broker does not
        by itself; how many (the queue runner calls it from time to time)."""
        ...

    async def purge(self, queue: str) -> int:
        """Delete every message of the queue — waiting, in flight, dead — and forget its
        ids; how many messages there were."""
        ...


def check_name(what: str, name: str) -> None:
    """Refuse an empty or overlong id or key, or one with a control character."""
    if _NAME.fullmatch(name) is None:
        raise InvalidArgument(
            f"a message {what} must be 1-{MAX_NAME} characters without control characters, "
            f"not {name[:40]!r}",
            details=[{"field": what, "message": f"1-{MAX_NAME} characters, no control ones"}],
        )


__all__ = [
    "MAX_NAME",
    "NAME_PATTERN",
    "Broker",
    "Delivery",
    "OutgoingMessage",
    "QueueOptions",
    "QueueStats",
    "QueuedMessage",
    "check_name",
]

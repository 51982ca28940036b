"""Where a polyport queue lives on RabbitMQ: the names of its queues and exchanges.

For the queue ``payments`` under the prefix ``polyport``::

    polyport.payments                   unkeyed messages, ready (quorum)
    polyport.payments.dead              dead letters (quorum)
    polyport.payments.ids               the id log: one record per send (stream)
    polyport.payments.key.{n}           keyed messages of partition n, as sent (quorum)
    polyport.payments.key.{n}.head      partition n's head: the one being handled or waiting
    polyport.payments.key.{n}.lock      the node holding partition n (exclusive, not durable)
    polyport.payments.delay.{k}         delay level k: holds a message 2^k ticks (quorum)

and one topic exchange per delay level (same names) plus
``polyport.payments.delay.out``. A node's reply queue (a temporary queue) is
its main queue alone, exclusive to the node's connection. A delay of *n* ticks is spelled as the
routing key of its bits, highest first (``0.….1.0.1``); level *k*'s exchange
sends a message whose bit *k* is 1 through its queue (whose expired messages
are dead-lettered, routing key unchanged, to level *k-1*'s exchange) and one
whose bit is 0 straight on, so a message waits exactly the levels of its set
bits, and ``delay.out`` hands it to the queue.
"""

from __future__ import annotations

import math
import re
import zlib
from dataclasses import dataclass

#: One tick of delay, in seconds: delays are rounded up to it.
TICK = 0.1
#: Delay levels: 2^0 … 2^24 ticks, so up to 38 days (the longest delay is 30).
LEVELS = 25
#: What a prefix may be made of (it starts every name the broker declares).
_PREFIX = re.compile(r"^[A-Za-z0-9_.\-]{1,100}$")


def valid_prefix(prefix: str) -> bool:
    return _PREFIX.fullmatch(prefix) is not None


def ticks(delay: float) -> int:
    """A delay in ticks, rounded up (so never early), at most what the levels hold."""
    if delay <= 0:
        return 0
    return min(math.ceil(round(delay / TICK, 6)), (1 << LEVELS) - 1)


def delay_key(count: int) -> str:
    """The routing key that sends a message through the levels of ``count``'s bits."""
    return ".".join("1" if count >> k & 1 else "0" for k in reversed(range(LEVELS)))


def partition_of(key: str, partitions: int) -> int:
    """The partition of an ordering key: CRC-32 of its UTF-8, modulo the partitions."""
    return zlib.crc32(key.encode()) % partitions


@dataclass(frozen=True, slots=True)
class Layout:
    """The names of one polyport queue's queues and exchanges."""

    prefix: str
    queue: str
    partitions: int
    #: A node's own queue (its reply queue): only the main queue, exclusive to the node.
    temporary: bool = False

    @property
    def main(self) -> str:
        return f"{self.prefix}.{self.queue}"

    @property
    def dead(self) -> str:
        return f"{self.main}.dead"

    @property
    def ids(self) -> str:
        return f"{self.main}.ids"

    def part(self, n: int) -> str:
        return f"{self.main}.key.{n}"

    def head(self, n: int) -> str:
        return f"{self.main}.key.{n}.head"

    def lock(self, n: int) -> str:
        return f"{self.main}.key.{n}.lock"

    def level(self, k: int) -> str:
        """Delay level ``k``: its queue and its exchange share the name."""
        return f"{self.main}.delay.{k}"

    @property
    def delay_out(self) -> str:
        return f"{self.main}.delay.out"

    @property
    def delay_in(self) -> str:
        """Where a delayed message is published: the highest level's exchange."""
        return self.level(LEVELS - 1)

    def durable_queues(self) -> list[str]:
        """Every durable queue of this polyport queue (not the stream, not the locks)."""
        if self.temporary:
            return []
        return [
            self.main,
            self.dead,
            *(name for n in range(self.partitions) for name in (self.part(n), self.head(n))),
            *(self.level(k) for k in range(LEVELS)),
        ]

    def queues(self) -> list[str]:
        """Every queue that holds its messages (counted by stats, emptied by a purge)."""
        return [self.main] if self.temporary else self.durable_queues()

    def exchanges(self) -> list[str]:
        if self.temporary:
            return []
        return [*(self.level(k) for k in range(LEVELS)), self.delay_out]


__all__ = [
    "LEVELS",
    "TICK",
    "Layout",
    "delay_key",
    "partition_of",
    "ticks",
    "valid_prefix",
]

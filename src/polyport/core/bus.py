"""The bus port: how nodes that share one event log tell each other it has grown.

Several nodes on one engine append to one log; each node's subscribers must
also get the events the others appended. The log is the truth — every event is
read from it, in log order — and the bus is only the wake-up call: after a
node's events are durable it *announces* ``(channel, seq)`` pairs, and every
other node, *told* of them, reads the log past what it has delivered. Where
the log's own commit can carry the announcement (PostgreSQL's ``NOTIFY``,
delivered on commit only), the log announces its appends itself and the node
does not (:attr:`~polyport.core.eventlog.EventLog.announces_appends`): the
bus then only listens. A bus may lose or repeat an announcement (Redis
pub/sub, PostgreSQL NOTIFY and NATS core subjects are all at-most-once): a
node also reads the log at an interval, so a lost announcement only delays
delivery. Nothing is lost through the bus.

A node alone on its log needs no bus: the hub hands its own events to its
subscribers directly.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Protocol

#: What a bus carries: the channels that grew, each with the newest seq appended to it.
Announcement = Sequence[tuple[str, int]]
Listener = Callable[[Announcement], None]


class Bus(Protocol):
    """Cross-node notification that a channel of the shared log has new events."""

    async def open(self) -> None:
        """Connect. Raises what the engine raises when it cannot be reached."""
        ...

    async def close(self) -> None: ...

    def announce(self, grown: Announcement) -> None:
        """Tell the other nodes, without waiting and without raising.

        Called after the events are durable. A failure to send is logged by
        the bus and otherwise ignored: the other nodes find the events at
        their next read of the log.
        """
        ...

    def listen(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` (on this node's event loop) for every announcement of
        another node; returns what stops it. The node's own announcements may come
        back too: they are harmless."""
        ...


class LocalBus:
    """A bus between the nodes of one process: for tests and for several nodes on one loop.

    One instance is shared by the nodes; an announcement reaches every other
    listener on the next loop iteration, as a network bus would, never at once.
    """

    def __init__(self) -> None:
        self._listeners: list[Listener] = []

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None  # shared by the nodes: each stops its own listener

    def announce(self, grown: Announcement) -> None:
        loop = asyncio.get_running_loop()
        snapshot = list(grown)
        for listener in self._listeners:
            loop.call_soon(listener, snapshot)

    def listen(self, listener: Listener) -> Callable[[], None]:
        self._listeners.append(listener)

        def stop() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return stop


class QuietBus:
    """A bus that carries nothing: every node finds new events at its next read of
    the log, one poll interval later. For an engine without a bus of its own."""

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def announce(self, grown: Announcement) -> None:
        return None

    def listen(self, listener: Listener) -> Callable[[], None]:
        return lambda: None


__all__ = ["Announcement", "Bus", "Listener", "LocalBus", "QuietBus"]

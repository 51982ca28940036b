"""Shared subscriptions: ``$share/{group}/{filter}``, each event to one member of the group.

    $share/dash/sensors/#  ─▶ the node's group ("dash", "sensors/#"): one hub
                              subscription, each event to the next member that
                              may read it and has room for it (round robin)

A group lives on one node, from its first member's SUBSCRIBE to its last
member's leaving; it reads the events published from the moment it starts.
Members on other nodes form a group of their own there (see ``docs/mqtt.md``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from polyport.core.errors import InvalidArgument, RecoveryFailed
from polyport.core.events import Event, Pattern
from polyport.core.hub import EventHub
from polyport.edges.mqtt.outbound import Outbox, untyped_flags
from polyport.edges.mqtt.packets import TopicSubscription
from polyport.edges.mqtt.topics import SHARED_PREFIX, dollar_hidden, filter_to_pattern

log = logging.getLogger("polyport.mqtt")

#: Bytes waiting in a member's socket buffer above which it gets no more QoS 0 events
#: for now: a member that does not read is passed over, not buffered for.
WRITE_BUFFER_LIMIT = 256 * 1024
#: Seconds a group with every member busy waits before it looks again (a member's
#: socket draining wakes nothing; a freed QoS 1/2 slot does, at once).
BUSY_RECHECK = 0.05


def parse_shared(name: str) -> tuple[str, Pattern] | None:
    """``$share/{group}/{filter}`` → (group, the filter's pattern), or None if not valid."""
    group, slash, rest = name[len(SHARED_PREFIX) :].partition("/")
    if not slash or not group or not rest or "+" in group or "#" in group:
        return None
    try:
        return group, filter_to_pattern(rest)
    except InvalidArgument:
        return None


class SharedMember:
    """One client's place in a group: where its share of the events goes."""

    def __init__(
        self,
        options: TopicSubscription,
        outbox: Outbox,
        level: int,
        types: frozenset[str] | None,
    ) -> None:
        self.options = options
        self.outbox = outbox
        self.level = level
        #: The event types this member may read (None: all).
        self.types = types
        self.group: SharedGroup | None = None

    def reads(self, event: Event) -> bool:
        return self.types is None or event.type in self.types

    def has_room(self) -> bool:
        outbox = self.outbox
        if outbox.writer.is_closing():
            return False
        if outbox.writer.transport.get_write_buffer_size() > WRITE_BUFFER_LIMIT:
            return False
        return not self.options.qos or not outbox.slots.locked()

    async def send(self, event: Event) -> None:
        """Send one event, once :meth:`has_room` said so (so this does not wait)."""
        qos = self.options.qos
        if event.type in self.outbox.untyped:
            qos = min(qos, untyped_flags(event)[0])
        await self.outbox.ready(qos)
        self.outbox.deliver(
            event, qos, self.options.filter, 0, subscription_id=self.options.subscription_id
        )

    def leave(self) -> None:
        group, self.group = self.group, None
        if group is not None:
            group.leave(self)


class SharedGroup:
    """The members of one shared subscription on this node, and the task feeding them."""

    def __init__(self, groups: SharedGroups, key: tuple[str, str], pattern: Pattern) -> None:
        self.groups = groups
        self.key = key
        self.pattern = pattern
        self.members: list[SharedMember] = []
        self.turn = 0
        #: Set when a member frees a slot or the members change.
        self.wakeup = asyncio.Event()
        self.task = asyncio.create_task(self._run(), name=f"polyport-mqtt-share-{key[0]}")

    def join(self, member: SharedMember) -> None:
        member.group = self
        member.outbox.waiters.add(self.wakeup)
        self.members.append(member)
        self.wakeup.set()

    def leave(self, member: SharedMember) -> None:
        member.outbox.waiters.discard(self.wakeup)
        with contextlib.suppress(ValueError):
            self.members.remove(member)
        self.wakeup.set()
        if not self.members:
            self.task.cancel()
            self.groups.ended(self)

    async def _run(self) -> None:
        hub = self.groups.hub
        while True:
            subscription = await hub.subscribe([self.pattern], after="now")
            try:
                while True:
                    events = await subscription.batch()
                    if not events:
                        return
                    for event in events:
                        if not dollar_hidden(self.pattern, event.channel):
                            await self._deliver(event)
            except RecoveryFailed:
                # Its members did not keep up for longer than history: those events are
                # theirs no more. Go on from now.
                log.warning(
                    "MQTT shared subscription %s/%s fell behind the event history",
                    *self.key,
                    extra={"edge": "mqtt"},
                )
            finally:
                subscription.close()

    async def _deliver(self, event: Event) -> None:
        """Give ``event`` to the next member that may read it and has room for it."""
        while True:
            readers = [m for m in self.members if m.reads(event)]
            if not readers:
                return  # no member may read it (or none is left): it is not theirs
            count = len(readers)
            for step in range(count):
                member = readers[(self.turn + step) % count]
                if member.has_room():
                    self.turn = (self.turn + step + 1) % count
                    await member.send(event)
                    return
            self.wakeup.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(BUSY_RECHECK):
                    await self.wakeup.wait()


class SharedGroups:
    """The shared subscriptions of one node, by (group name, filter)."""

    def __init__(self, hub: EventHub) -> None:
        self.hub = hub
        self.groups: dict[tuple[str, str], SharedGroup] = {}

    def join(self, name: str, pattern: Pattern, member: SharedMember) -> None:
        key = (name, pattern.text)
        group = self.groups.get(key)
        if group is None:
            group = self.groups[key] = SharedGroup(self, key, pattern)
        group.join(member)

    def ended(self, group: SharedGroup) -> None:
        if self.groups.get(group.key) is group:
            del self.groups[group.key]

    async def stop(self) -> None:
        tasks = [g.task for g in self.groups.values()]
        self.groups.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

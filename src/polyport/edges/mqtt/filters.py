"""A client's topic filters: each a hub subscription pumped out, or a place in a shared group.

    SUBSCRIBE sensors/+/temperature     → a Subscription of the hub, after now; its
                                          retained messages first, then live events
    SUBSCRIBE $share/dash/sensors/#     → a member of the node's group "dash" (see .shared)
    a resumed session's filters         → Subscriptions after each filter's seq; a gap
                                          is told on $polyport/gaps

Each plain filter keeps the log seq up to which it sent events, which is what a
persistent session stores (see :mod:`.sessions`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING

import orjson

from polyport.core.dispatch import Caller
from polyport.core.errors import InvalidArgument, RecoveryFailed, ServiceError
from polyport.core.events import Event, Pattern, position
from polyport.core.hub import Subscription
from polyport.edges.mqtt.codec import CONTENT_TYPE, PAYLOAD_FORMAT, properties, text
from polyport.edges.mqtt.errors import reason_of
from polyport.edges.mqtt.outbound import Outbox, untyped_flags
from polyport.edges.mqtt.packets import V5, Reason, TopicSubscription
from polyport.edges.mqtt.sessions import FilterState, Session
from polyport.edges.mqtt.shared import SharedMember, parse_shared
from polyport.edges.mqtt.topics import SHARED_PREFIX, dollar_hidden, filter_to_pattern

if TYPE_CHECKING:
    from polyport.edges.mqtt.connection import Broker

log = logging.getLogger("polyport.mqtt")

#: Where a client is told that history no longer holds events its session missed.
GAPS_TOPIC = "$polyport/gaps"
#: Events of its own a connection remembers for its No Local filters, at most.
OWN_REMEMBERED = 1024
_GAPS = text(GAPS_TOPIC)


class Filter:
    """One topic filter of a client, its options, and the task pumping its events out."""

    def __init__(
        self,
        options: TopicSubscription,
        subscription: Subscription,
        pattern: Pattern,
        types: frozenset[str] | None,
    ) -> None:
        self.text = options.filter
        self.options = options
        self.subscription = subscription
        self.pattern = pattern
        #: The event types the client may read on it (None: all).
        self.types = types
        #: Send the retained messages of its channels first (a SUBSCRIBE's Retain Handling).
        self.retained = False
        #: The log seq up to which this filter has sent events (where a session resumes).
        self.seq = subscription.last_seq
        self.task: asyncio.Task[None] | None = None

    def stop(self) -> None:
        self.subscription.close()
        if self.task is not None:
            self.task.cancel()


Ender = Callable[[int, str | None], None]


class ClientFilters:
    """The topic filters of one connection."""

    def __init__(
        self,
        broker: Broker,
        outbox: Outbox,
        level: int,
        caller: Caller,
        *,
        peer: str | None,
        end: Ender,
    ) -> None:
        self.broker = broker
        self.outbox = outbox
        self.level = level
        self.caller = caller
        self.peer = peer
        self.end = end
        self.plain: dict[str, Filter] = {}
        self.shared: dict[str, SharedMember] = {}
        #: The ids of the events this connection published lately, while a filter of
        #: it has No Local: those filters do not send them back (MQTT 5, 3.8.3.1).
        self.own: OrderedDict[str, None] = OrderedDict()
        #: Clear while a PUBLISH of this connection is being published: a No Local
        #: filter that meets an event then waits to know whether it is its own.
        self.idle = asyncio.Event()
        self.idle.set()

    def published(self, event: Event) -> None:
        """This connection published ``event``: remembered while a filter has No Local."""
        if any(entry.options.no_local for entry in self.plain.values()):
            self.own[event.id] = None
            if len(self.own) > OWN_REMEMBERED:
                self.own.popitem(last=False)

    def __len__(self) -> int:
        return len(self.plain) + len(self.shared)

    def states(self) -> dict[str, FilterState]:
        """What a session keeps of each filter (a shared one resumes from nothing)."""
        states = {t: FilterState(f.options, f.seq) for t, f in self.plain.items()}
        states.update({t: FilterState(m.options, 0) for t, m in self.shared.items()})
        return states

    async def close(self) -> None:
        """Stop every filter (the connection ended) and wait for the pumps to stop."""
        for member in self.shared.values():
            member.leave()
        for entry in self.plain.values():
            entry.stop()
        for entry in self.plain.values():
            if entry.task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await entry.task

    # -- SUBSCRIBE and UNSUBSCRIBE ----------------------------------------------------------

    async def subscribe(self, topic: TopicSubscription, started: list[Filter]) -> int:
        """Subscribe one filter: the granted QoS, or why not (an MQTT 5 reason code).

        A new plain filter is appended to ``started``, to start once SUBACK is sent.
        """
        name = topic.filter
        new = name not in self.plain and name not in self.shared
        if new and len(self) >= self.broker.config.max_subscriptions:
            return Reason.QUOTA_EXCEEDED
        if name.startswith(SHARED_PREFIX):
            return self._join(topic)
        existing = self.plain.get(name)
        try:
            pattern = filter_to_pattern(name)
            types = self.broker.dispatcher.admit_subscribe([pattern], self.caller)
        except InvalidArgument:
            return Reason.TOPIC_FILTER_INVALID  # well formed, but not a channel pattern
        except ServiceError as exc:
            return reason_of(exc)
        hub = self.broker.hub
        after = "now"
        if existing is not None:
            # The same filter again replaces its options: it goes on from where it stands.
            existing.stop()
            after = position(hub.log.epoch, existing.seq)
        try:
            subscription = await hub.subscribe([pattern], after=after, types=types)
        except RecoveryFailed:
            subscription = await hub.subscribe([pattern], after="now", types=types)
        entry = Filter(topic, subscription, pattern, types)
        entry.retained = topic.retain_handling == 0 or (
            topic.retain_handling == 1 and existing is None
        )
        self.plain[name] = entry
        started.append(entry)
        return topic.qos

    def _join(self, topic: TopicSubscription) -> int:
        parsed = parse_shared(topic.filter)
        if parsed is None:
            return Reason.TOPIC_FILTER_INVALID
        group, pattern = parsed
        try:
            types = self.broker.dispatcher.admit_subscribe([pattern], self.caller)
        except ServiceError as exc:
            return reason_of(exc)
        old = self.shared.pop(topic.filter, None)
        if old is not None:
            old.leave()
        member = SharedMember(topic, self.outbox, self.level, types)
        self.broker.groups.join(group, pattern, member)
        self.shared[topic.filter] = member
        return topic.qos

    def unsubscribe(self, name: str) -> bool:
        """Stop one filter: whether there was one."""
        entry = self.plain.pop(name, None)
        if entry is not None:
            entry.stop()
            return True
        member = self.shared.pop(name, None)
        if member is not None:
            member.leave()
            return True
        return False

    # -- a resumed session ------------------------------------------------------------------

    async def resume(self, session: Session) -> list[tuple[str, RecoveryFailed]]:
        """Subscribe a resumed session's filters after their seqs, with today's rights:
        the filters whose missed events history no longer holds, and why."""
        lost: list[tuple[str, RecoveryFailed]] = []
        hub = self.broker.hub
        for name, state in session.filters.items():
            if name.startswith(SHARED_PREFIX):
                if self._join(state.options) >= 0x80:
                    log.info("MQTT session %r: %s refused now", session.client_id, name)
                continue
            try:
                pattern = filter_to_pattern(name)
                types = self.broker.dispatcher.admit_subscribe([pattern], self.caller)
            except ServiceError as exc:
                log.info("MQTT session %r: %s refused now (%s)", session.client_id, name, exc)
                continue
            cursor = position(session.epoch, state.after)
            try:
                subscription = await hub.subscribe([pattern], after=cursor, types=types)
            except RecoveryFailed as exc:
                subscription = await hub.subscribe([pattern], after="now", types=types)
                lost.append((name, exc))
            self.plain[name] = Filter(state.options, subscription, pattern, types)
        return lost

    async def tell_gap(self, name: str, exc: RecoveryFailed) -> None:
        """Tell the client that filter ``name`` missed events history no longer holds:
        a PUBLISH on ``$polyport/gaps`` at QoS 1, subscribed to or not."""
        payload = orjson.dumps(
            {"filter": name, "reason": exc.message, "earliest": exc.earliest, "latest": exc.latest}
        )
        tail = payload
        if self.level == V5:
            tail = properties([(PAYLOAD_FORMAT, 1), (CONTENT_TYPE, "application/json")]) + payload
        await self.outbox.put_now(_GAPS, tail, 1, name, 0)

    # -- sending ----------------------------------------------------------------------------

    def start(self, entry: Filter) -> None:
        entry.task = asyncio.create_task(self._pump(entry), name=f"polyport-mqtt-{entry.text}")

    def start_all(self) -> None:
        for entry in self.plain.values():
            self.start(entry)

    async def _pump(self, entry: Filter) -> None:
        """Send one filter's events, paced by the client (see :mod:`.outbound`)."""
        outbox = self.outbox
        qos = entry.options.qos
        # Retain As Published: every event was its channel's retained message when it
        # was published, so live events keep RETAIN 1 then (MQTT 5 only).
        retain = entry.options.retain_as_published
        untyped = outbox.untyped
        pattern = entry.pattern
        no_local = entry.options.no_local
        ident = entry.options.subscription_id
        try:
            if entry.retained:
                kept = await self.broker.retained.last_events(pattern, entry.types, untyped)
                for event in kept:
                    if dollar_hidden(pattern, event.channel):
                        continue
                    at = qos
                    if event.type in untyped:
                        at = min(qos, untyped_flags(event)[0])
                    await outbox.ready(at)
                    outbox.deliver(
                        event, at, entry.text, 0, retain=True, subscription_id=ident, hold=True
                    )
                    if outbox.held_full:
                        await outbox.drain()
                await outbox.drain()
            while True:
                events = await entry.subscription.batch()
                if not events:
                    return
                # The batch goes out in one write (one per HOLD_BYTES), and the pump waits
                # while the socket's buffer is full once per write; what is held is
                # written before anything else is awaited.
                for event in events:
                    if no_local and not self.idle.is_set():
                        outbox.flush()
                        await self.idle.wait()  # it may be the one being published
                    if dollar_hidden(pattern, event.channel) or (no_local and event.id in self.own):
                        entry.seq = event.seq
                        continue
                    at, flag = qos, retain
                    if event.type in untyped:
                        published_at, published_retained = untyped_flags(event)
                        at, flag = min(qos, published_at), retain and published_retained
                    if at:
                        await outbox.ready(at)
                    outbox.deliver(
                        event,
                        at,
                        entry.text,
                        event.seq,
                        retain=flag,
                        subscription_id=ident,
                        hold=True,
                    )
                    entry.seq = event.seq  # sent: a resumed session goes on after it
                    if outbox.held_full:
                        await outbox.drain()
                await outbox.drain()
        except RecoveryFailed:
            self.end(
                Reason.QUOTA_EXCEEDED,
                "fell behind further than the event history: events were missed; "
                "reconnect and subscribe again",
            )
        except TimeoutError:
            log.info(
                "MQTT client %s did not read for %ss: disconnected",
                self.peer,
                self.broker.config.send_timeout,
                extra={"edge": "mqtt"},
            )
            self.end(Reason.UNSPECIFIED_ERROR, "the client did not read")
        except ConnectionError:
            self.end(0, None)

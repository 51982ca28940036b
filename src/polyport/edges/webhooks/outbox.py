"""The outbox: every event owes deliveries, recorded once the event is durable, never before.

The hub calls :meth:`WebhookOutbox.tap` synchronously for each published
event. The outbox notes which enabled endpoints want its type and, in the
next loop step, records the message and one delivery per endpoint through
the store's :meth:`~polyport.core.webhookstore.DeliveryOutbox.fan_out`, whose
guarantee is that deliveries are never durable before their events (the
store waits for the event log to say they are; see
:mod:`polyport.core.webhookstore`). Batches are written one at a time, in
the order the events were published.

The deliveries are claimed for this node as they are recorded and handed to
the :class:`~.sender.WebhookSender` at once, so the common case costs no
wait for the poller. When the store :attr:`~polyport.core.webhookstore.DeliveryOutbox.follows_log`,
a fan-out **cursor** (the last event ``seq`` fanned out) is recorded after
them; at start the outbox reads the event log (its port) after it and fans
out again what a crash caught between the events' commit and their
deliveries', skipping deliveries that already exist and endpoints created
after the event.

**Several nodes on one log.** Where other nodes append to the log too
(:attr:`EventHub.shared <polyport.core.hub.EventHub.shared>`), no node fans
out on its own: the deliveries of one node's events would be lost with it
if it died between the events' commit and their fan-out, and the cursor of
the last event fanned out would mean nothing with several writers. Instead
one node at a time holds the store's fan-out lease
(:meth:`~polyport.core.webhookstore.DeliveryOutbox.lead_fan_out`, renewed
every third of :data:`LEADER_LEASE`) and fans out every node's events from
the shared cursor, in log order, woken by a subscription to every channel;
when it dies, the next holder goes on from the cursor. Deliveries are left
unclaimed for every node's sender to take.

The webhook body is the event envelope in the Standard Webhooks shape:
``{"id", "type", "timestamp", "channel", "offset", "epoch", "data"}``, and the
event id is the ``webhook-id``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from typing import Any

import orjson

from polyport.core.events import Event, Pattern
from polyport.core.hub import EventHub
from polyport.core.webhookstore import Message, Owed, WebhookStore
from polyport.edges.webhooks.endpoints import EndpointState, EndpointTable
from polyport.edges.webhooks.sender import WebhookSender

log = logging.getLogger("polyport.webhooks")

#: Logged events re-fanned out per query at start.
CATCH_UP_BATCH = 1000
#: Seconds a fan-out lease lasts unrenewed: how long the events of a shared log wait
#: for their deliveries when the node fanning them out dies.
LEADER_LEASE = 10.0
#: The built-in event published when an endpoint is disabled.
DISABLED_EVENT = "webhooks.endpoint.disabled"
DISABLED_CHANNEL = "webhooks/endpoints"
TEST_EVENT = "webhooks.test"
#: Every channel: the catch-up reads the whole log.
_EVERY_CHANNEL = (Pattern.parse("#"),)


def rfc3339(ts: float) -> str:
    """``2026-11-28T01:48:48.194Z``: UTC, milliseconds (as event envelopes write time)."""
    whole = int(ts)
    millis = int((ts - whole) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{millis:03d}Z"


def envelope(event_id: str, type: str, at: float, data: bytes, **extra: Any) -> bytes:
    """The JSON body of a webhook; ``data`` is already JSON."""
    head = orjson.dumps({"id": event_id, "type": type, "timestamp": rfc3339(at), **extra})
    return head[:-1] + b',"data":' + data + b"}"


def message_of(event: Event) -> Message:
    body = envelope(
        event.id,
        event.type,
        event.time,
        event.data,
        channel=event.channel,
        offset=event.offset,
        epoch=event.epoch,
    )
    return Message(event.id, event.type, event.time, body)


class WebhookOutbox:
    """Turns published events into leased deliveries, never durable before the events."""

    def __init__(
        self,
        hub: EventHub,
        store: WebhookStore,
        table: EndpointTable,
        sender: WebhookSender,
    ) -> None:
        self.hub = hub
        self.store = store
        self.table = table
        self.sender = sender
        self._pending: list[tuple[Event, tuple[EndpointState, ...]]] = []
        self._writer: asyncio.Task[None] | None = None
        self._leader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self.hub.shared:
            self._leader = asyncio.create_task(self._lead_forever(), name="polyport-fanout")
            return
        if self.store.follows_log:
            await self.catch_up()
        self.hub.add_tap(self.tap)

    async def stop(self) -> None:
        if self._leader is not None:
            self._leader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._leader
            self._leader = None
            with contextlib.suppress(Exception):  # the next holder need not wait it out
                await self.store.lead_fan_out(self.sender.owner, time.time(), 0.0)
            return
        self.hub.remove_tap(self.tap)
        if self._writer is not None:
            await self._writer

    # -- several nodes on one log ------------------------------------------------------

    async def _lead_forever(self) -> None:
        """Take the fan-out lease when it is free; while held, fan out every node's events."""
        owner = self.sender.owner
        failing = False
        while True:
            try:
                now = time.time()
                if await self.store.lead_fan_out(owner, now, now + LEADER_LEASE):
                    await self._fan_out_while_leading(owner)
                await asyncio.sleep(LEADER_LEASE / 3)
                failing = False
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not failing:  # once per outage
                    log.warning("webhooks: fanning out the shared log failed (%s); retrying", exc)
                    failing = True
                await asyncio.sleep(1.0)

    async def _fan_out_while_leading(self, owner: str) -> None:
        """Fan out from the cursor, then as events come, until the lease is lost."""
        subscription = await self.hub.subscribe(_EVERY_CHANNEL)  # wakes: what follows now
        try:
            renewed = time.monotonic()
            while True:
                await self.catch_up(quiet=True)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(LEADER_LEASE / 3):
                        await subscription.batch()
                if time.monotonic() - renewed >= LEADER_LEASE / 3:
                    now = time.time()
                    if not await self.store.lead_fan_out(owner, now, now + LEADER_LEASE):
                        return
                    renewed = time.monotonic()
        finally:
            subscription.close()

    # -- publishing --------------------------------------------------------------------

    def tap(self, events: list[Event]) -> None:
        """Note events just appended to the log (synchronously, in their loop step)."""
        table = self.table
        if not table:
            return  # no endpoint at all: publishing pays nothing here
        matching = table.matching
        keep_all = self.store.follows_log  # a restart's catch-up needs the cursor of every event
        noted = [(e, targets) for e in events if (targets := matching(e.type)) or keep_all]
        if not noted:
            return
        self._pending.extend(noted)
        if self._writer is None:
            # Its first step runs in the next loop step, like a call_soon, with every
            # event noted until then.
            self._writer = asyncio.get_running_loop().create_task(self._write())

    async def _write(self) -> None:
        try:
            while self._pending:  # one batch at a time: the cursor only moves forward
                batch, self._pending = self._pending, []
                await self.write(batch)
        except Exception:
            # A catch-up at the next start finds these events after the cursor.
            log.exception("webhooks: recording deliveries failed")
        finally:
            self._writer = None

    async def write(self, batch: list[tuple[Event, tuple[EndpointState, ...]]]) -> None:
        """Record the noted events' deliveries (and the cursor) and hand them to the sender."""
        messages: list[Message] = []
        owed: list[Owed] = []
        for event, targets in batch:
            if not targets:
                continue
            messages.append(message_of(event))
            owed += [Owed(target.id, event.id, event.type, event.time) for target in targets]
        cursor = max(event.seq for event, _ in batch) if self.store.follows_log else None
        if not owed and cursor is None:
            return
        sender = self.sender
        now = time.time()
        claims = await self.store.fan_out(
            messages,
            owed,
            now=now,
            cursor=cursor,
            owner=sender.owner,
            lease_until=sender.lease_until(now),
        )
        sender.submit(claims)
        if len(claims) < len(owed):
            sender.wake()  # another node's, or waiting behind older ones: the poller looks

    async def catch_up(self, *, quiet: bool = False) -> int:
        """Fan out logged events after the cursor that have no deliveries yet; how many."""
        cursor = await self.store.fanout_cursor()
        added = 0
        while True:
            # Unchecked: events trimmed meanwhile are simply gone, as their history is.
            read = await self.hub.log.read(_EVERY_CHANNEL, cursor, CATCH_UP_BATCH, check=False)
            if read.last_seq <= cursor:
                break
            # After the read: an endpoint created (on any node) before one of these
            # events was made was saved before it, so it is in the table now.
            await self.table.refresh()
            messages: list[Message] = []
            owed: list[Owed] = []
            for event in read.events:
                targets = [
                    t for t in self.table.matching(event.type) if t.record.created <= event.time
                ]
                if not targets:
                    continue
                messages.append(message_of(event))
                owed += [Owed(t.id, event.id, event.type, event.time) for t in targets]
            cursor = read.last_seq
            # Not claimed here: the poller claims them, and what exists already is kept.
            await self.store.fan_out(messages, owed, now=time.time(), cursor=cursor)
            added += len(owed)
            if owed:
                self.sender.wake()
        if added and not quiet:
            log.info("webhooks: re-fanned out %d deliveries from the event log", added)
        return added

    # -- messages of the node's own -----------------------------------------------------

    async def send_test(self, endpoint: EndpointState, data: Any) -> str:
        """Queue a ``webhooks.test`` message for one endpoint; its id."""
        now = time.time()
        event_id = "test_" + uuid.uuid4().hex
        body = envelope(event_id, TEST_EVENT, now, orjson.dumps(data))
        await self.store.add_single(Message(event_id, TEST_EVENT, now, body), endpoint.id, now)
        self.sender.wake()
        return event_id

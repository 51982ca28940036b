"""The transactional outbox: every event owes deliveries, recorded with the event itself.

The hub calls :meth:`WebhookOutbox.tap` synchronously for each published
event. The outbox notes which enabled endpoints want its type and, in the
same loop step as the event log's own write, writes the message and one
delivery row per endpoint into the SQLite **group transaction** that holds
the event (the event log is flushed first, so the event's row is never
later than its deliveries'). Whatever commits, commits together: a process
killed after the event was stored has stored its deliveries too.

The rows are written leased to this node and handed to the
:class:`~.sender.WebhookSender` at once, so the common case costs no query
to find work. A fan-out **cursor** (the last event ``seq`` fanned out) is
written in the same transaction; at start the outbox fans out again any event
of the SQLite log after it — should a transaction ever have been split (the
group commits every 512 writes) — skipping deliveries that already exist and
endpoints created after the event.

The webhook body is the event envelope in the Standard Webhooks shape:
``{"id", "type", "timestamp", "channel", "offset", "epoch", "data"}``, and the
event id is the ``webhook-id``.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

import orjson

from polyport.backends.sqlite.db import SqliteDatabase
from polyport.backends.sqlite.webhooks import SqliteWebhookStore
from polyport.core.events import Event
from polyport.core.hub import EventHub
from polyport.edges.webhooks.endpoints import EndpointState, EndpointTable
from polyport.edges.webhooks.sender import Job, WebhookSender
from polyport.webhooks.records import Message

log = logging.getLogger("polyport.webhooks")

#: Logged events re-fanned out per query at start.
CATCH_UP_BATCH = 1000
#: The built-in event published when an endpoint is disabled.
DISABLED_EVENT = "webhooks.endpoint.disabled"
DISABLED_CHANNEL = "webhooks/endpoints"
TEST_EVENT = "webhooks.test"


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
    """Turns published events into leased delivery rows, in the event's transaction."""

    def __init__(
        self,
        hub: EventHub,
        db: SqliteDatabase,
        store: SqliteWebhookStore,
        table: EndpointTable,
        sender: WebhookSender,
    ) -> None:
        self.hub = hub
        self.store = store
        self.table = table
        self.sender = sender
        # The event log shares the database: its rows and ours can commit together,
        # and its history can be re-read at start. A memory log can do neither.
        self._log_flush = getattr(hub.log, "flush", None)
        self.durable = getattr(hub.log, "db", None) is db and self._log_flush is not None
        self._pending: list[tuple[Event, tuple[EndpointState, ...]]] = []
        self._handle: asyncio.Handle | None = None

    def start(self) -> None:
        if self.durable:
            self.catch_up()
        self.hub.add_tap(self.tap)

    def stop(self) -> None:
        self.hub.remove_tap(self.tap)
        if self._handle is not None:
            self._handle.cancel()
            self.write()

    # -- publishing --------------------------------------------------------------------

    def tap(self, events: list[Event]) -> None:
        """Note events just appended to the log (synchronously, in their loop step)."""
        table = self.table
        if not table:
            return  # no endpoint at all: publishing pays nothing here
        matching = table.matching
        keep_all = self.durable  # a restart's catch-up needs the cursor of every event
        noted = [(e, targets) for e in events if (targets := matching(e.type)) or keep_all]
        if not noted:
            return
        self._pending.extend(noted)
        if self._handle is None:
            self._handle = asyncio.get_running_loop().call_soon(self.write)

    def write(self) -> None:
        """Write the noted events' deliveries (and the cursor) and hand them to the sender."""
        self._handle = None
        batch, self._pending = self._pending, []
        if not batch:
            return
        if self._log_flush is not None and self.durable:
            self._log_flush()  # the events first, into the open group transaction
        messages: list[Message] = []
        rows: list[tuple[str, str, str, float]] = []
        jobs: list[Job] = []
        for event, targets in batch:
            if not targets:
                continue
            message = message_of(event)
            messages.append(message)
            for target in targets:
                rows.append((target.id, event.id, event.type, event.time))
                jobs.append(Job(target.id, event.id, 0, 0, message))
        cursor = str(max(event.seq for event, _ in batch)) if self.durable else None
        if not rows and cursor is None:
            return
        self.store.fan_out(
            messages, rows, leased_until=self.sender.lease_until(time.time()), cursor=cursor
        )
        self.sender.submit(jobs)

    def catch_up(self) -> int:
        """Fan out logged events after the cursor that have no deliveries yet; how many rows."""
        cursor = self.store.fanout_cursor()
        added = 0
        while True:
            rows = self.store.logged_events_after(cursor, CATCH_UP_BATCH)
            if not rows:
                break
            messages: list[Message] = []
            deliveries: list[tuple[str, str, str, float]] = []
            for seq, channel, offset, epoch, type_, at, data in rows:
                targets = [t for t in self.table.matching(type_) if t.record.created <= at]
                if not targets:
                    continue
                event = Event(channel, offset, epoch, seq, type_, at, data)
                messages.append(message_of(event))
                deliveries += [(t.id, event.id, type_, at) for t in targets]
            cursor = rows[-1][0]
            # Not leased: the poller claims them, and INSERT OR IGNORE keeps what exists.
            self.store.fan_out(messages, deliveries, leased_until=None, cursor=str(cursor))
            self.store.db.commit()
            added += len(deliveries)
        if added:
            log.info("webhooks: re-fanned out %d deliveries from the event log", added)
        return added

    # -- messages of the node's own -----------------------------------------------------

    def send_test(self, endpoint: EndpointState, data: Any) -> str:
        """Queue a ``webhooks.test`` message for one endpoint; its id."""
        now = time.time()
        event_id = "test_" + uuid.uuid4().hex
        body = envelope(event_id, TEST_EVENT, now, orjson.dumps(data))
        self.store.add_single(Message(event_id, TEST_EVENT, now, body), endpoint.id, now)
        self.sender.wake()
        return event_id

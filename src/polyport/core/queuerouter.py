"""Events routed to queues: every event of a routed type becomes a message of each queue.

    emails = shop.queue("emails", User)
    emails.route(UserCreated)           # one event, several queues: pub/sub into work queues

The router follows the event log from a **cursor kept in the record store**
(the last event ``seq`` routed), so an event is routed whether it was
published on this node or another, before or after a crash: a node reads the
log after the cursor, sends each routed event to its queues, then moves the
cursor. A crash between the two sends them again at the next read — the
message id is the event's id, so the queue stores each once (within its
dedup window). Routing begins when a service first declares a route: events
published before that are not routed.

One node at a time routes: the one holding the router's lease in the record
store (renewed every third of :data:`LEASE`); when it dies the next takes
over from the cursor. Where the log does not outlive the process (the
``memory`` log) there is nothing to catch up on: the router starts at the
head of the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import orjson

from polyport.core.broker import OutgoingMessage
from polyport.core.errors import InvalidArgument
from polyport.core.events import Event, Pattern
from polyport.core.hub import EventHub
from polyport.core.records import ABSENT, RecordStore, lead

if TYPE_CHECKING:
    from polyport.core.queuerunner import QueueBinding, QueueRunner

log = logging.getLogger("polyport.queues")

#: Seconds the router's lease lasts unrenewed: how long routed events wait when the
#: routing node dies.
LEASE = 10.0
#: Events read from the log per page.
BATCH = 500
LEADER_KEY = "queues/router/leader"
CURSOR_KEY = "queues/router/cursor"


class EventRouter:
    """Sends the events of routed types to their queues, from the log, at least once."""

    def __init__(
        self,
        runner: QueueRunner,
        hub: EventHub,
        records: RecordStore,
        *,
        owner: str,
        follows_log: bool,
    ) -> None:
        self.runner = runner
        self.hub = hub
        self.records = records
        self.owner = owner
        self.follows_log = follows_log
        #: Event type → the queues it is routed to, with the route's transform.
        self.routes: dict[str, list[tuple[QueueBinding, Any]]] = {}
        for binding in runner.bindings.values():
            for route in binding.queue.routes:
                self.routes.setdefault(route.event.name, []).append((binding, route.transform))
        self.patterns = [
            Pattern.parse(runner.spec.events[name].event.channel_pattern) for name in self.routes
        ]
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if not self.routes:
            return
        await self.records.open()
        if not self.follows_log or await self.records.get(CURSOR_KEY) is None:
            # Routing starts now: with no cursor yet (the first start with routes), or
            # a log that began with this process, there is nothing to catch up on.
            await self._lead_first(await self.hub.log.head())
        self._task = asyncio.create_task(self._lead_forever(), name="polyport-queues-router")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        with contextlib.suppress(Exception):  # the next holder need not wait it out
            await self._lead(time.time(), 0.0)
        await self.records.close()

    # -- leading ----------------------------------------------------------------------------

    async def _lead_forever(self) -> None:
        failing = False
        while True:
            try:
                now = time.time()
                if await self._lead(now, now + LEASE):
                    await self._route_while_leading()
                await asyncio.sleep(LEASE / 3)
                failing = False
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not failing:  # once per outage
                    log.warning("queues: routing events failed (%s); retrying", exc)
                    failing = True
                await asyncio.sleep(1.0)

    async def _lead(self, now: float, until: float) -> bool:
        """Take or renew the router's lease; False while another live node holds it."""
        return await lead(self.records, LEADER_KEY, self.owner, now, until)

    async def _route_while_leading(self) -> None:
        subscription = await self.hub.subscribe(self.patterns)  # wakes: what follows now
        try:
            renewed = time.monotonic()
            while True:
                await self.catch_up()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(LEASE / 3):
                        await subscription.batch()
                if time.monotonic() - renewed >= LEASE / 3:
                    now = time.time()
                    if not await self._lead(now, now + LEASE):
                        return
                    renewed = time.monotonic()
        finally:
            subscription.close()

    # -- routing ----------------------------------------------------------------------------

    async def catch_up(self) -> int:
        """Route every event after the cursor, moving the cursor after each page; how many
        messages were sent."""
        cursor = await self._cursor()
        sent = 0
        while True:
            # Unchecked: events trimmed before they were routed are gone, as their history is.
            read = await self.hub.log.read(self.patterns, cursor, BATCH, check=False)
            if read.last_seq <= cursor:
                return sent
            sent += await self._route(read.events)
            cursor = read.last_seq
            await self._save_cursor(cursor)

    async def _route(self, events: Sequence[Event]) -> int:
        by_queue: dict[str, list[OutgoingMessage]] = {}
        for event in events:
            for binding, transform in self.routes.get(event.type, ()):
                body = self._body(binding, transform, event)
                if body is None:
                    continue
                by_queue.setdefault(binding.name, []).append(
                    OutgoingMessage(
                        event.id,
                        body,
                        {
                            "content-type": "application/json",
                            "type": binding.type,
                            "event-type": event.type,
                            "event-channel": event.channel,
                        },
                    )
                )
        sent = 0
        for queue, messages in by_queue.items():
            stored = await self.runner.broker.send(queue, messages)
            for added in stored:
                self.runner._count(queue, "sent" if added else "duplicate")
            sent += sum(stored)
        return sent

    def _body(self, binding: QueueBinding, transform: Any, event: Event) -> bytes | None:
        """The message for ``event`` in ``binding``'s queue, or None (logged) if it cannot be."""
        try:
            if transform is None:
                return binding.encode_json(event.data)
            return binding.encode(transform(orjson.loads(event.data)))
        except InvalidArgument as exc:
            log.error(
                "queues: event %s (%s) does not make a message of queue %s: %s",
                event.id,
                event.type,
                binding.name,
                exc.message,
            )
        except Exception:
            log.exception(
                "queues: the route of %s to queue %s failed on event %s",
                event.type,
                binding.name,
                event.id,
            )
        return None

    async def _lead_first(self, head: int) -> None:
        """Set the cursor at ``head`` unless another node set one (or this log is new)."""
        if self.follows_log:
            await self.records.put(CURSOR_KEY, str(head).encode(), expect=ABSENT)
        else:
            await self._save_cursor(head)

    async def _cursor(self) -> int:
        found = await self.records.get(CURSOR_KEY)
        return 0 if found is None else int(found.value)

    async def _save_cursor(self, seq: int) -> None:
        await self.records.put(CURSOR_KEY, str(seq).encode())

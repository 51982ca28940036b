"""The bridge's outbound direction: events of the outgoing channels → the broker, once.

    event log ──(after the cursor)──▶ the leading node ──PUBLISH {prefix}{channel}──▶ broker
                                           │ all acknowledged (QoS 1/2)
                                           ▼
                                   cursor moved (records store, compare-and-set)

One node of a group forwards at a time — the one holding the group's lease
in the records store (``mqtt/bridge/{group}/leader``, the same
:func:`~polyport.core.records.lead` the queues' router and the webhooks'
fan-out use) — so several nodes sharing an event log publish each event to
the broker once, whichever node the event was published on. The leader
reads the log after the **cursor** (``mqtt/bridge/{group}/cursor``: the log's
epoch and the last ``seq`` forwarded), publishes a page, waits for every
acknowledgement, then moves the cursor. So events published while the broker
was unreachable are forwarded once it is back, in log order; a leader that
dies between the acknowledgements and the cursor's write leaves that page to
be sent again by the next one (at least once, never lost). The cursor is
written with compare-and-set on the version the leader last wrote: a node
that lost its lease without knowing (paused past it) finds the cursor moved
and stops, instead of forwarding beside the new leader.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

import orjson

from polyport.core.events import Event, Pattern
from polyport.core.hub import EventHub
from polyport.core.records import ABSENT, RecordStore, lead

log = logging.getLogger("polyport.mqtt")

#: Seconds the forwarding lease lasts unrenewed: how long outgoing events wait when the
#: leading node dies.
LEASE = 10.0
#: Events read from the log and published before the cursor moves.
PAGE = 100

Send = Callable[[Sequence[Event]], Awaitable[None]]


class LostLead(Exception):
    """Another node moved the cursor: this one no longer forwards."""


class BridgeOutbound:
    """Forwards the outgoing channels' events to the broker while this node leads."""

    def __init__(
        self,
        hub: EventHub,
        records: RecordStore,
        *,
        group: str,
        owner: str,
        outgoing: Sequence[Pattern],
    ) -> None:
        self.hub = hub
        self.records = records
        self.owner = owner
        self.patterns = list(outgoing)
        self.leader_key = f"mqtt/bridge/{group}/leader"
        self.cursor_key = f"mqtt/bridge/{group}/cursor"
        #: (seq forwarded up to, the cursor record's version this node wrote)
        self._cursor: tuple[int, int] | None = None
        self.forwarded = 0

    async def start(self) -> None:
        """Set the cursor at the log's head unless one for this log exists: forwarding
        begins when a bridge is first configured, not with the log's whole history."""
        head = await self.hub.log.head()
        found = await self.records.get(self.cursor_key)
        if found is None:
            await self.records.put(self.cursor_key, self._value(head), expect=ABSENT)
        elif orjson.loads(found.value)["epoch"] != self.hub.log.epoch:
            # A log that began anew (a memory log, a lost engine): its seqs are not the
            # cursor's. Forward from its head.
            log.warning("MQTT bridge: the event log is new; forwarding from its head")
            await self.records.put(self.cursor_key, self._value(head), expect=found.version)

    async def lead(self, now: float, until: float) -> bool:
        return await lead(self.records, self.leader_key, self.owner, now, until)

    async def release(self) -> None:
        """Give the lease up (the next node need not wait it out)."""
        with contextlib.suppress(Exception):
            await self.lead(time.time(), 0.0)

    async def run(self, send: Send) -> None:
        """Forward while leading, try to lead otherwise; until cancelled or ``send`` fails."""
        try:
            while True:
                now = time.time()
                if await self.lead(now, now + LEASE):
                    with contextlib.suppress(LostLead):
                        await self._forward_while_leading(send)
                await asyncio.sleep(LEASE / 3)
        finally:
            await self.release()

    async def _forward_while_leading(self, send: Send) -> None:
        subscription = await self.hub.subscribe(self.patterns)  # wakes: what follows now
        self._cursor = None
        try:
            renewed = time.monotonic()
            while True:
                await self.catch_up(send)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(LEASE / 3):
                        await subscription.batch()
                if time.monotonic() - renewed >= LEASE / 3:
                    now = time.time()
                    if not await self.lead(now, now + LEASE):
                        return
                    renewed = time.monotonic()
        finally:
            subscription.close()

    async def catch_up(self, send: Send) -> None:
        """Send every outgoing event after the cursor, moving it after each page."""
        seq, version = await self._read_cursor()
        while True:
            # Unchecked: events trimmed before they were forwarded are gone, as their
            # history is (docs/mqtt.md says so).
            read = await self.hub.log.read(self.patterns, seq, PAGE, check=False)
            if read.last_seq <= seq:
                return
            if read.events:
                await send(read.events)
                self.forwarded += len(read.events)
            seq = read.last_seq
            written = await self.records.put(self.cursor_key, self._value(seq), expect=version)
            if written is None:
                self._cursor = None
                raise LostLead()
            version = written
            self._cursor = (seq, version)

    async def _read_cursor(self) -> tuple[int, int]:
        if self._cursor is not None:
            return self._cursor
        found = await self.records.get(self.cursor_key)
        if found is None:  # deleted from under us: start again from now
            head = await self.hub.log.head()
            version = await self.records.put(self.cursor_key, self._value(head), expect=ABSENT)
            if version is None:
                raise LostLead()
            self._cursor = (head, version)
        else:
            self._cursor = (int(orjson.loads(found.value)["seq"]), found.version)
        return self._cursor

    def _value(self, seq: int) -> bytes:
        return orjson.dumps({"epoch": self.hub.log.epoch, "seq": seq})

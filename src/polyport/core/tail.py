"""Fan-out in log order when several nodes append to one event log.

Alone on its log, a hub hands each publish's events to its subscribers at
once: they are the next events of the log. With other writers, the next seq
may be another node's event, and a subscriber must get events in log order —
one delivered out of order would make it skip the earlier one (a subscriber
drops what is not after the last event it returned). So a shared hub delivers
through a :class:`Tail`:

* ``delivered`` is the newest seq handed to this node's subscribers;
* the node's own durable events are handed over at once when they follow
  ``delivered`` directly (one writer at a time: the common case costs nothing);
* anything else — a gap before them, another node's announcement on the bus,
  or the poll interval passing — wakes one reader task, which reads the log
  after ``delivered`` for the patterns this node's subscribers want and hands
  those over in order;
* the node's own durable events are announced on the bus for the other nodes:
  here, once durable, or by the log itself where its commit carries the
  announcement (:attr:`~polyport.core.eventlog.EventLog.announces_appends`:
  PostgreSQL's ``NOTIFY``, sent in the append's own transaction).

Every event comes from the log (or is an event this node just made durable in
it), so the bus may lose announcements without losing events; a lost one only
waits for the poll. When the engine cannot be read the reader retries with
backoff; subscribers stay registered and get everything once it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from polyport.core.bus import Announcement, Bus
from polyport.core.errors import RecoveryFailed, ServiceError
from polyport.core.events import Event

if TYPE_CHECKING:
    from polyport.core.hub import EventHub

log = logging.getLogger("polyport.events")

#: Events read from the log per query while catching up with other nodes.
TAIL_BATCH = 1000
#: Longest wait between reads of the log when no announcement comes.
POLL_INTERVAL = 1.0
#: Longest wait before reading again after the engine failed.
MAX_BACKOFF = 5.0


class Tail:
    """Delivers a shared log's events to one hub's subscribers, in log order."""

    def __init__(self, hub: EventHub, bus: Bus, *, poll_interval: float = POLL_INTERVAL) -> None:
        self._hub = hub
        self._bus = bus
        self._poll_interval = poll_interval
        self.delivered = 0
        self._epoch = ""
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stop_listening: Callable[[], None] | None = None
        #: PostgreSQL's log announces each append in the transaction that stores it.
        self._announced_by_log = hub.log.announces_appends

    async def start(self) -> None:
        """Start after the log is open: deliver what is appended from now on."""
        await self._bus.open()
        self.delivered = await self._hub.log.head()
        self._epoch = self._hub.log.epoch
        self._stop_listening = self._bus.listen(self._told)
        self._task = asyncio.create_task(self._read_forever(), name="polyport-tail")

    async def stop(self) -> None:
        if self._stop_listening is not None:
            self._stop_listening()
            self._stop_listening = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._bus.close()

    def local(self, events: Sequence[Event]) -> None:
        """This node's events, durable in the log: hand them over, or have them read,
        and announce them to the other nodes unless the log's commit already did.

        Handed over: those that follow ``delivered`` directly, in log order (a
        batch over several channels may come out of it, see
        :meth:`~polyport.core.eventlog.EventLog.append_many`). Whatever may have
        another node's event before it is read from the log instead.
        """
        if not events:
            return
        seqs = [event.seq for event in events]
        if seqs != sorted(seqs):
            events = sorted(events, key=lambda event: event.seq)
            seqs.sort()
        is_next = self._hub.log.is_next
        if is_next(self.delivered, seqs[0]) and seqs[-1] - seqs[0] == len(seqs) - 1:
            self._hand_over(events)  # one run of consecutive seqs (the common case)
        else:
            after, run = self.delivered, 0
            while run < len(seqs) and is_next(after, seqs[run]):
                after = seqs[run]
                run += 1
            if run:
                self._hand_over(events[:run])
            if run < len(seqs):
                self._wake.set()
        if not self._announced_by_log:
            self._bus.announce(_grown(events))

    def _told(self, grown: Announcement) -> None:
        if any(seq > self.delivered for _, seq in grown):
            self._wake.set()

    def _hand_over(self, events: Sequence[Event]) -> None:
        """Push events after ``delivered`` to the matching subscribers, in order."""
        fresh = [e for e in events if e.seq > self.delivered]
        if not fresh:
            return
        self.delivered = fresh[-1].seq
        self._hub._deliver(fresh)

    async def _read_forever(self) -> None:
        backoff = 0.1
        failing = False
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll_interval):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self._catch_up()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Once per outage, not once per retry: an engine away for a minute
                # would otherwise fill the log.
                if not failing:
                    log.warning(
                        "reading the shared event log failed (%s); subscribers are kept and "
                        "reading is retried with backoff",
                        exc,
                        exc_info=not isinstance(exc, ServiceError),
                    )
                    failing = True
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
                self._wake.set()
            else:
                if failing:
                    log.warning("reading the shared event log works again")
                    failing = False
                backoff = 0.1

    async def _catch_up(self) -> None:
        """Read the log after ``delivered`` until it has nothing more for this node."""
        hub = self._hub
        while True:
            patterns = hub.wanted_patterns()
            if not patterns:  # no one here listens: nothing to read
                self.delivered = max(self.delivered, await hub.log.head())
                self._epoch = hub.log.epoch
                return
            try:
                result = await hub.log.read(patterns, self.delivered, TAIL_BATCH, check=False)
            except RecoveryFailed:
                if hub.log.epoch == self._epoch:
                    raise
                result = None
            if hub.log.epoch != self._epoch:
                # The engine lost its data and the log began anew: positions of the old
                # epoch mean nothing in it. Subscribers are told, and go on from its end.
                log.warning("the shared event log began a new epoch: subscribers are told")
                self._epoch = hub.log.epoch
                self.delivered = await hub.log.head()
                hub.lost_history(self.delivered)
                continue
            assert result is not None
            self._hand_over(result.events)
            self.delivered = max(self.delivered, result.last_seq)
            if len(result.events) < TAIL_BATCH:
                return


def _grown(events: Sequence[Event]) -> list[tuple[str, int]]:
    newest: dict[str, int] = {}
    for event in events:
        newest[event.channel] = event.seq
    return list(newest.items())


__all__ = ["Tail"]

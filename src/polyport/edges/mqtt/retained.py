"""Retained messages: a channel's retained message is its last event, read from the log.

    SUBSCRIBE sensors/+/temperature ─▶ the last event of sensors/s1/temperature,
                                       of sensors/s2/temperature, … (RETAIN 1)
    PUBLISH retain=1, empty payload  ─▶ the channel's last event is retained no more

Nothing is stored for a retained message but what the event log holds
already, so a retained message is the same on every node sharing the log,
survives a restart with it, and lasts as long as the history of its channel
(``history.max_age``, ``history.max_events``). Clearing one writes a marker
(the channel's epoch and last offset) in the records store; a later event of
the channel supersedes it, and the marker is dropped the next time it is seen.

Untyped topics follow MQTT to the letter, as generic clients expect: their
retained message is the last one *published with RETAIN 1*, named by a record
(``mqtt/retained/{channel}`` → its epoch and offset) written when it is
published and deleted by an empty retained PUBLISH; a PUBLISH without RETAIN
leaves it as it was.
"""

from __future__ import annotations

import logging

import orjson

from polyport.core.errors import RecoveryFailed
from polyport.core.eventlog import ChannelInfo
from polyport.core.events import Cursor, Event, Pattern
from polyport.core.hub import EventHub
from polyport.core.records import RecordStore, scan_all

log = logging.getLogger("polyport.mqtt")

PREFIX = "mqtt/retained-cleared/"
KEPT = "mqtt/retained/"


class RetainedEvents:
    """The last event of each channel, as MQTT's retained messages, and their clearing."""

    def __init__(self, hub: EventHub, records: RecordStore | None, *, limit: int) -> None:
        self.hub = hub
        self.records = records
        #: Retained messages sent for one topic filter of a SUBSCRIBE, at most.
        self.limit = limit
        #: Cleared channels when there is no records store: channel → (epoch, offset).
        self._cleared: dict[str, tuple[str, int]] = {}
        #: Untyped channels' retained messages without a records store: channel →
        #: (epoch, offset).
        self._kept: dict[str, tuple[str, int]] = {}

    async def keep(self, event: Event) -> None:
        """``event`` (of an untyped type, published with RETAIN 1) is its channel's
        retained message."""
        if self.records is None:
            self._kept[event.channel] = (event.epoch, event.offset)
            return
        value = orjson.dumps({"epoch": event.epoch, "offset": event.offset})
        await self.records.put(KEPT + event.channel, value)

    async def forget(self, channel: str) -> None:
        """An untyped channel has no retained message (an empty retained PUBLISH)."""
        if self.records is None:
            self._kept.pop(channel, None)
            return
        await self.records.delete(KEPT + channel)

    async def _kept_messages(self) -> dict[str, tuple[str, int]]:
        if self.records is None:
            return dict(self._kept)
        found = {}
        for record in await scan_all(self.records, KEPT):
            try:
                value = orjson.loads(record.value)
                found[record.key[len(KEPT) :]] = (str(value["epoch"]), int(value["offset"]))
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                continue
        return found

    async def _markers(self) -> dict[str, tuple[str, int, int]]:
        """Cleared channels: channel → (epoch, offset cleared up to, record version)."""
        if self.records is None:
            return {c: (e, o, 0) for c, (e, o) in self._cleared.items()}
        found = {}
        for record in await scan_all(self.records, PREFIX):
            try:
                value = orjson.loads(record.value)
                mark = (str(value["epoch"]), int(value["offset"]), record.version)
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                continue
            found[record.key[len(PREFIX) :]] = mark
        return found

    async def last_events(
        self,
        pattern: Pattern,
        types: frozenset[str] | None,
        untyped: frozenset[str] = frozenset(),
    ) -> list[Event]:
        """The retained message of each channel ``pattern`` matches that the reader may
        read (``types``): at most :attr:`limit`, by channel name. Events of the
        ``untyped`` types are retained only when published so."""
        log_ = self.hub.log
        markers = await self._markers()
        kept = await self._kept_messages() if untyped else {}
        found: list[Event] = []
        for info in sorted(await log_.channels(), key=lambda i: i.name):
            if len(found) >= self.limit:
                break
            if not info.last_offset or not pattern.matches(info.name):
                continue
            where = kept.get(info.name)
            if where is not None:
                event = await self._at(info.name, *where)
                if (
                    event is not None
                    and event.type in untyped
                    and (types is None or event.type in types)
                ):
                    found.append(event)
                continue
            mark = markers.get(info.name)
            if mark is not None:
                if mark[0] == info.epoch and mark[1] >= info.last_offset:
                    continue  # cleared, and no event since
                await self._unmark(info.name, mark[2])  # superseded
            event = await self._last(info)
            if event is None or event.type in untyped:
                continue  # untyped: not published with RETAIN 1 (else it would be kept)
            if types is None or event.type in types:
                found.append(event)
        return found

    async def _last(self, info: ChannelInfo) -> Event | None:
        return await self._at(info.name, info.epoch, info.last_offset)

    async def _at(self, channel: str, epoch: str, offset: int) -> Event | None:
        log_ = self.hub.log
        try:
            seq = await log_.resolve(Cursor(epoch, offset, False))
            result = await log_.read([Pattern.parse(channel)], seq - 1, 1, check=False)
        except RecoveryFailed:
            return None  # trimmed: history no longer holds it, nor a retained message
        if result.events and result.events[0].offset == offset:
            return result.events[0]
        return None

    async def clear(self, channel: str) -> None:
        """The channel's events so far are retained no more (a retained empty PUBLISH)."""
        info = next((i for i in await self.hub.log.channels() if i.name == channel), None)
        if info is None or not info.last_offset:
            return
        if self.records is None:
            self._cleared[channel] = (info.epoch, info.last_offset)
            return
        value = orjson.dumps({"epoch": info.epoch, "offset": info.last_offset})
        await self.records.put(PREFIX + channel, value)

    async def _unmark(self, channel: str, version: int) -> None:
        if self.records is None:
            self._cleared.pop(channel, None)
            return
        try:
            await self.records.delete(PREFIX + channel, expect=version)
        except Exception:
            log.exception("dropping the retained marker of %s failed", channel)

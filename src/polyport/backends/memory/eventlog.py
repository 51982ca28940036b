"""An in-process event log: fast, bounded, and gone when the process ends.

Every start draws new epochs, so cursors from a previous run answer
"recovery failed" instead of silently resuming from the wrong place.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
from collections.abc import Sequence

from polyport.core.eventlog import ChannelInfo, History, ReadResult, check_gap, resolve_with
from polyport.core.events import Cursor, Event, Pattern, new_epoch


class _Channel:
    __slots__ = ("epoch", "events", "last_offset", "name", "start", "trimmed_offset", "trimmed_seq")

    def __init__(self, name: str, epoch: str) -> None:
        self.name = name
        self.epoch = epoch
        self.events: list[Event] = []
        self.start = 0  # index of the oldest held event; compacted in batches
        self.last_offset = 0
        self.trimmed_offset = 0
        self.trimmed_seq = 0

    def held(self) -> list[Event]:
        return self.events[self.start :]

    def drop_through(self, index: int) -> int:
        """Forget events[start:index]; return how many."""
        if index <= self.start:
            return 0
        dropped = index - self.start
        last = self.events[index - 1]
        self.trimmed_offset, self.trimmed_seq = last.offset, last.seq
        self.start = index
        if self.start > 64 and self.start * 2 > len(self.events):
            del self.events[: self.start]
            self.start = 0
        return dropped

    def info(self) -> ChannelInfo:
        return ChannelInfo(
            self.name, self.epoch, self.last_offset, self.trimmed_offset, self.trimmed_seq
        )


class MemoryEventLog:
    """The :class:`~polyport.core.eventlog.EventLog` kept in this process's memory."""

    def __init__(self, history: History | None = None) -> None:
        self.history = history or History()
        self._epoch = new_epoch()
        self._channels: dict[str, _Channel] = {}
        self._by_epoch: dict[str, _Channel] = {}
        self._seq = 0

    @property
    def epoch(self) -> str:
        return self._epoch

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    #: No bus of its own: the hub announces what it appends (see EventLog.announces_appends).
    announces_appends = False

    def settled(self) -> bool:
        """Always: an append is as durable as this log gets when it returns."""
        return True

    async def durable(self) -> None:
        """Nothing to wait for: memory is as durable as this log gets."""

    async def append(self, channel: str, type: str, data: bytes, time: float) -> Event:
        state = self._channels.get(channel)
        if state is None:
            state = _Channel(channel, new_epoch())
            self._channels[channel] = state
            self._by_epoch[state.epoch] = state
        self._seq += 1
        state.last_offset += 1
        # The channel's own name: one string for all its events, in memory and for `is`.
        event = Event(state.name, state.last_offset, state.epoch, self._seq, type, time, data)
        state.events.append(event)
        overflow = len(state.events) - state.start - self.history.max_events
        if overflow > 0:
            state.drop_through(state.start + overflow)
        return event

    async def append_many(
        self, items: Sequence[tuple[str, str, bytes]], time: float
    ) -> list[Event]:
        """Append ``(channel, type, data)`` events in order, all at ``time``: one call, not N."""
        out: list[Event] = []
        add = out.append
        channels = self._channels
        limit = self.history.max_events
        seq = self._seq
        make = object.__new__
        try:
            for channel, type, data in items:
                state = channels.get(channel)
                if state is None:
                    state = _Channel(channel, new_epoch())
                    channels[channel] = state
                    self._by_epoch[state.epoch] = state
                seq += 1
                offset = state.last_offset = state.last_offset + 1
                # Event's fields stored here, not through its __init__: a Python call per
                # event costs more than the stores (the hot path of every batch publish).
                event = make(Event)
                event.channel = state.name
                event.offset = offset
                event.epoch = state.epoch
                event.seq = seq
                event.type = type
                event.time = time
                event.data = data
                event._json = None
                event.wire = {}
                held = state.events
                held.append(event)
                if len(held) - state.start > limit:
                    state.drop_through(len(held) - limit)
                add(event)
        finally:
            self._seq = seq  # what was appended, whatever happens
        return out

    async def head(self) -> int:
        return self._seq

    def is_next(self, after: int, seq: int) -> bool:
        """Seqs here are consecutive: the next after ``after`` is ``after + 1``."""
        return seq == after + 1

    async def resolve(self, cursor: Cursor) -> int:
        state = None if cursor.is_position else self._by_epoch.get(cursor.epoch)
        seq_of_offset = first_seq = None
        if state is not None:
            held = state.held()
            if held:
                first_seq = held[0].seq
                index = cursor.number - held[0].offset
                if 0 <= index < len(held):
                    seq_of_offset = held[index].seq
        return resolve_with(
            cursor,
            log_epoch=self._epoch,
            head=self._seq,
            channel=state.info() if state else None,
            seq_of_offset=seq_of_offset,
            first_seq=first_seq,
        )

    def _matching(self, patterns: Sequence[Pattern]) -> list[_Channel]:
        if len(patterns) == 1 and patterns[0].is_exact:
            state = self._channels.get(patterns[0].text)
            return [state] if state else []
        return [s for name, s in self._channels.items() if any(p.matches(name) for p in patterns)]

    async def read(
        self, patterns: Sequence[Pattern], after_seq: int, limit: int, *, check: bool = True
    ) -> ReadResult:
        states = self._matching(patterns)
        if check:
            check_gap([s.info() for s in states], after_seq, self._epoch, self._seq)
        runs = []
        for state in states:
            held = state.events
            index = bisect.bisect_right(held, after_seq, lo=state.start, key=lambda e: e.seq)
            if index < len(held):
                runs.append(held[index : index + limit])  # at most limit from each
        if len(runs) == 1:
            events = runs[0]  # one channel (the common case): already in order, no merge
        else:
            events = list(itertools.islice(heapq.merge(*runs, key=lambda e: e.seq), limit))
        last = events[-1].seq if len(events) == limit else self._seq
        return ReadResult(events, last)

    async def trim_older_than(self, time: float) -> int:
        dropped = 0
        for state in self._channels.values():
            held = state.events
            index = bisect.bisect_left(held, time, lo=state.start, key=lambda e: e.time)
            dropped += state.drop_through(index)
        return dropped

    async def channels(self) -> list[ChannelInfo]:
        return [s.info() for s in self._channels.values()]

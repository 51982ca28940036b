"""Reading the stream: events after a position for patterns, and where a channel's offsets are.

What each way of reading costs, measured on one nats-server 2.9 on loopback
with nats-py (pages of 100 one-event messages of one channel, events/s): a
direct get after a seq, one at a time, 5,400; direct gets by seq, 100
pipelined, 36,000; a new pull consumer per page, 61,000; one pull consumer
kept for every page, 85,000. A consumer costs a round trip to make, so a
reader nearly caught up (a few messages behind the head: the tail of another
node's writes) gets those messages by direct get at once, a poll with nothing
new costs one direct get, and longer reads go through a pull consumer kept
for the next page.

Those reads first ask the stream's state (``STREAM.INFO``) for its head: a
round trip before the one that reads. A node's tail does little else — it
reads each time another node announces its messages, a message or two at a
time — so it reads without it (:meth:`StreamReader.follow`, when the stream
was seen lately: see :meth:`~.eventlog.NatsEventLog.read`): the direct gets
ask for the first message at or after each of the next few sequences, and
find the end themselves. In `polyport bench cluster` (three nodes on one
channel, 5,000 events/s, 2026-12-08) that took each node from about 1,900
``STREAM.INFO`` a run to 8; a tail's read went from a median of 1.0 to 1.7 ms
(p99 4.8 to 6.7) to 0.6 to 1.1 ms (p99 2.8 to 5.2), and another node's
message, from stored to handed to subscribers, from a median of 1.7 to 2.0 ms
to 1.1 to 1.2 ms.

Reads go by message and hand out events (see :mod:`.messages`): a read after a
position inside a message starts with that message and skips its events up to
the position; a page that ends inside a message keeps the rest of it with the
consumer kept for the next page (or, the consumer gone, reads that message
again). A pull asks for as many messages as should hold the events still
wanted, judged by the messages just read, so packs are not read past a page.

JetStream numbers no offsets, so finding one searches the channel's messages
(see :meth:`StreamReader.locate`).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from polyport.backends.nats.client import (
    JetStreamClient,
    PullConsumer,
    message_seq,
    message_subject,
)
from polyport.backends.nats.messages import Meta, end_of, meta_of, stream_seq_of
from polyport.backends.nats.meta import Record
from polyport.backends.nats.subjects import Subjects
from polyport.core.errors import Unavailable
from polyport.core.events import Event, Pattern

if TYPE_CHECKING:
    from nats.aio.msg import Msg

#: Reads of at most this many messages get each one directly, pipelined, and filter here.
SEQ_WINDOW = 64
#: Direct gets a follower's read sends at first (see :meth:`StreamReader.follow`).
FOLLOW_FIRST = 4
#: Consumers kept positioned for a reader's next page, at most, and for how long
#: (seconds; the server deletes one unused for 30).
MAX_CONSUMERS = 16
KEEP_CONSUMER = 10.0


class _Reading:
    """A pull consumer standing in a channel's messages, and the events it read past a page."""

    __slots__ = ("ahead", "consumer", "per_message", "since")

    def __init__(self, consumer: PullConsumer, ahead: list[Event], per_message: float) -> None:
        self.consumer = consumer
        self.ahead = ahead  # read from its messages, not handed out yet
        self.per_message = per_message  # events per message, as the last ones held
        self.since = 0.0  # when it was kept


class StreamReader:
    """Reads one log's stream; ``events`` gives a message's events (none: not an event's)."""

    def __init__(
        self,
        client: JetStreamClient,
        stream: str,
        subjects: Subjects,
        events: Callable[[Msg], list[Event]],
    ) -> None:
        self.client = client
        self.stream = stream
        self.subjects = subjects
        self.events = events
        self._consumers: dict[tuple[str, int], _Reading] = {}
        self._ask = FOLLOW_FIRST  # direct gets a follower's read sends at first

    async def follow(
        self, patterns: Sequence[Pattern], after: int, limit: int
    ) -> tuple[list[Event], int] | None:
        """Up to ``limit`` events of ``patterns`` after position ``after``, and the position
        the read covered, without asking for the head: None if more than
        :data:`SEQ_WINDOW` messages may follow (then read by the head).

        For a reader keeping up with the log (another node's messages, just
        announced). Each direct get asks for the first message at or after a
        sequence, of any channel, for the next few sequences at once (as many as
        the last read found, and a few more). The answers cover the stream
        without a gap up to the first that found none — a message at a sequence
        means every lower one is stored or deleted — so the read covers up to
        the newest message before it, ``after`` if none; if every get found one,
        the next ones follow on.
        """
        first = start = max(stream_seq_of(after + 1), 1)
        top = 0  # the newest message read
        ask = self._ask
        events: list[Event] = []
        everything = self.subjects.all
        while ask > 0:
            msgs = await self.client.direct_get_many(
                self.stream,
                [{"seq": seq, "next_by_subj": everything} for seq in range(start, start + ask)],
            )
            for msg in msgs:
                if msg is None:  # nothing at or after that sequence: the end, so far
                    self._ask = min(max(FOLLOW_FIRST, top - first + 3), SEQ_WINDOW)
                    if len(events) >= limit:
                        return events[:limit], events[limit - 1].seq
                    return events, end_of(top) if top else after
                seq = message_seq(msg)
                if seq <= top:
                    continue  # a get before it found it already (deleted ones between)
                top = seq
                channel = self.subjects.channel(message_subject(msg))
                if any(p.matches(channel) for p in patterns):
                    events += [e for e in self.events(msg) if e.seq > after]
            if len(events) >= limit:
                return events[:limit], events[limit - 1].seq
            start = top + 1
            ask = min(2 * ask, first + SEQ_WINDOW - start)
        return None

    async def close(self) -> None:
        consumers, self._consumers = self._consumers, {}
        for reading in consumers.values():
            await reading.consumer.close()

    async def scan(
        self, patterns: Sequence[Pattern], after: int, head: int, limit: int
    ) -> list[Event]:
        """Up to ``limit`` events of ``patterns`` at positions in ``(after, head]``, in order."""
        first, last = max(stream_seq_of(after + 1), 1), stream_seq_of(head)
        if last - first < SEQ_WINDOW:
            # A few messages (a reader keeping up): get them all at once, filter here.
            msgs = await self.client.direct_get_many(
                self.stream, [{"seq": seq} for seq in range(first, last + 1)]
            )
            events: list[Event] = []
            for msg in msgs:
                if msg is None:
                    continue
                channel = self.subjects.channel(message_subject(msg))
                if any(p.matches(channel) for p in patterns):
                    events += [e for e in self.events(msg) if e.seq > after]
                    if len(events) >= limit:
                        return events[:limit]
            return events
        filters = self.subjects.filters(patterns)
        runs = await asyncio.gather(*(self._read_filter(f, after, head, limit) for f in filters))
        if len(runs) == 1:
            return runs[0]
        merged = heapq.merge(*runs, key=lambda e: e.seq)
        seen: set[int] = set()
        out = []
        for event in merged:
            if event.seq not in seen:
                seen.add(event.seq)
                out.append(event)
                if len(out) == limit:
                    break
        return out

    async def _read_filter(self, subject: str, after: int, head: int, limit: int) -> list[Event]:
        """Events on ``subject`` (a filter) at positions in ``(after, head]``, at most ``limit``.

        One direct get first: a reader that is nearly caught up (a poll, a long
        poll's second look) needs nothing more. Past that, a pull consumer; one
        that read a full page is kept, so the next page (a reader catching up)
        costs one pull and not a new consumer.
        """
        last = stream_seq_of(head)
        kept = self._consumers.pop((subject, after), None)
        if kept is not None:
            if time.monotonic() - kept.since < KEEP_CONSUMER:
                try:
                    return await self._pull(kept, subject, last, limit)
                except Unavailable:
                    pass  # gone (the server restarted, or it expired): make another
            else:
                await kept.consumer.close()
        start = max(stream_seq_of(after + 1), 1)  # the message of the first position after
        msg = await self.client.direct_get(self.stream, {"seq": start, "next_by_subj": subject})
        if msg is None or message_seq(msg) > last:
            return []
        events = self.events(msg)
        ahead = [e for e in events if e.seq > after]
        if len(ahead) >= limit:
            return ahead[:limit]
        config = {
            "filter_subject": subject,
            "deliver_policy": "by_start_sequence",
            "opt_start_seq": message_seq(msg) + 1,
        }
        consumer = await self.client.consumer(self.stream, config)
        reading = _Reading(consumer, ahead, max(1.0, float(len(events))))
        return await self._pull(reading, subject, last, limit)

    async def _pull(self, reading: _Reading, subject: str, last: int, limit: int) -> list[Event]:
        """Up to ``limit`` events: those ``reading`` holds, then its consumer's, up to message
        ``last``. Messages are asked for as many as should hold the events still wanted,
        judged by the last ones; a consumer that may hold more is kept for the next page."""
        out, reading.ahead = reading.ahead, []
        full = True
        try:
            while full and len(out) < limit:
                ask = max(1, math.ceil((limit - len(out)) / reading.per_message))
                msgs, full = await reading.consumer.pull(ask, lambda m: message_seq(m) <= last)
                events = [event for msg in msgs for event in self.events(msg)]
                if msgs:
                    reading.per_message = max(1.0, len(events) / len(msgs))
                out += events
        except BaseException:
            await reading.consumer.close()
            raise
        if full:  # a whole page: the consumer stands in the channel for the next one
            reading.ahead = out[limit:]
            await self._keep(subject, out[limit - 1].seq, reading)
        else:
            await reading.consumer.close()
        return out[:limit]

    async def _keep(self, subject: str, after: int, reading: _Reading) -> None:
        """Keep a consumer standing after position ``after`` on ``subject``, for the next page."""
        reading.since = time.monotonic()
        self._consumers[(subject, after)] = reading
        while len(self._consumers) > MAX_CONSUMERS:
            oldest = next(iter(self._consumers))
            await self._consumers.pop(oldest).consumer.close()

    async def seq_of_offset(self, subject: str, n: int, low: Record, top: Meta) -> int | None:
        """The position of the event at offset ``n`` of a channel, None if it is gone.

        ``low`` is the channel's record (offsets up to ``low.to`` are gone) and
        ``top`` its last message (``n`` is not past it).
        """
        if n == top.offset - 1 and top.prev:
            return top.prev  # the event just before the last message: its header says where
        held = await self.locate(subject, n, low, top)
        return held.position(n) if held is not None else None

    async def locate(self, subject: str, n: int, low: Record, top: Meta) -> Meta | None:
        """The message of a channel holding offset ``n``, None if it is gone.

        Offsets grow with stream sequences within a channel, so this searches the
        sequences between the trim (``low``) and the channel's last message
        (``top``): by interpolation, then halving.
        """
        if n >= top.offset:
            return top
        lo_offset, lo_seq = low.to, stream_seq_of(low.ts)  # offsets up to lo_offset: seqs <= lo_seq
        hi_offset, hi_seq = top.offset, top.seq  # offset n is at a seq < hi_seq
        for step in itertools.count():
            if hi_seq - lo_seq <= 1 or step > 128:
                return None
            if step % 2 == 0 and hi_offset > lo_offset:
                guess = lo_seq + (n - lo_offset) * (hi_seq - lo_seq) // (hi_offset - lo_offset)
            else:
                guess = (lo_seq + hi_seq) // 2
            guess = min(max(guess, lo_seq + 1), hi_seq - 1)
            msg = await self.client.direct_get(self.stream, {"seq": guess, "next_by_subj": subject})
            meta = meta_of(msg, message_seq(msg)) if msg is not None else None
            if meta is None:
                return None
            if meta.offset <= n <= meta.last:
                return meta
            if meta.last < n:
                lo_offset, lo_seq = meta.last, meta.seq
            else:  # the first message at or after the guess is past n: n is before it
                hi_offset, hi_seq = meta.offset, guess
        return None  # pragma: no cover  (itertools.count never ends)

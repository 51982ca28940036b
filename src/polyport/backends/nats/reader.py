"""Reading the stream: events after a seq for patterns, and a channel's offsets by seq.

What each way of reading costs, measured on one nats-server 2.9 on loopback
with nats-py (pages of 100 events of one channel, events/s): a direct get
after a seq, one at a time, 5,400; direct gets by seq, 100 pipelined, 36,000;
a new pull consumer per page, 61,000; one pull consumer kept for every page,
85,000. A consumer costs a round trip to make, so a reader nearly caught up
(a few seqs behind the head: the tail of another node's writes) gets those
seqs by direct get at once, a poll with nothing new costs one direct get, and
longer reads go through a pull consumer kept for the next page.

JetStream numbers no offsets, so finding one searches the channel's seqs
(see :meth:`StreamReader.seq_of_offset`).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from polyport.backends.nats.client import JetStreamClient, PullConsumer, message_seq
from polyport.backends.nats.meta import Record
from polyport.backends.nats.subjects import Subjects
from polyport.backends.nats.writer import HEADER, parse_meta, prev_seq
from polyport.core.errors import Unavailable
from polyport.core.events import Event, Pattern

if TYPE_CHECKING:
    from nats.aio.msg import Msg

#: Reads of at most this many seqs get each one directly, pipelined, and filter here.
SEQ_WINDOW = 64
#: Consumers kept positioned for a reader's next page, at most, and for how long
#: (seconds; the server deletes one unused for 30).
MAX_CONSUMERS = 16
KEEP_CONSUMER = 10.0


class StreamReader:
    """Reads one log's stream; ``event`` makes an :class:`Event` of a message (None: not one)."""

    def __init__(
        self,
        client: JetStreamClient,
        stream: str,
        subjects: Subjects,
        event: Callable[[Msg], Event | None],
    ) -> None:
        self.client = client
        self.stream = stream
        self.subjects = subjects
        self.event = event
        self._consumers: dict[tuple[str, int], tuple[PullConsumer, float]] = {}

    async def close(self) -> None:
        consumers, self._consumers = self._consumers, {}
        for consumer, _ in consumers.values():
            await consumer.close()

    async def scan(
        self, patterns: Sequence[Pattern], after: int, head: int, limit: int
    ) -> list[Event]:
        if head - after <= SEQ_WINDOW:
            # A few seqs (a reader keeping up): get them all at once, filter here.
            msgs = await self.client.direct_get_many(
                self.stream, [{"seq": seq} for seq in range(after + 1, head + 1)]
            )
            events = []
            for msg in msgs:
                event = self.event(msg) if msg is not None else None
                if event is not None and any(p.matches(event.channel) for p in patterns):
                    events.append(event)
                    if len(events) == limit:
                        break
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
        """Events on ``subject`` (a filter) with ``after < seq <= head``, at most ``limit``.

        One direct get first: a reader that is nearly caught up (a poll, a long
        poll's second look) needs nothing more. Past that, a pull consumer; one
        that read a full page is kept, so the next page (a reader catching up)
        costs one pull and not a new consumer.
        """
        out: list[Event] = []
        kept = self._consumers.pop((subject, after), None)
        if kept is not None:
            consumer, since = kept
            if time.monotonic() - since < KEEP_CONSUMER:
                try:
                    return await self._pull(consumer, subject, head, limit, out)
                except Unavailable:
                    pass  # gone (the server restarted, or it expired): make another
            else:
                await consumer.close()
        msg = await self.client.direct_get(self.stream, {"seq": after + 1, "next_by_subj": subject})
        if msg is None or message_seq(msg) > head:
            return out
        after = message_seq(msg)
        event = self.event(msg)
        if event is not None:
            out.append(event)
            if limit == 1:
                return out
        config = {
            "filter_subject": subject,
            "deliver_policy": "by_start_sequence",
            "opt_start_seq": after + 1,
        }
        consumer = await self.client.consumer(self.stream, config)
        return await self._pull(consumer, subject, head, limit, out)

    async def _pull(
        self, consumer: PullConsumer, subject: str, head: int, limit: int, out: list[Event]
    ) -> list[Event]:
        """Events from ``consumer`` up to ``head``, after ``out``; keep it if the page is full."""
        try:
            msgs, full = await consumer.pull(limit - len(out), lambda m: message_seq(m) <= head)
        except BaseException:
            await consumer.close()
            raise
        out.extend(e for e in map(self.event, msgs) if e is not None)
        if full and msgs:
            await self._keep(subject, message_seq(msgs[-1]), consumer)
        else:
            await consumer.close()
        return out

    async def _keep(self, subject: str, seq: int, consumer: PullConsumer) -> None:
        """Keep a consumer that stands after ``seq`` on ``subject``, for the next page."""
        self._consumers[(subject, seq)] = (consumer, time.monotonic())
        while len(self._consumers) > MAX_CONSUMERS:
            oldest = next(iter(self._consumers))
            await self._consumers.pop(oldest)[0].close()

    async def seq_of_offset(
        self, subject: str, n: int, low: Record, top: tuple[int, int, str | None]
    ) -> int | None:
        """The seq of the event at offset ``n`` of a channel, None if it is gone.

        Offsets grow with seqs within a channel, so this searches seqs between
        the trim (``low``) and the channel's last event (``top``): by
        interpolation, then halving. A hit on offset ``n + 1`` is enough: its
        header names the seq of the event before it.
        """
        top_offset, top_seq, top_prev = top
        if n == top_offset - 1 and top_prev is not None:
            return prev_seq(top_prev, top_seq) or None
        lo_offset, lo_seq = low.to, low.ts  # offsets up to lo_offset are at seqs <= lo_seq
        hi_offset, hi_seq = top_offset, top_seq  # offset n is at a seq < hi_seq
        for step in itertools.count():
            if hi_seq - lo_seq <= 1 or step > 128:
                return None
            if step % 2 == 0 and hi_offset > lo_offset:
                guess = lo_seq + (n - lo_offset) * (hi_seq - lo_seq) // (hi_offset - lo_offset)
            else:
                guess = (lo_seq + hi_seq) // 2
            guess = min(max(guess, lo_seq + 1), hi_seq - 1)
            msg = await self.client.direct_get(self.stream, {"seq": guess, "next_by_subj": subject})
            if msg is None:
                return None
            offset, prev, _, _ = parse_meta((msg.headers or {})[HEADER])
            seq = message_seq(msg)
            if offset == n:
                return seq
            if offset == n + 1:
                return prev_seq(prev, seq) or None
            if offset < n:
                lo_offset, lo_seq = offset, seq
            else:  # the first event at or after the guess is past n: n is before it
                hi_offset, hi_seq = offset, guess
        return None  # pragma: no cover  (itertools.count never ends)

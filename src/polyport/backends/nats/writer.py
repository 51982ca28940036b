"""Appending: gapless offsets per channel with many writers, publishes pipelined.

JetStream numbers the stream (``seq``, global) but not each subject, so a
channel's ``offset`` is assigned here and JetStream is asked to refuse it if
anyone wrote the channel meanwhile: every message that follows no message of
ours in flight on its channel carries ``Nats-Expected-Last-Subject-Sequence``
(the seq of the channel's last event as this node knows it). The offset is
then that event's offset + 1, and a refusal (``wrong last sequence``) means
another node got there first: read the channel's end again and retry.

Publishes are pipelined without waiting for each acknowledgement, which the
subject check alone cannot cover: the second of two messages on one channel
cannot name the first one's seq before it is known. So every message in
flight also carries ``Nats-Expected-Last-Msg-Id`` naming the message sent
just before it: JetStream stores it only directly after that one. Messages in
flight are thus stored back to back or not at all — a chain. A message whose
channel predecessor is in the chain needs no subject check (nothing can come
between them), and when one link fails (another node's message got in
between, or a channel moved on) every later link fails too, so nothing is
ever stored out of order; the failed suffix is sent again as a new chain.
Each failed round still stores at least its first message unless its own
channel moved. But the message-id check is the *stream's* last message, not
the channel's: another node's message on any channel landing between two
links breaks the chain, so under several busy writers a node that pipelines
retries often — `polyport bench cluster` measured NATS falling behind at
5,000 events/s over two and three nodes (docs/benchmarks.md). Chaining only
within a channel, with one message in flight per channel otherwise, is the
way out; it is not done yet.

When the connection breaks, the messages in flight were handled by the
server before it closed or never will be: once connected again the writer
finds which were stored (they are consecutive, from the first, identified by
``Nats-Msg-Id``), acknowledges those and sends the others again. While NATS
is unreachable, appends are refused at once rather than buffered.

Each message holds the event's metadata in one header, ``Polyport: {offset}
{prev} {time} {type}``, and its data as the payload. ``prev`` is the seq of
the channel's previous event (``0``: none held), or ``-{n}`` when that event
was ``n`` messages earlier in the same chain (its seq unknown when sent).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import secrets
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING
from urllib.parse import quote, unquote

import orjson

from polyport.backends.nats.client import (
    WRONG_LAST_MSG_ID,
    WRONG_LAST_SEQUENCE,
    JetStreamClient,
    message_seq,
    status,
    unavailable,
)
from polyport.backends.nats.meta import ChannelRecords
from polyport.core.errors import Unavailable
from polyport.core.events import Event

if TYPE_CHECKING:
    from nats.aio.msg import Msg

log = logging.getLogger("polyport.backends.nats")

HEADER = "Polyport"
#: Messages in flight at most (the rest wait their turn).
MAX_IN_FLIGHT = 1024
#: Rounds an append may lose to other writers before it is Unavailable.
MAX_ATTEMPTS = 64


def meta_header(offset: int, prev: str, time: float, type: str) -> str:
    return f"{offset} {prev} {time!r} {quote(type, safe='')}"


def parse_meta(value: str) -> tuple[int, str, float, str]:
    """``(offset, prev, time, type)`` from a ``Polyport`` header."""
    offset, prev, time, type_ = value.split(" ", 3)
    return int(offset), prev, float(time), unquote(type_)


def prev_seq(prev: str, seq: int) -> int:
    """The seq of the channel's previous event, for an event at ``seq`` (0: none)."""
    return seq - int(prev[1:]) if prev.startswith("-") else int(prev)


class Tail:
    """What this node knows of one channel's end in the stream."""

    __slots__ = (
        "channel",
        "epoch",
        "in_flight",
        "known",
        "offset",
        "sent_offset",
        "sent_pos",
        "seq",
        "subject",
        "trimmed",
    )

    def __init__(self, channel: str, epoch: str, subject: str) -> None:
        self.channel = channel
        self.epoch = epoch
        self.subject = subject
        self.known = False  # offset and seq are what the stream held, not a guess
        self.offset = 0  # the channel's last offset (stored)
        self.seq = 0  # that event's seq (0: the subject holds no event)
        self.trimmed = 0  # offsets up to this are gone, as this node last knew
        self.in_flight = 0  # this node's messages on the channel awaiting an answer
        self.sent_offset = 0  # the newest of those: its offset
        self.sent_pos = 0  # and its place in the chain


class _Batch:
    __slots__ = ("done", "events", "failed", "pending")

    def __init__(self, size: int) -> None:
        self.events: list[Event | None] = [None] * size
        self.pending = size
        self.done: asyncio.Future[list[Event]] = asyncio.get_running_loop().create_future()
        self.failed = False

    def fail(self, exc: Unavailable) -> None:
        self.failed = True
        if not self.done.done():
            self.done.set_exception(exc)
            self.done.exception()  # retrieved: a batch whose caller left logs nothing


class _Item:
    __slots__ = (
        "after",
        "answer",
        "attempts",
        "batch",
        "data",
        "deadline",
        "generation",
        "index",
        "msg_id",
        "offset",
        "tail",
        "time",
        "token",
        "type",
    )

    def __init__(
        self, batch: _Batch, index: int, tail: Tail, type: str, data: bytes, time: float
    ) -> None:
        self.batch = batch
        self.index = index
        self.tail = tail
        self.type = type
        self.data = data
        self.time = time
        self.offset = 0
        self.attempts = 0
        self.answer: Msg | None = None
        self.token = ""
        self.deadline = 0.0
        self.msg_id = ""
        self.after = -1  # the seq of the channel's event before this one, if known when sent
        self.generation = 0


class Writer:
    """The one task of a node that publishes its appends, in order, as a chain."""

    def __init__(
        self,
        client: JetStreamClient,
        stream: str,
        records: ChannelRecords,
        tail_of: Callable[[str], Tail],
        on_trouble: Callable[[], None],
    ) -> None:
        self.client = client
        self.stream = stream
        self.records = records
        self._tail_of = tail_of
        self._on_trouble = on_trouble
        self._queue: collections.deque[_Item] = collections.deque()
        self._in_flight: collections.deque[_Item] = collections.deque()
        self._retry: list[_Item] = []
        self._broken = False  # a link failed: the rest of the chain will fail too
        self._nonce = secrets.token_hex(8)
        self._ids = 0
        self._pos = 0
        self._last_id = ""
        self._kick: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.client.on_reconnect.append(self._poke)
        self._task = asyncio.create_task(self._run(), name="polyport-nats-writer")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.abandon(unavailable("event log closed"))

    def abandon(self, exc: Unavailable) -> None:
        """Fail every append not yet answered (the engine failed, the log closes or was reset).

        The stream is checked before the next append: an engine that came back
        empty is a new epoch, found there.
        """
        self._on_trouble()
        for item in (*self._in_flight, *self._retry, *self._queue):
            self.client.drop(item.token)
            item.batch.fail(exc)
            item.tail.in_flight = 0
            item.tail.known = False
        self._in_flight.clear()
        self._retry.clear()
        self._queue.clear()
        self._broken = False

    def _fail_unsent(self, exc: Unavailable) -> None:
        """Fail the appends not sent (not stored: precisely); those in flight wait their answer."""
        self._on_trouble()
        for item in (*self._retry, *self._queue):
            item.batch.fail(exc)
            if not item.tail.in_flight:
                item.tail.known = False
        self._retry.clear()
        self._queue.clear()

    async def append(self, items: Sequence[tuple[str, str, bytes]], time: float) -> list[Event]:
        if not items:
            return []
        if self._task is None or self._task.done():
            raise unavailable("event log is not open")
        batch = _Batch(len(items))
        tail_of = self._tail_of
        self._queue.extend(
            _Item(batch, i, tail_of(channel), type, data, time)
            for i, (channel, type, data) in enumerate(items)
        )
        self._poke()
        return await asyncio.shield(batch.done)

    def _poke(self) -> None:
        if self._kick is not None and not self._kick.done():
            self._kick.set_result(None)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._kick = loop.create_future()
            try:
                if self._absorb(loop.time()):
                    await self._verify(loop)
                if self._broken and not self._in_flight:
                    self._recover()
                if not self._broken:
                    await self._send(loop)
            except Unavailable as exc:
                self._fail_unsent(exc)
            except Exception:
                log.exception("the NATS event log writer failed")
                self.abandon(unavailable("event log writer failed"))
            if self._kick.done():
                continue
            timer = None
            if self._in_flight:
                timer = loop.call_at(self._in_flight[0].deadline, self._poke)
            try:
                await self._kick
            finally:
                if timer is not None:
                    timer.cancel()

    # -- answers ------------------------------------------------------------------

    def _absorb(self, now: float) -> bool:
        """Settle the answered messages at the head of the chain, in order.

        Returns True when the head will get no answer: the connection was made
        again since it was sent (see :meth:`_verify`).
        """
        in_flight = self._in_flight
        while in_flight:
            item = in_flight[0]
            if item.answer is None:
                if item.generation != self.client.generation:
                    return True
                if now >= item.deadline:
                    # No answer and no reconnection: it may still be stored later,
                    # so nothing can be said, or sent again.
                    self.abandon(unavailable("did not acknowledge an append in time"))
                return False
            in_flight.popleft()
            self.client.drop(item.token)
            if status(item.answer) == "503":  # no stream listens on the subject: it is gone
                item.tail.in_flight -= 1
                self._broken = True
                self._on_trouble()
                item.batch.fail(unavailable("has no stream for this event log"))
                continue
            self._settle(item, item.answer.data)
        return False

    async def _verify(self, loop: asyncio.AbstractEventLoop) -> None:
        """Ask the stream which messages in flight when the connection broke were stored.

        The server handled each of them before the connection closed or never
        will. They form a chain, so the stored ones are back to back from the
        first: find it on its channel after the event before it, then compare
        the message ids at the seqs that follow. Those stored are acknowledged
        (their appends succeed); the rest are sent again, in order.
        """
        items = list(self._in_flight)
        first = items[0]
        after = first.after if first.after >= 0 else first.tail.seq
        found = await self.client.direct_get(
            self.stream, {"seq": after + 1, "next_by_subj": first.tail.subject}
        )
        stored: list[int] = []
        if found is not None and (found.headers or {}).get("Nats-Msg-Id") == first.msg_id:
            seq = message_seq(found)
            stored.append(seq)
            rest = await self.client.direct_get_many(
                self.stream, [{"seq": seq + i} for i in range(1, len(items))]
            )
            for item, msg in zip(items[1:], rest, strict=True):
                if msg is None or (msg.headers or {}).get("Nats-Msg-Id") != item.msg_id:
                    break
                stored.append(message_seq(msg))
        self._in_flight.clear()
        for item, seq in zip(items, stored, strict=False):
            self.client.drop(item.token)
            self._settle(item, orjson.dumps({"seq": seq}))
        for item in items[len(stored) :]:
            self.client.drop(item.token)
            item.tail.in_flight -= 1
            item.tail.known = False
            if not item.batch.failed:
                self._retry.append(item)
        self._broken = bool(self._retry)

    def _settle(self, item: _Item, data: bytes) -> None:
        tail = item.tail
        tail.in_flight -= 1
        batch = item.batch
        answer = orjson.loads(data) if data else {}
        error = answer.get("error")
        if not error and "seq" in answer and not answer.get("duplicate"):
            seq = answer["seq"]
            tail.offset, tail.seq = item.offset, seq
            batch.events[item.index] = Event(
                tail.channel, item.offset, tail.epoch, seq, item.type, item.time, item.data
            )
            batch.pending -= 1
            if not batch.pending and not batch.done.done():
                batch.done.set_result(batch.events)  # type: ignore[arg-type]  # all set
            return
        self._broken = True
        code = error.get("err_code") if error else None
        if batch.failed:
            return
        if code in (WRONG_LAST_SEQUENCE, WRONG_LAST_MSG_ID):
            if code == WRONG_LAST_SEQUENCE:
                tail.known = False  # another node wrote the channel: read its end again
            item.attempts += 1
            if item.attempts < MAX_ATTEMPTS:
                self._retry.append(item)
                return
            batch.fail(unavailable("lost every attempt to append to a busy channel"))
            return
        what = error.get("description", "refused an append") if error else "refused an append"
        batch.fail(unavailable(what))

    def _recover(self) -> None:
        """The chain broke and every link has answered: send the failed suffix again.

        Channels another node moved are read again before their next send (see
        :meth:`_send`); the retried messages keep their order, ahead of newer ones.
        """
        self._queue.extendleft(reversed(self._retry))
        self._retry.clear()
        self._broken = False

    # -- sending ------------------------------------------------------------------

    async def _send(self, loop: asyncio.AbstractEventLoop) -> None:
        queue = self._queue
        while queue and len(self._in_flight) < MAX_IN_FLIGHT and not self._broken:
            item = queue[0]
            if item.batch.failed:
                queue.popleft()
                continue
            tail = item.tail
            if not self.client.connected:
                raise unavailable("is not reachable (reconnecting)")
            if not tail.known and not tail.in_flight:
                await self.refresh(tail)
                continue
            queue.popleft()
            await self._transmit(item, loop)

    async def _transmit(self, item: _Item, loop: asyncio.AbstractEventLoop) -> None:
        tail = item.tail
        pos = self._pos + 1  # its place in the chain, once sent
        self._ids += 1
        item.msg_id = msg_id = f"{self._nonce}-{self._ids:x}"
        headers = {"Nats-Msg-Id": msg_id}
        if self._in_flight:
            headers["Nats-Expected-Last-Msg-Id"] = self._last_id
        if tail.in_flight:
            item.offset = tail.sent_offset + 1
            item.after = -1
            prev = f"-{pos - tail.sent_pos}"
        else:
            item.offset = tail.offset + 1
            item.after = tail.seq
            prev = str(tail.seq)
            headers["Nats-Expected-Last-Subject-Sequence"] = prev
        headers[HEADER] = meta_header(item.offset, prev, item.time, item.type)
        item.answer = None  # a retried message: its last answer is not this one's
        item.generation = self.client.generation

        def answered(msg: Msg) -> None:
            item.answer = msg
            self._poke()

        reply, item.token = self.client.reply_to(answered)
        try:
            await self.client.send(tail.subject, item.data, reply, headers)
        except Unavailable:
            self.client.drop(item.token)
            self._queue.appendleft(item)  # not sent: failed with the unsent ones
            raise
        item.deadline = loop.time() + self.client.timeout
        tail.in_flight += 1
        tail.sent_offset = item.offset
        tail.sent_pos = self._pos = pos
        self._last_id = msg_id
        self._in_flight.append(item)

    async def refresh(self, tail: Tail) -> None:
        """Read the channel's end from the stream (and its record, if it holds no event)."""
        msg = await self.client.direct_get(self.stream, {"last_by_subj": tail.subject})
        if msg is not None:
            tail.offset = parse_meta((msg.headers or {})[HEADER])[0]
            tail.seq = message_seq(msg)
            record = self.records.records.get(tail.channel)
            if record is not None:
                tail.trimmed = max(tail.trimmed, record.to)
        else:
            # Read after the subject: a trim records itself before it purges, so
            # a channel seen empty has its record already.
            record = await self.records.fresh(tail.channel)
            if record is None:
                record = await self.records.create(tail.channel)
            tail.offset, tail.seq, tail.trimmed = record.to, 0, record.to
        tail.known = True

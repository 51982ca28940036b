"""Appending: gapless offsets per channel under many writers, each channel's queue in one message.

JetStream numbers the stream (its sequence, global) but not each subject, so
a channel's offsets are assigned here and JetStream is asked to refuse them if
anyone wrote the channel meanwhile: every message carries
``Nats-Expected-Last-Subject-Sequence``, the stream sequence of the channel's
last message as this node knows it, and its first offset follows that
message's last. A refusal (``wrong last sequence``) means another node got
there first: read the channel's end again and send again.

**One message in flight per channel, carrying everything queued.** On each
node a channel has at most one message in flight. The appends that arrive
meanwhile queue, and the next message carries all of them — up to
:data:`~.messages.MAX_EVENTS` events and a quarter of the server's
``max_payload`` — packed as :mod:`.messages` describes. A node that loses a
round sends again with whatever queued meanwhile: the next message is bigger,
so losing costs latency, not throughput, and every round stores some node's
whole queue. Channels do not wait for each other: each has its own message
in flight (a task of its own while it has appends queued). A node's appends
to a channel keep their order, and one call's events on a channel are
consecutive in it: they travel in one message, unless more than one message
holds — those fill several, and another node's events may come between them.

This replaced one message per event, pipelined as a chain of
``Nats-Expected-Last-Msg-Id`` links. `polyport bench cluster` found it
starving with several nodes on one channel: a node whose chain won kept the
channel as long as its pipeline never drained, the others' chains failed at
their first link, and each of their rounds stored little (at 5,000 events/s
in all, two and three nodes delivered 67 to 72% of the events to their
subscribers, and hundreds of publishes were refused after MAX_ATTEMPTS).

**One writer per busy channel.** Racing keeps the throughput but not the
latency: a node may lose many rounds in a row, and its appends wait through
all of them (three nodes on one channel at 5,000 events/s: 10 to 13 lost
rounds in a row at the 99th percentile). So a node whose message, holding
only its own appends, lost a round *follows* the node that won: the
channel's last message names it, and from then on this node forwards its
appends to that one, which sends them in its own messages and says where
they were stored (see :mod:`.forward`). Several nodes writing one channel
end with one writer of it, and rounds are lost only until they do, or after
the writer stopped or could not send in time (its forwards come back, and
the node races again).

**Taking turns.** While nodes race, a winner is answered first and could
send again at once, ahead of the nodes still learning what beat them. On a
channel where a node lost a round lately, its messages carry a look-up of
the channel's end (a loser starts its next round without reading it first,
and learns whom to follow), and when it wins with only its own appends it
waits about a round before the next (see :meth:`Writer._round`). An append
whose message lost :data:`MAX_ATTEMPTS` rounds even so is Unavailable: a
hopelessly busy channel answers rather than hangs.

**Reconnection.** When the connection breaks with a message in flight, the
server handled it before the connection closed or never will. Once connected
again the writer looks at the channel's next message after the one it
expected: if that carries the message's ``Nats-Msg-Id`` it was stored and its
appends succeed, else it is sent again. A message the server left unanswered
for ``timeout`` seconds on a connection that stayed up fails its appends
(Unavailable), and may yet be stored; the channel's end is read again before
its next message, so offsets stay gapless either way. While NATS is
unreachable, appends are refused at once rather than buffered.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import secrets
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Literal

import orjson

from polyport.backends.nats.appends import Batch, Outgoing, Run, Tail, TakenBack, fail_runs
from polyport.backends.nats.client import (
    WRONG_LAST_SEQUENCE,
    JetStreamClient,
    message_seq,
    status,
    unavailable,
)
from polyport.backends.nats.forward import Forwarder, Placement, writer_of
from polyport.backends.nats.messages import MAX_EVENTS, Meta, encode, meta_of, position
from polyport.backends.nats.meta import ChannelRecords
from polyport.core.errors import Unavailable
from polyport.core.events import Event

if TYPE_CHECKING:
    from nats.aio.msg import Msg

log = logging.getLogger("polyport.backends.nats")

#: Rounds an append may lose to other writers before it is Unavailable.
MAX_ATTEMPTS = 64
#: A message's payload is at most this share of the server's ``max_payload`` (one
#: event larger than that goes alone).
PACK_SHARE = 4
#: This node's messages whose event counts are remembered (see :meth:`Writer.is_end`).
REMEMBERED = 4096
#: Seconds after losing a round during which a channel counts as contended on this node
#: (see :meth:`Writer._round`).
CONTENDED = 1.0
#: The longest a node that won a round on a contended channel waits before its next one.
MAX_YIELD = 0.05


class Writer:
    """Sends a node's appends: per channel, one message at a time, holding all that queued."""

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
        self._senders: set[Tail] = set()  # channels whose queue a task sends
        self._nonce = secrets.token_hex(8)
        self._ids = 0
        self._open = False
        self._reconnected: asyncio.Future[None] | None = None
        #: Stream sequence → events, of the newest messages holding this node's events.
        self._counts: dict[int, int] = {}
        self.forwarder = Forwarder(client, stream, self._nonce, self)

    @property
    def open(self) -> bool:
        return self._open

    def tail_of(self, channel: str) -> Tail:
        return self._tail_of(channel)

    def trouble(self) -> None:
        self._on_trouble()

    async def start(self) -> None:
        """Take appends: this node's, and those other nodes forward (see :mod:`.forward`)."""
        self.client.on_reconnect.append(self._on_reconnect)
        await self.forwarder.start()
        self._open = True

    async def stop(self) -> None:
        self._open = False
        await self.forwarder.stop()
        senders = [tail.sender for tail in self._senders if tail.sender is not None]
        self.abandon(unavailable("event log closed"))
        for task in senders:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.forwarder.answered()  # the forwards' runs failed: their answers go now

    def abandon(self, exc: Unavailable) -> None:
        """Fail every append not yet answered (the engine failed, the log closes or was reset).

        The stream is checked before the next append: an engine that came back
        empty is a new epoch, found there.
        """
        self._on_trouble()
        for tail in list(self._senders):
            task, tail.sender = tail.sender, None
            if task is not None:
                task.cancel()
            if tail.sending is not None:
                self.client.drop(tail.sending.token)
                fail_runs(tail.sending.runs, exc)
                tail.sending = None
            if tail.forwarding is not None:
                fail_runs(tail.forwarding, exc)
                tail.forwarding = None
            tail.leader = None
            self._fail_queue(tail, exc)
        self._senders.clear()
        self._counts.clear()  # a stream made again numbers its messages from 1 again

    def is_end(self, stream_seq: int, index: int) -> bool:
        """Whether ``index`` is the last event of this node's message at ``stream_seq``
        (False when that message is not one of its newest)."""
        return self._counts.get(stream_seq) == index + 1

    async def append(self, items: Sequence[tuple[str, str, bytes]], time: float) -> list[Event]:
        if not items:
            return []
        if not self._open:
            raise unavailable("event log is not open")
        if not self.client.connected:
            # Refused now rather than queued: nothing the caller was told failed is sent later.
            raise unavailable("is not reachable (reconnecting)")
        batch = Batch(len(items))
        runs: dict[str, Run] = {}
        for index, (channel, type_, data) in enumerate(items):
            run = runs.get(channel)
            if run is None:
                run = runs[channel] = Run(batch)
            run.add(index, (time, type_, data))
        for channel, run in runs.items():
            tail = self._tail_of(channel)
            tail.queue.append(run)
            self.wake(tail)
        return await asyncio.shield(batch.done)

    def wake(self, tail: Tail) -> None:
        """Have a task send the channel's queue, unless one does."""
        if tail.sender is None:
            tail.sender = asyncio.create_task(self._send_queue(tail), name="polyport-nats-append")
            self._senders.add(tail)

    def _on_reconnect(self) -> None:
        """Messages in flight get no answer now: their senders look for them in the stream."""
        for tail in self._senders:
            message = tail.sending
            if message is not None and not message.answer.done():
                message.answer.set_result(None)
        waiter, self._reconnected = self._reconnected, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- one channel ----------------------------------------------------------------

    async def _send_queue(self, tail: Tail) -> None:
        """Send a channel's queued appends, one message at a time, until none is left."""
        runs: list[Run] = []  # taken from the queue, not settled yet
        try:
            while tail.queue:
                if not self.client.connected:
                    raise unavailable("is not reachable (reconnecting)")
                # Runs are taken right before they are in flight (no wait between), so
                # that failing what is in flight and what is queued fails every run.
                if tail.leader is not None and not tail.queue[0].deadline:
                    runs = self._take(tail.queue, own=True)  # its own only: no chains
                    if runs:
                        await self.forwarder.send(tail, runs)
                    runs = []
                    continue
                if not tail.known:
                    await self.refresh(tail)
                runs = self._take(tail.queue)
                if runs:
                    await self._round(tail, runs)
                runs = []
        except Unavailable as exc:
            fail_runs(runs, exc)
            self._fail_queue(tail, exc)
        except Exception:
            log.exception("the NATS event log writer failed")
            failed = unavailable("event log writer failed")
            fail_runs(runs, failed)
            self._fail_queue(tail, failed)
        finally:
            if tail.sender is asyncio.current_task():
                tail.sender = None
                self._senders.discard(tail)

    def _take(self, queue: collections.deque[Run], *, own: bool = False) -> list[Run]:
        """The runs the next message carries: whole runs while they fit, else the first's start
        (with ``own``, only this node's, up to the first another node forwarded)."""
        budget = self.client.max_message // PACK_SHARE
        now = asyncio.get_running_loop().time()
        runs: list[Run] = []
        count = size = 0
        while queue:
            run = queue[0]
            if run.batch.failed:  # another part of its call failed: the call has its answer
                queue.popleft()
                continue
            if run.deadline and run.deadline < now and not run.partial:
                queue.popleft()  # another node's, kept too long: it sends it itself
                run.batch.fail(TakenBack("forwarded append not sent in time"))
                continue
            if own and run.deadline:
                break
            if count + len(run.entries) <= MAX_EVENTS and size + run.size <= budget:
                runs.append(queue.popleft())
                count += len(run.entries)
                size += run.size
                continue
            if not runs:  # more than one message holds: its start goes now
                runs.append(run.split(budget))
            break
        return runs

    async def _round(self, tail: Tail, runs: list[Run]) -> None:
        """Send ``runs`` as one message and settle it: stored, lost to another node, or failed.

        A node that wins is answered first and could send again at once, while
        the others still learn what beat them: it would keep winning, and they
        would lose until their appends fail. So on a channel where this node
        lost a round lately (*contended*), two things even the odds: its
        message goes out with a look-up of the channel's last message, so if
        it loses, the next round starts as soon as it is answered, with no
        read of the channel's end between (and it knows whom to follow); and
        when it wins, it waits as long as the round took (at most
        :data:`MAX_YIELD`) before the next, the others' turn — unless the
        message held appends forwarded to it: their nodes follow it and wait
        for no turn. What queues meanwhile goes in its next message.
        """
        self._ids += 1
        message = Outgoing(runs, tail, f"{self._nonce}-{self._ids:x}", self.client)
        entries = [entry for run in runs for entry in run.entries]
        name, value, payload = encode(message.offset, message.prev, entries)
        headers = {
            "Nats-Msg-Id": message.msg_id,
            "Nats-Expected-Last-Subject-Sequence": str(message.expected),
            name: value,
        }
        loop = asyncio.get_running_loop()
        lookup: asyncio.Task[Msg | None] | None = None
        sent = loop.time()
        forwarded = any(run.deadline for run in runs)  # it holds other nodes' appends
        outcome = None
        tail.sending = message  # from here a reconnection answers it (see _on_reconnect)
        try:
            try:
                await self.client.send(tail.subject, payload, message.reply, headers)
            except Unavailable:
                tail.queue.extendleft(reversed(runs))  # not sent: failed with the queue
                raise
            if loop.time() < tail.contended_until:
                last = {"last_by_subj": tail.subject}
                lookup = asyncio.create_task(self.client.direct_get(self.stream, last))
            try:
                async with asyncio.timeout(self.client.timeout):
                    got = await message.answer
            except TimeoutError:
                # No answer on a connection that stayed up: it may still be stored later,
                # so nothing can be said, or sent again. Its channel is read again first.
                tail.known = False
                self._on_trouble()
                fail_runs(runs, unavailable("did not acknowledge an append in time"))
                return
            if got is None:
                await self._look_up(tail, message)
                return
            outcome = self._answered(tail, message, got)
            if outcome == "lost":
                tail.contended_until = loop.time() + CONTENDED
                # Beaten with only its own appends: forward them to the channel's writer
                # from now on, learnt from the channel's last message (just below, or
                # when the end is read again).
                tail.follow = not forwarded
                if lookup is not None:
                    await self._beaten_by(tail, message, lookup)
        finally:
            tail.sending = None
            self.client.drop(message.token)
            if lookup is not None:
                lookup.cancel()
                if lookup.done() and not lookup.cancelled():
                    lookup.exception()  # retrieved: an answer no one needs logs nothing
        if outcome == "stored" and loop.time() < tail.contended_until and not forwarded:
            await asyncio.sleep(min(loop.time() - sent, MAX_YIELD))  # won: the others' turn

    def _answered(
        self, tail: Tail, message: Outgoing, msg: Msg
    ) -> Literal["stored", "lost", "failed"]:
        """Settle a message by the server's answer: stored, lost the round, or failed."""
        if status(msg) == "503":  # no stream listens on the subject: it is gone
            tail.known = False
            self._on_trouble()
            fail_runs(message.runs, unavailable("has no stream for this event log"))
            return "failed"
        answer = orjson.loads(msg.data) if msg.data else {}
        error = answer.get("error")
        if not error and "seq" in answer and not answer.get("duplicate"):
            self._stored(tail, message, answer["seq"])
            return "stored"
        if error and error.get("err_code") == WRONG_LAST_SEQUENCE:
            # Another node wrote the channel first: learn its end again, send again.
            tail.known = False
            again = []
            for run in message.runs:
                run.attempts += 1
                if run.attempts < MAX_ATTEMPTS:
                    again.append(run)
                else:
                    run.batch.fail(unavailable("lost every attempt to append to a busy channel"))
            tail.queue.extendleft(reversed(again))
            return "lost"
        what = error.get("description", "refused an append") if error else "refused an append"
        fail_runs(message.runs, unavailable(what))
        return "failed"

    async def _beaten_by(
        self, tail: Tail, message: Outgoing, lookup: asyncio.Task[Msg | None]
    ) -> None:
        """Take the channel's last message as its end, if the look-up saw one newer than
        ours expected (else the end is read again before the next round)."""
        with contextlib.suppress(Unavailable):
            found = await lookup
            meta = meta_of(found, message_seq(found)) if found is not None else None
            if meta is not None and meta.seq > message.expected:
                tail.last, tail.offset, tail.known = meta, meta.last, True
                self._follow(tail, found)

    async def _look_up(self, tail: Tail, message: Outgoing) -> None:
        """Settle a message in flight when the connection broke: stored, or sent again.

        The server handled it before the connection closed or never will. It
        expected the channel's last message at ``expected``, so if stored it is
        the channel's next message after that one, carrying its message id.
        Another break while looking waits for the next reconnection, for
        ``timeout`` seconds at most: then its appends are Unavailable (maybe stored).
        """
        while True:
            reconnected = self._next_reconnection()
            try:
                found = await self.client.direct_get(
                    self.stream, {"seq": message.expected + 1, "next_by_subj": tail.subject}
                )
                break
            except Unavailable as exc:
                try:
                    async with asyncio.timeout(self.client.timeout):
                        await reconnected
                except TimeoutError:
                    tail.known = False
                    fail_runs(message.runs, exc)
                    raise exc from None
        if found is not None and (found.headers or {}).get("Nats-Msg-Id") == message.msg_id:
            self._stored(tail, message, message_seq(found))
        else:
            tail.known = False
            tail.queue.extendleft(reversed(message.runs))

    def _next_reconnection(self) -> asyncio.Future[None]:
        if self._reconnected is None:
            self._reconnected = asyncio.get_running_loop().create_future()
        return self._reconnected

    # -- forwarding (see .forward) ----------------------------------------------------

    def _follow(self, tail: Tail, last: Msg | None) -> None:
        """After a round lost with its own appends: forward them to the writer of the
        channel's last message, ``last``, if another node's."""
        if tail.follow:
            tail.follow = False
            leader = writer_of(last) if last is not None else None
            if leader is not None and leader != self._nonce:
                tail.leader = leader

    def _stored(self, tail: Tail, message: Outgoing, seq: int) -> None:
        """The message is at ``seq``: its events have their places, its calls their answers."""
        meta = tail.last = Meta(seq, message.offset, message.count, message.prev, message.time)
        tail.offset = meta.last
        self.remember(meta)
        metas = {seq: meta}
        index = 0
        for run in message.runs:
            if run.batch.metas is not None:
                run.batch.metas[seq] = meta
            self.place(tail, run, [(seq, index, len(run.entries))], metas)
            index += len(run.entries)

    def remember(self, meta: Meta) -> None:
        """Keep a message's event count, for :meth:`is_end`."""
        if len(self._counts) >= REMEMBERED:
            self._counts.clear()
        self._counts[meta.seq] = meta.count

    def place(self, tail: Tail, run: Run, at: Placement, metas: dict[int, Meta]) -> None:
        """A run is stored ``at`` those places: its events are made, its call answered once
        all its runs are. ValueError if the places do not hold the run, nothing done."""
        if sum(n for _, _, n in at) != len(run.entries):
            raise ValueError("a run placed in fewer or more places than it has events")
        places = [(seq, index + k) for seq, index, n in at for k in range(n)]
        batch = run.batch
        events = batch.events
        channel, epoch = tail.channel, tail.epoch
        for i, (time, type_, data), (seq, index) in zip(
            run.indexes, run.entries, places, strict=True
        ):
            offset = metas[seq].offset + index
            events[i] = Event(channel, offset, epoch, position(seq, index), type_, time, data)
        batch.pending -= len(run.entries)
        if not batch.pending and not batch.done.done():
            batch.done.set_result(events)  # type: ignore[arg-type]  # all set

    def _fail_queue(self, tail: Tail, exc: Unavailable) -> None:
        """Fail a channel's appends not sent (not stored: precisely). Those other nodes
        forwarded go back to them, to be sent there (this node stops, or lost NATS)."""
        self._on_trouble()
        back = TakenBack(f"not sent by the channel's writer: {exc.message}")
        for run in tail.queue:
            run.batch.fail(back if run.deadline and not run.partial else exc)
        tail.queue.clear()
        tail.known = False

    async def refresh(self, tail: Tail) -> None:
        """Read the channel's end from the stream (and its record, if it holds no event)."""
        msg = await self.client.direct_get(self.stream, {"last_by_subj": tail.subject})
        self._follow(tail, msg)
        if msg is not None:
            meta = meta_of(msg, message_seq(msg))
            if meta is None:
                raise unavailable(f"holds a message on {tail.subject} that is no event of this log")
            tail.last, tail.offset = meta, meta.last
            record = self.records.records.get(tail.channel)
            if record is not None:
                tail.trimmed = max(tail.trimmed, record.to)
        else:
            # Read after the subject: a trim records itself before it purges, so
            # a channel seen empty has its record already.
            record = await self.records.fresh(tail.channel)
            if record is None:
                record = await self.records.create(tail.channel)
            tail.last, tail.offset, tail.trimmed = None, record.to, record.to
        tail.known = True

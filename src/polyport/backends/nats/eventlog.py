"""The event log on NATS JetStream: one stream that any number of nodes share.

* A message holds one or more events of one channel (see :mod:`.messages`), and
  an event's ``seq`` is its position: the message's stream sequence and its
  index in the message (``stream_seq << 10 | index``), so JetStream orders
  every node's appends and positions grow with the log, with gaps between
  messages.
* ``offset`` is gapless per channel under concurrent writers: assigned by the
  appending node and made conditional on the channel's last message
  (``Nats-Expected-Last-Subject-Sequence``); each node sends a channel's
  queued appends as one message at a time (see :mod:`.writer`), or, once
  another node beat it on the channel, forwards them to that node, which
  sends them with its own (see :mod:`.forward`).
* The log's epoch is written in the stream's description, so a stream that
  was deleted and made again (or an engine that came back empty) is a new
  epoch; a channel's epoch is derived from the log's and its name (see
  :func:`.subjects.channel_epoch`), and its record in the KV bucket (see
  :mod:`.meta`) lets another node resolve it and holds what was trimmed.
* History is bounded here, not by JetStream's ``max_msgs_per_subject`` or
  ``max_age``: those drop messages silently, and a reader must learn of every
  drop (``trimmed_seq``) and a writer must never number an offset twice. So the
  appending node trims a channel past ``max_events`` (in batches), and
  :meth:`NatsEventLog.trim_older_than` by age; each records the trim in the KV
  bucket first, then purges the channel's subject up to a sequence. A purge
  takes whole messages, so a trim goes up to the end of a message: by count
  it keeps the message holding the oldest event to keep whole (up to a
  message more than ``max_events``), by age it drops the messages whose
  newest event is older than the cut.

Durability is JetStream's: an append returns once the stream acknowledged it.
For a file stream on one server that means the server wrote it to its files
(measured: a nats-server 2.9 killed with SIGKILL under load kept every
acknowledged event), not that it reached the disk: the server fsyncs every 2
minutes (nats-server 2.9 has no setting for it; later servers take
``sync_interval``, ``always`` for every write). To survive power loss or an
OS crash, give the stream replicas (``replicas=3`` on a JetStream cluster: an
acknowledgement then means a majority of servers wrote it). After a lost
connection the messages that were in flight are looked up in the stream, so
such an append is acknowledged if and only if it was stored (see
:mod:`.writer`); one the server left unanswered for ``timeout`` seconds on a
connection that stayed up is Unavailable, and may yet be stored — as is a
forwarded append whose answer did not come back from the node it was
forwarded to (that node stored it or not; see :mod:`.forward`).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from polyport.backends.nats.appends import Tail
from polyport.backends.nats.client import (
    STREAM_NAME_IN_USE,
    STREAM_NOT_FOUND,
    TIMEOUT,
    ApiError,
    JetStreamClient,
    message_seq,
    message_subject,
    unavailable,
)
from polyport.backends.nats.messages import (
    LAST_INDEX,
    Meta,
    end_of,
    entries_of,
    meta_of,
    position,
    stream_seq_of,
)
from polyport.backends.nats.meta import ChannelRecords
from polyport.backends.nats.reader import StreamReader
from polyport.backends.nats.subjects import Subjects, channel_epoch
from polyport.backends.nats.writer import Writer
from polyport.core.errors import InvalidArgument, PayloadTooLarge, Unavailable
from polyport.core.eventlog import ChannelInfo, History, ReadResult, check_gap, resolve_with
from polyport.core.events import Cursor, Event, Pattern, new_epoch

#: What a message of the log carries beside an event's data, type and channel: the
#: subject's prefix, the ids and expectations in its headers, with room to spare.
HEADROOM = 2048

if TYPE_CHECKING:
    from nats.aio.msg import Msg

log = logging.getLogger("polyport.backends.nats")

_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_DESCRIPTION = "polyport event log (packs), epoch "
#: What a stream of one event per message said (before packs): not read by this format.
_OLD_DESCRIPTION = "polyport event log, epoch "
#: How far past the age cut a channel's trim scan reads before it stops (nodes' clocks differ).
AGE_SCAN_SLACK = 300.0
#: Seconds a follower's reads go without asking for the stream's state (see :meth:`read`).
CHECK_EVERY = 0.5


class NatsEventLog:
    """The :class:`~polyport.core.eventlog.EventLog` in a NATS JetStream stream.

    ``name`` names the stream (and ``{name}-meta``, its KV bucket, and the
    subjects ``polyport.{name}.>``): every node that opens a log of the same
    name on the same NATS shares it.
    """

    def __init__(
        self,
        servers: str | Sequence[str] = "nats://127.0.0.1:4222",
        history: History | None = None,
        *,
        name: str = "polyport",
        replicas: int = 1,
        timeout: float = TIMEOUT,
    ) -> None:
        if not _NAME.fullmatch(name):
            raise InvalidArgument(f"invalid event log name {name!r}: use 1-64 of A-Za-z0-9_-")
        self.history = history or History()
        self.stream = name
        self.replicas = replicas
        self.subjects = Subjects(f"polyport.{name}")
        self.client = JetStreamClient(servers, timeout=timeout)
        self.records = ChannelRecords(self.client, f"{name}-meta", replicas)
        self._epoch = ""
        self._created = ""
        self._tails: dict[str, Tail] = {}
        self._epochs: dict[str, str] = {}
        self._suspect = False  # the stream may be gone or new: check before the next write
        self._checked = (-CHECK_EVERY, -1)  # when the stream was last seen, and the connection
        self._trimming: set[str] = set()
        self._slack = max(1, self.history.max_events // 10)
        self.writer = Writer(self.client, name, self.records, self._tail, self._suspect_stream)
        self.reader = StreamReader(self.client, name, self.subjects, self._events)

    @property
    def epoch(self) -> str:
        return self._epoch

    # -- the stream and its epoch -------------------------------------------------

    async def open(self) -> None:
        await self.client.connect(f"polyport event log {self.stream}")
        try:
            await self._attach()
            await self.writer.start()
        except BaseException:
            await self.client.close()
            raise

    async def close(self) -> None:
        await self.reader.close()
        await self.writer.stop()
        await self.records.stop()
        await self.client.close()

    def _suspect_stream(self) -> None:
        self._suspect = True

    async def _attach(self) -> None:
        """Find (or make) the stream, read its epoch, and follow its channel records."""
        await self.records.open()
        for _ in range(16):
            info = await self._stream_info()
            if info is None:
                info = await self._create_stream()
            epoch = self._epoch_of(info)
            written = await self.records.get("log")
            if written is not None and written[0] == epoch.encode():
                await self._adopt(epoch, info)
                return
            if info["state"]["last_seq"]:
                # Every node writes the record before it appends: events without
                # it mean the bucket was lost, and with it what was trimmed.
                raise unavailable(
                    f"stream {self.stream} holds events but its KV bucket {self.records.bucket} "
                    "lost their records: restore the bucket or delete the stream (a new epoch)"
                )
            await self.records.put("log", epoch.encode(), written[1] if written else 0)
        raise unavailable("could not agree on the event log's epoch")

    async def _adopt(self, epoch: str, info: dict[str, Any]) -> None:
        if epoch == self._epoch and info["created"] == self._created:
            return
        if self._epoch:
            log.warning(
                "event log %s was reset (epoch %s, was %s): old cursors will fail",
                self.stream,
                epoch,
                self._epoch,
            )
            self.writer.abandon(unavailable("event log was reset; publish again"))
        self._epoch, self._created = epoch, info["created"]
        self._tails.clear()
        self._epochs.clear()
        await self.records.watch(epoch)

    def _epoch_of(self, info: dict[str, Any]) -> str:
        description = info["config"].get("description") or ""
        if description.startswith(_OLD_DESCRIPTION):
            raise unavailable(
                f"stream {self.stream} holds an event log of an older polyport (one event per "
                f"message), which this one does not read: delete it and its KV bucket "
                f"{self.records.bucket} (a new epoch)"
            )
        epoch = description.removeprefix(_DESCRIPTION)
        if not description.startswith(_DESCRIPTION) or not re.fullmatch(r"[a-z2-7]{10}", epoch):
            raise unavailable(f"stream {self.stream} exists and is not a polyport event log")
        return epoch

    async def _stream_info(self) -> dict[str, Any] | None:
        try:
            return await self.client.api(f"STREAM.INFO.{self.stream}")
        except ApiError as exc:
            if exc.err_code == STREAM_NOT_FOUND:
                return None
            raise unavailable(exc.description) from exc

    async def _create_stream(self) -> dict[str, Any]:
        config = {
            "name": self.stream,
            "description": _DESCRIPTION + new_epoch(),
            "subjects": [self.subjects.all],
            "retention": "limits",
            "storage": "file",
            "num_replicas": self.replicas,
            "discard": "old",
            "max_msgs": -1,
            "max_bytes": -1,
            "max_age": 0,
            "max_msgs_per_subject": -1,  # bounded by the log itself (see the module)
            "max_msg_size": -1,
            "allow_direct": True,
            # Message ids only identify a message after a reconnection (see .writer),
            # by looking it up: the server need not remember them.
            "duplicate_window": 100_000_000,
        }
        try:
            return await self.client.api(f"STREAM.CREATE.{self.stream}", config)
        except ApiError as exc:
            if exc.err_code != STREAM_NAME_IN_USE:
                raise unavailable(exc.description) from exc
        info = await self._stream_info()  # another node made it first
        if info is None:
            raise unavailable(f"stream {self.stream} could not be made")
        return info

    async def _info(self) -> dict[str, Any]:
        """The stream's state now; a stream made again since is adopted (a new epoch)."""
        info = await self._stream_info()
        if info is None or info["created"] != self._created or self._epoch_of(info) != self._epoch:
            await self._attach()
            info = await self._stream_info()
            if info is None:
                raise unavailable(f"stream {self.stream} is gone")
        self._suspect = False
        self._checked = (asyncio.get_running_loop().time(), self.client.generation)
        return info

    def _checked_lately(self) -> bool:
        """Whether the stream was seen as this log's within :data:`CHECK_EVERY` seconds, on
        this connection, with no trouble since."""
        when, generation = self._checked
        return (
            not self._suspect
            and generation == self.client.generation
            and asyncio.get_running_loop().time() - when < CHECK_EVERY
        )

    # -- channels -----------------------------------------------------------------

    def _channel_epoch(self, channel: str) -> str:
        epoch = self._epochs.get(channel)
        if epoch is None:
            if len(self._epochs) >= 65536:
                self._epochs.clear()
            epoch = self._epochs[channel] = channel_epoch(self._epoch, channel)
        return epoch

    def _tail(self, channel: str) -> Tail:
        tail = self._tails.get(channel)
        if tail is None:
            tail = Tail(channel, self._channel_epoch(channel), self.subjects.subject(channel))
            self._tails[channel] = tail
        return tail

    def _events(self, msg: Msg) -> list[Event]:
        """The events a message holds (none: it is not a message of this log)."""
        seq = message_seq(msg)
        meta = meta_of(msg, seq)
        if meta is None:
            return []
        channel = self.subjects.channel(message_subject(msg))
        epoch = self._channel_epoch(channel)
        offset, first = meta.offset, position(seq, 0)
        return [
            Event(channel, offset + i, epoch, first + i, type_, time, data)
            for i, (time, type_, data) in enumerate(entries_of(msg, meta))
        ]

    def _last(self, msg: Msg | None) -> Meta | None:
        """The header of a channel's last message, got by subject (None: it has none)."""
        return meta_of(msg, message_seq(msg)) if msg is not None else None

    # -- appending ----------------------------------------------------------------

    async def append(self, channel: str, type: str, data: bytes, time: float) -> Event:
        return (await self.append_many(((channel, type, data),), time))[0]

    async def append_many(
        self, items: Sequence[tuple[str, str, bytes]], time: float
    ) -> list[Event]:
        """Append ``(channel, type, data)`` events in order, acknowledged together.

        Each channel's events go in a message of the channel's (with whatever
        else this node queued for it): across channels the seqs may not follow
        the items' order (see :mod:`.writer`).

        Raises :class:`PayloadTooLarge` for an event the server would not take in
        one message (its ``max_payload``, 1 MiB by default, counts the headers
        too): sent anyway, it would make the server close the whole connection,
        failing every other append and read in flight on it.
        """
        bound = self.client.max_message - HEADROOM
        for channel, type_, data in items:
            if len(data) + len(type_) + len(channel) > bound:
                raise PayloadTooLarge(
                    f"an event of {len(data)} bytes is more than this NATS server takes "
                    f"in one message ({bound} bytes of data; its max_payload)"
                )
        if self._suspect:
            await self._info()
        events = await self.writer.append(items, time)
        bound = self.history.max_events + self._slack
        for channel in {channel for channel, _, _ in items}:
            tail = self._tails.get(channel)
            if tail is not None and tail.offset - max(tail.trimmed, tail.held_back) > bound:
                await self._trim_count(tail)
        return events

    #: The hub announces what it appends, on the bus's core subject.
    announces_appends = False

    def settled(self) -> bool:
        """Always: an append returns once the engine has acknowledged it."""
        return True

    async def durable(self) -> None:
        """Nothing to wait for: an append returns once JetStream acknowledged it."""

    # -- reading ------------------------------------------------------------------

    async def head(self) -> int:
        """The end of the stream's last message: at or after every event, before any later one."""
        return end_of(int((await self._info())["state"]["last_seq"]))

    def is_next(self, after: int, seq: int) -> bool:
        """Whether no event can lie between positions ``after`` and ``seq``: consecutive in one
        message, or ``seq`` a message's first and ``after`` the end of the message before
        (a head, the empty log's 0, or the last event of one of this node's newest messages)."""
        if seq == after + 1:
            return True
        stream_seq = stream_seq_of(after)
        if seq != position(stream_seq + 1, 0):
            return False
        return after == end_of(stream_seq) or self.writer.is_end(stream_seq, after & LAST_INDEX)

    async def read(
        self, patterns: Sequence[Pattern], after_seq: int, limit: int, *, check: bool = True
    ) -> ReadResult:
        """Events after ``after_seq``: through the stream's state (its head, and whether it
        is still this log's stream), then direct gets or consumers (see :mod:`.reader`).

        An unchecked read (a node's tail following the log, a queue router) skips the
        stream's state when it was seen lately (:data:`CHECK_EVERY`) and the reader is
        only a few messages behind: the gets find the end themselves
        (:meth:`~.reader.StreamReader.follow`), in one round trip instead of two. A
        stream deleted and made again (a new epoch) is then noticed at the next look at
        the stream's state, a reconnection or a failed append, within
        :data:`CHECK_EVERY` seconds of reading.
        """
        if not check and self._checked_lately():
            try:
                followed = await self.reader.follow(patterns, after_seq, limit)
            except Unavailable:
                followed = None  # the stream gone? Its state says (below)
                self._suspect = True
            if followed is not None:
                return ReadResult(*followed)
        head = await self.head()
        events = (
            await self.reader.scan(patterns, after_seq, head, limit) if after_seq < head else []
        )
        if check:
            # After the events: a purge that took some of them was recorded before it.
            await self.records.barrier()
            check_gap(self._infos(patterns), after_seq, self._epoch, head)
        last = events[-1].seq if len(events) == limit else head
        return ReadResult(events, last)

    def _infos(self, patterns: Sequence[Pattern]) -> list[ChannelInfo]:
        records = self.records.records
        if len(patterns) == 1 and patterns[0].is_exact:
            record = records.get(patterns[0].text)
            matching = [(patterns[0].text, record)] if record else []
        else:
            matching = [
                (name, record)
                for name, record in records.items()
                if any(p.matches(name) for p in patterns)
            ]
        return [
            ChannelInfo(name, self._channel_epoch(name), r.to, r.to, r.ts) for name, r in matching
        ]

    async def resolve(self, cursor: Cursor) -> int:
        if cursor.is_position:
            return resolve_with(
                cursor,
                log_epoch=self._epoch,
                head=await self.head(),
                channel=None,
                seq_of_offset=None,
                first_seq=None,
            )
        channel = self.records.by_epoch.get(cursor.epoch)
        if channel is None:
            await self.records.barrier()  # made on another node a moment ago?
            channel = self.records.by_epoch.get(cursor.epoch)
        info = None
        seq_of_offset = first_seq = None
        if channel is not None:
            record = self.records.records[channel]
            subject = self.subjects.subject(channel)
            last = self._last(await self.client.direct_get(self.stream, {"last_by_subj": subject}))
            last_offset = record.to
            if last is not None:
                last_offset = last.last
                n = cursor.number
                if record.to < n <= last_offset:
                    seq_of_offset = await self.reader.seq_of_offset(subject, n, record, last)
                elif n == 0 and record.to == 0:
                    first = await self.client.direct_get(
                        self.stream, {"seq": 1, "next_by_subj": subject}
                    )
                    first_seq = position(message_seq(first), 0) if first is not None else None
            info = ChannelInfo(channel, cursor.epoch, last_offset, record.to, record.ts)
        return resolve_with(
            cursor,
            log_epoch=self._epoch,
            head=await self.head(),
            channel=info,
            seq_of_offset=seq_of_offset,
            first_seq=first_seq,
        )

    # -- bounded history ----------------------------------------------------------

    async def _trim_count(self, tail: Tail) -> None:
        """Keep ``max_events`` of a channel; it ran ``slack`` over (trims go in batches).

        A purge takes whole messages: the message holding the oldest event to
        keep stays whole, and until the channel has grown past it by
        ``max_events`` no trim is tried again (``held_back``).
        """
        if tail.channel in self._trimming:
            return
        self._trimming.add(tail.channel)
        try:
            to = tail.offset - self.history.max_events
            record = await self.records.fresh(tail.channel)
            if record is None or record.to >= to or tail.last is None:
                tail.trimmed = max(tail.trimmed, record.to if record else 0)
                return
            kept = await self.reader.locate(tail.subject, to + 1, record, tail.last)
            if kept is None:
                return
            tail.held_back = kept.last if kept.offset <= to else 0
            if kept.offset - 1 > record.to:
                await self._trim(tail.channel, kept.offset - 1, kept.prev)
        except Unavailable:
            # The events are stored: failing their append now would invite a
            # retry that stores them twice. The next append trims again.
            log.warning("trimming channel %s failed", tail.channel, exc_info=True)
        finally:
            self._trimming.discard(tail.channel)

    async def _trim(self, channel: str, to: int, ts: int) -> int:
        """Drop the channel's events up to offset ``to`` (the last of a message, at position
        ``ts``): record, then purge. Returns how many events this trim dropped."""
        record, dropped = await self.records.raise_trim(channel, to, ts)
        tail = self._tails.get(channel)
        if tail is not None:
            tail.trimmed = max(tail.trimmed, record.to)
        try:
            await self.client.api(
                f"STREAM.PURGE.{self.stream}",
                {"filter": self.subjects.subject(channel), "seq": stream_seq_of(record.ts) + 1},
            )
        except ApiError as exc:
            raise unavailable(exc.description) from exc
        return dropped

    async def trim_older_than(self, time: float) -> int:
        """Drop the events published before ``time``: each channel's oldest messages first.

        A channel whose oldest message is not older than ``time`` (its newest
        event, as its header says) costs one direct get (all channels' asked
        together); one that is gets its expired messages read (headers only)
        and dropped up to the newest of them, as SQLite drops up to the highest
        offset older than the cut.
        """
        last_seq = stream_seq_of(await self.head())
        await self.records.barrier()
        channels = list(self.records.records.items())
        dropped = 0
        for start in range(0, len(channels), 1000):
            chunk = channels[start : start + 1000]
            firsts = await self.client.direct_get_many(
                self.stream,
                [
                    {"seq": stream_seq_of(r.ts) + 1, "next_by_subj": self.subjects.subject(c)}
                    for c, r in chunk
                ],
            )
            for (channel, _), first in zip(chunk, firsts, strict=True):
                meta = meta_of(first, message_seq(first)) if first is not None else None
                if meta is None or meta.seq > last_seq:
                    continue
                if meta.time < time:
                    newest = await self._expired(channel, meta, time, last_seq)
                    dropped += await self._trim(channel, newest.last, newest.end)
        return dropped

    async def _expired(self, channel: str, first: Meta, time: float, last_seq: int) -> Meta:
        """The newest message of a channel older than ``time``, from an expired one."""
        newest = first
        stop = time + AGE_SCAN_SLACK  # past this, no older event follows (clocks differ less)

        def seen(msg: Msg) -> bool:
            nonlocal newest
            seq = message_seq(msg)
            meta = meta_of(msg, seq)
            if seq > last_seq or meta is None:
                return False
            if meta.time < time:
                newest = meta
            return meta.time < stop

        config = {
            "filter_subject": self.subjects.subject(channel),
            "deliver_policy": "by_start_sequence",
            "opt_start_seq": first.seq + 1,
            "headers_only": True,
        }
        await self.client.fetch(self.stream, config, last_seq, seen, collect=False)
        return newest

    async def channels(self) -> list[ChannelInfo]:
        await self.records.barrier()
        records = list(self.records.records.items())
        lasts = await self.client.direct_get_many(
            self.stream, [{"last_by_subj": self.subjects.subject(name)} for name, _ in records]
        )
        infos = []
        for (name, record), last in zip(records, lasts, strict=True):
            meta = self._last(last)
            offset = meta.last if meta is not None else record.to
            infos.append(ChannelInfo(name, self._channel_epoch(name), offset, record.to, record.ts))
        return infos

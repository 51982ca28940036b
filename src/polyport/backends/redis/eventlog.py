"""The event log on Redis: one history that every node pointed at the same Redis shares.

**Structure.** Each channel's events are a stream of their own,
``{prefix}:events:{channel}``, whose entry IDs are ``{seq}-{offset}`` (a
stream ID is two integers, and within a channel seq and offset grow
together), holding ``type``, ``time`` and ``data``. Beside them one global
stream, ``{prefix}:log``, indexes every held event by seq (ID ``{seq}-0``,
fields ``channel`` and ``time``). A channel's hash keeps its epoch, its last
offset and what it lost (``trimmed_offset``, ``trimmed_seq``); the log's meta
hash keeps the log epoch and the last seq. So:

* reading exact channels is one ``XRANGE`` per channel from ``after_seq``
  (merged by seq when there are several): no other channel is looked at;
* reading wildcards scans the global stream from ``after_seq`` in seq order,
  matching channel names inside Redis until ``limit`` events matched, then
  takes each matching channel's events in that window with one ``XRANGE``:
  the cost follows the events after the position, which for a live reader
  (a node's tail after an announcement) is just the new ones, however many
  channels exist. A scan looks at ``SCAN_BATCH`` entries per call at most, so
  no call holds Redis for long;
* a page comes back as one string (see :mod:`.scripts`): redis-py parses
  replies in Python unless hiredis is installed, and five replies per event
  cost more than the read itself;
* a resume from an event id finds the channel by its epoch and the event by
  bisecting seqs (offsets are gapless, seqs grow with them);
* "did a matching channel lose events after this position" is a range of a
  sorted set of trimmed channels scored by ``trimmed_seq``, so only channels
  that lost events recently are looked at;
* trimming by count happens as a channel passes its bound (plus a tenth, in
  one batch), trimming by age walks the global stream from its oldest entry.

**Atomicity: Lua, not MULTI/EXEC.** Every operation is one Lua script (see
:mod:`.scripts`). A script runs alone in Redis: it reads the last seq and the
channels' last offsets, assigns the next ones, adds the events to both
streams, trims, and returns — so writers on any number of nodes get one order
and gapless offsets per channel, in one round trip, with no retries. MULTI/EXEC
cannot do this: the commands of a transaction are queued with their arguments
fixed before any runs, so the stream IDs cannot be computed from the seq the
same transaction increments; it would take WATCH on the counters and a retry
whenever another node wrote in between, which under load is most of the time.
All keys carry the hash tag ``{prefix}``, so in a Redis Cluster the whole log
is one slot (one global sequence is one writer's work in any case).

**Epochs.** The log epoch and every channel epoch live in Redis, so an id
made on one node resolves on another. A Redis that lost its data (restarted
without persistence, or a new instance) has no meta hash: the first script to
notice starts a new log with a new epoch, and every node adopts it at its next
call — old positions and ids then answer RecoveryFailed, never another event.
A reader whose position belongs to the old epoch gets RecoveryFailed too (see
:meth:`RedisEventLog.read`).

**Durable** means what Redis acknowledged: an append returns once its script's
reply arrived, and readers on every node see an event from the moment its
script ran, never before, so :meth:`RedisEventLog.durable` has nothing left to
wait for. How much survives depends on Redis's persistence:

* ``--appendonly no --save ""`` (this machine's Redis): in memory only. A
  Redis restart loses everything, and the log starts a new epoch.
* ``appendonly yes`` with ``appendfsync always``: Redis writes and fsyncs the
  AOF before it replies, so an acknowledged event survives a crash of Redis
  and of its host. This is what "acknowledged means durable" asks for.
* ``appendfsync everysec`` (Redis's default with AOF): an acknowledged event
  is in the AOF file before the reply (it survives Redis being killed) but is
  fsynced within a second, so a host crash can lose the last second.
* RDB snapshots only: a restart returns to the last snapshot.

When Redis comes back with less than it acknowledged (the last two cases
after a crash), the log epoch is kept but seqs and offsets after the restored
point are assigned again, to new events: ids shown before the crash may then
name other events. Use AOF with ``appendfsync always`` where that matters.
Replicas do not add durability here (an append does not wait for them), and
Redis must not evict the log's keys: run it with ``maxmemory-policy
noeviction``, so that a full Redis refuses appends (Unavailable) instead of
dropping history silently.

An append that fails on the wire (a timeout, a dropped connection) raises
:class:`~polyport.core.errors.Unavailable` although Redis may have run it:
the events may exist, and a caller that publishes again may publish twice.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from polyport.backends.redis import eventlog_scripts as scripts
from polyport.backends.redis.client import Script, connect, engine_errors, key_base
from polyport.core.errors import RecoveryFailed, Unavailable
from polyport.core.eventlog import ChannelInfo, History, ReadResult, check_gap, resolve_with
from polyport.core.events import Cursor, Event, Pattern, position

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = logging.getLogger("polyport.events")

#: Events per script call; a larger batch is several calls sent in one pipeline.
APPEND_CHUNK = 1000
#: Global-stream entries a wildcard read looks at per script call.
SCAN_BATCH = 2000
#: More exact channels than this in one read are read by scanning instead.
EXACT_MAX = 64
#: Global-stream entries a trim by age looks at per script call.
TRIM_BATCH = 2000

_WHAT = "the event log (Redis)"


_APPEND = Script(scripts.APPEND)
_READ_CHANNELS = Script(scripts.READ_CHANNELS)
_READ_PATTERNS = Script(scripts.READ_PATTERNS)
_RESOLVE = Script(scripts.RESOLVE)
_TRIM_OLDER = Script(scripts.TRIM_OLDER)
_CHANNELS = Script(scripts.CHANNELS)


class _Group:
    """Single appends that arrived while a write was in flight, written by one call."""

    __slots__ = ("done", "items")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.items: list[tuple[str, str, bytes, float]] = []
        self.done: asyncio.Future[list[Event]] = loop.create_future()


class RedisEventLog:
    """The :class:`~polyport.core.eventlog.EventLog` kept in Redis, shared by nodes.

    ``redis`` is a URL (the log makes its own client and closes it) or a
    redis-py asyncio client (left open). Logs with the same ``prefix`` on the
    same Redis are one log.
    """

    def __init__(
        self,
        redis: str | Redis = "redis://127.0.0.1:6379/0",
        history: History | None = None,
        *,
        prefix: str = "polyport",
    ) -> None:
        self._base = key_base(prefix)
        self._owned = isinstance(redis, str)
        self._client: Redis = connect(redis) if isinstance(redis, str) else redis
        self.history = history or History()
        self._meta = self._base + ":meta"
        self._epoch = ""
        # Trim in batches: let a channel run this far over its bound first.
        self._slack = max(1, self.history.max_events // 10)
        #: Whether a write of single appends is in flight, and the appends waiting for it.
        self._writing = False
        self._pending: _Group | None = None
        self._sending: set[asyncio.Task[None]] = set()
        self._text: dict[bytes, str] = {}

    @property
    def epoch(self) -> str:
        return self._epoch

    async def open(self) -> None:
        """Join the log in Redis, starting it if there is none. Raises Unavailable."""
        await self._run(_RESOLVE, ("", 0))

    async def close(self) -> None:
        while self._sending:  # each write may start the next
            await asyncio.gather(*self._sending, return_exceptions=True)
        if self._owned:
            await self._client.aclose()

    # -- running scripts ------------------------------------------------------------

    def _args(self, args: Sequence[str | bytes | int]) -> tuple[str | bytes | int, ...]:
        return (self._meta, self._epoch, os.urandom(8).hex(), self._base, *args)

    async def _run(self, script: Script, args: Sequence[str | bytes | int]) -> Any:
        """Run ``script``; if the log has another epoch than this node knew, adopt it and rerun."""
        for _ in range(3):
            with engine_errors(_WHAT):
                reply = await script(self._client, 1, *self._args(args))
            if not (isinstance(reply, list) and reply[0] == b"epoch"):
                return reply
            self._adopt(reply[1].decode())
        raise Unavailable(f"{_WHAT} keeps changing its epoch; try again")

    async def _run_many(self, script: Script, calls: list[list[str | bytes | int]]) -> list[Any]:
        """:meth:`_run` for several calls, sent in one pipeline (one round trip)."""
        from redis.exceptions import NoScriptError

        for _ in range(3):
            with engine_errors(_WHAT):
                pipe = self._client.pipeline(transaction=False)
                for args in calls:
                    pipe.evalsha(script.sha, 1, *self._args(args))
                replies = await pipe.execute(raise_on_error=False)
            if any(isinstance(r, NoScriptError) for r in replies):
                # Every call named the same script: none of them ran.
                with engine_errors(_WHAT):
                    await self._client.script_load(script.source)
                continue
            for reply in replies:
                if isinstance(reply, Exception):
                    with engine_errors(_WHAT):
                        raise reply
            changed = [r[1] for r in replies if isinstance(r, list) and r[0] == b"epoch"]
            if not changed:
                return replies
            self._adopt(changed[-1].decode())
            if len(changed) < len(replies):
                # Redis lost its data between two calls: what went before is lost with it.
                raise Unavailable(f"{_WHAT} was reset during the append; try again")
            # A script that finds another epoch writes nothing: none of them wrote.
        raise Unavailable(f"{_WHAT} keeps changing its epoch; try again")

    def _adopt(self, epoch: str) -> None:
        if self._epoch and epoch != self._epoch:
            log.warning(
                "the event log in Redis has a new epoch %s (was %s): Redis lost its data; "
                "cursors from before answer recovery failed",
                epoch,
                self._epoch,
            )
        self._epoch = epoch

    # -- appending ----------------------------------------------------------------

    async def append(self, channel: str, type: str, data: bytes, time: float) -> Event:
        """Append one event. While a write is in flight, appends gather and go in the next.

        Group commit, as SQLite's log does: alone, an append is one script
        call; under load, one call carries every append that arrived during
        the previous one.
        """
        if not self._writing:
            self._writing = True
            try:
                return (await self._write([(channel, type, data, time)]))[0]
            finally:
                self._send_next()
        group = self._pending
        if group is None:
            group = self._pending = _Group(asyncio.get_running_loop())
        index = len(group.items)
        group.items.append((channel, type, data, time))
        return (await asyncio.shield(group.done))[index]

    def _send_next(self) -> None:
        """The write in flight is done: send the appends that gathered, or stop writing."""
        group, self._pending = self._pending, None
        if group is None:
            self._writing = False
            return
        task = asyncio.get_running_loop().create_task(self._send(group))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, group: _Group) -> None:
        try:
            events = await self._write(group.items)
        except BaseException as exc:
            error = exc if isinstance(exc, Exception) else Unavailable(f"{_WHAT}: append cancelled")
            group.done.set_exception(error)
            group.done.exception()  # retrieved: a group nobody waits for logs nothing
            if not isinstance(exc, Exception):
                raise
        else:
            group.done.set_result(events)
        finally:
            self._send_next()

    async def append_many(
        self, items: Sequence[tuple[str, str, bytes]], time: float
    ) -> list[Event]:
        """Append the batch in one round trip (one script call per APPEND_CHUNK events)."""
        if not items:
            return []
        return await self._write([(channel, type, data, time) for channel, type, data in items])

    async def _write(self, items: Sequence[tuple[str, str, bytes, float]]) -> list[Event]:
        chunks = [items[i : i + APPEND_CHUNK] for i in range(0, len(items), APPEND_CHUNK)]
        calls = [self._append_args(chunk) for chunk in chunks]
        if len(calls) == 1:
            replies = [await self._run(_APPEND, calls[0])]
        else:
            replies = await self._run_many(_APPEND, calls)
        events: list[Event] = []
        for chunk, reply in zip(chunks, replies, strict=True):
            values = reply.split()
            first = int(values[0])
            epochs: dict[str, str] = {}
            for channel, _type, _data, _time in chunk:
                if channel not in epochs:
                    epochs[channel] = values[1 + len(epochs)].decode()
            offsets = map(int, values[1 + len(epochs) :])
            events.extend(
                Event(channel, offset, epochs[channel], first + i, type, time, data)
                for i, ((channel, type, data, time), offset) in enumerate(
                    zip(chunk, offsets, strict=True)
                )
            )
        return events

    def _append_args(self, items: Sequence[tuple[str, str, bytes, float]]) -> list[Any]:
        index: dict[str, int] = {}
        rows: list[Any] = []
        stamp, last = "", None
        for channel, type, data, time in items:
            number = index.get(channel)
            if number is None:
                number = index[channel] = len(index) + 1
            if time != last:
                stamp, last = repr(time), time
            rows += (number, type, stamp, data)
        return [self.history.max_events, self._slack, len(index), *index, *rows]

    #: The hub announces what it appends, on the bus's pub/sub channel.
    announces_appends = False

    def settled(self) -> bool:
        """Always: an append returns once the engine has acknowledged it."""
        return True

    async def durable(self) -> None:
        """Nothing to wait for: an append returns once Redis acknowledged it.

        What acknowledged means is Redis's persistence setting (see the module
        docstring); with ``appendfsync always`` it is on disk.
        """

    # -- reading ------------------------------------------------------------------

    async def head(self) -> int:
        reply = await self._run(_RESOLVE, ("", 0))
        return int(reply[1])

    def is_next(self, after: int, seq: int) -> bool:
        """Seqs here are consecutive: the next after ``after`` is ``after + 1``."""
        return seq == after + 1

    async def resolve(self, cursor: Cursor) -> int:
        args = ("", 0) if cursor.is_position else (cursor.epoch, cursor.number)
        reply = await self._run(_RESOLVE, args)
        channel = None
        first_seq = seq_of_offset = None
        if len(reply) > 2:
            name, epoch, last, toff, tseq, first_seq, seq_of_offset = reply[2:]
            channel = ChannelInfo(name.decode(), epoch.decode(), int(last), int(toff), int(tseq))
        return resolve_with(
            cursor,
            log_epoch=self._epoch,
            head=int(reply[1]),
            channel=channel,
            seq_of_offset=seq_of_offset,
            first_seq=first_seq,
        )

    async def read(
        self, patterns: Sequence[Pattern], after_seq: int, limit: int, *, check: bool = True
    ) -> ReadResult:
        """Events of matching channels after ``after_seq``, as of one moment in Redis.

        A position ahead of the log, or made before the log changed its epoch
        (Redis lost its data), is :class:`RecoveryFailed` whatever ``check``
        says: it belongs to a history that is gone.
        """
        names = list(dict.fromkeys(p.text for p in patterns))
        if all(p.is_exact for p in patterns) and len(names) <= EXACT_MAX:
            reply = await self._read(_READ_CHANNELS, after_seq, limit, check, 0, names)
            head = int(reply[1])
            events = self._events(reply[3], reply[4])
            if len(names) > 1:
                events.sort(key=lambda e: e.seq)
                del events[limit:]
            return ReadResult(events, events[-1].seq if len(events) == limit else head)
        events = []
        while True:
            reply = await self._read(
                _READ_PATTERNS, after_seq, limit - len(events), check, SCAN_BATCH, names
            )
            head, reached = int(reply[1]), int(reply[2])
            page = self._events(reply[3], reply[4])
            page.sort(key=lambda e: e.seq)  # given channel by channel
            events += page
            if len(events) == limit:
                return ReadResult(events, events[-1].seq)
            if reached >= head:
                return ReadResult(events, head)
            after_seq = reached  # looked at up to there: go on from it

    async def _read(
        self,
        script: Script,
        after_seq: int,
        limit: int,
        check: bool,
        batch: int,
        names: list[str],
    ) -> list[Any]:
        known = self._epoch
        reply: list[Any] = await self._run(script, (after_seq, limit, int(check), batch, *names))
        head = int(reply[1])
        if self._epoch != known and after_seq:
            raise RecoveryFailed(
                "the log was reset since this position was read (Redis lost its data)",
                latest=position(self._epoch, head),
            )
        if reply[0] == b"ahead":
            raise RecoveryFailed(
                f"position {after_seq} is ahead of the log (head {position(self._epoch, head)})",
                latest=position(self._epoch, head),
            )
        if reply[0] == b"gap":
            name, toff, tseq = reply[2].decode(), int(reply[3]), int(reply[4])
            check_gap([ChannelInfo(name, "", 0, toff, tseq)], after_seq, self._epoch, head)
        return reply

    def _events(self, page: bytes, channels: list[bytes]) -> list[Event]:
        """Events from a read's page (see :mod:`.scripts`) and its channels with their epochs."""
        text = self._text
        if len(text) > 10_000:  # names and types seen: bounded, not a leak
            text.clear()
        named = [
            (
                text.get(channels[i]) or text.setdefault(channels[i], channels[i].decode()),
                channels[i + 1].decode(),
            )
            for i in range(0, len(channels), 2)
        ]
        out = []
        pos, end = 0, len(page)
        while pos < end:
            line = page.index(b"\n", pos)
            ident, number, type_length, data_length, time = page[pos:line].split(b" ")
            start = line + 1
            middle = start + int(type_length)
            pos = middle + int(data_length)
            seq, _, offset = ident.partition(b"-")
            channel, epoch = named[int(number) - 1]
            type = page[start:middle]
            kind = text.get(type) or text.setdefault(type, type.decode())
            out.append(
                Event(channel, int(offset), epoch, int(seq), kind, float(time), page[middle:pos])
            )
        return out

    # -- keeping history bounded ------------------------------------------------------

    async def trim_older_than(self, time: float) -> int:
        dropped = 0
        while True:
            reply = await self._run(_TRIM_OLDER, (repr(time), TRIM_BATCH))
            dropped += int(reply[1])
            if not reply[2]:
                return dropped

    async def channels(self) -> list[ChannelInfo]:
        flat = (await self._run(_CHANNELS, ()))[1]
        return [
            ChannelInfo(
                flat[i].decode(),
                flat[i + 1].decode(),
                int(flat[i + 2]),
                int(flat[i + 3]),
                int(flat[i + 4]),
            )
            for i in range(0, len(flat), 5)
        ]

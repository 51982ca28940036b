"""The event hub: publish to the log, fan out to live subscribers, resume from history.

Publishing appends to the :class:`~polyport.core.eventlog.EventLog` and
pushes the event into each matching subscriber's bounded buffer once the log
has made it durable, so no one is shown an event a crash could take back. The
publisher does not wait for that commit itself: the answer to its caller does
(:func:`settle_published`, which the dispatcher and the session call before
they answer), so a handler that publishes a hundred events in a row shares
one commit instead of waiting for a hundred. The push is an O(1)
append per subscriber, never an await, so a slow subscriber cannot slow the
publisher or anyone else. A subscriber whose buffer fills up does not lose
events and does not grow: it drops its buffer and catches up from the log, and
only if the log no longer holds what it missed does it get
:class:`~polyport.core.errors.RecoveryFailed`.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from polyport.core.bus import Bus
from polyport.core.errors import RecoveryFailed
from polyport.core.eventlog import EventLog
from polyport.core.events import (
    Cursor,
    Event,
    Pattern,
    PatternIndex,
    check_channel,
    now,
    position,
)
from polyport.core.tail import Tail

if TYPE_CHECKING:
    from polyport.core.contract import EventMessage, EventType

log = logging.getLogger("polyport.events")

#: Events read from history per query while catching up.
CATCH_UP_BATCH = 500
#: The hub whose events this task (a call, a session's frame) published and has not
#: yet seen durable: its answer waits for them (see :func:`settle_published`).
_UNSETTLED: contextvars.ContextVar[EventHub | None] = contextvars.ContextVar(
    "polyport_unsettled", default=None
)


#: The hub of the node whose call, start-up or shutdown this task is running, when
#: known. Where ``Service.publish`` (``EventType.publish``, ``Context.publish``)
#: goes when several nodes serve one service in this process: the dispatcher sets
#: it around every handler, a node around its start and stop (so the tasks those
#: start carry it too), :meth:`EventHub.publishing` around any block.
SERVING_HUB: contextvars.ContextVar[EventHub | None] = contextvars.ContextVar(
    "polyport_serving_hub", default=None
)


def unsettled() -> bool:
    """Whether this task published events that are not yet durable (a cheap check)."""
    return _UNSETTLED.get() is not None


async def settle_published() -> None:
    """Wait until the events this task published are durable; call it before answering.

    Returns at once when the task published nothing not yet durable. Raises
    :class:`~polyport.core.errors.Unavailable` when they could not be stored:
    the caller must then not be told they were.
    """
    hub = _UNSETTLED.get()
    if hub is not None:
        _UNSETTLED.set(None)
        await hub.log.durable()


#: Channel names remembered as valid, so publishing to one again skips the check.
_CHECKED_CHANNELS = 4096


def _take(source: deque[Event], out: list[Event], limit: int) -> None:
    """Move events from the front of ``source`` to ``out`` until it holds ``limit``."""
    room = limit - len(out)
    if len(source) <= room:
        out.extend(source)
        source.clear()
    else:
        popleft = source.popleft
        out.extend([popleft() for _ in range(room)])


@dataclass(frozen=True, slots=True)
class Poll:
    """One answer to a poll: the events and the cursor to continue from."""

    events: list[Event]
    next: str


class Subscription:
    """Events of some channels, in log order, from a cursor or from now on.

    Iterate it with ``async for``; close it (or leave the ``async with``) to stop.
    """

    def __init__(
        self,
        hub: EventHub,
        patterns: Sequence[Pattern],
        *,
        types: frozenset[str] | None,
        buffer: int,
        buffer_bytes: int = 8 * 1024 * 1024,
    ) -> None:
        self._hub = hub
        self.patterns = tuple(patterns)
        self._types = types
        self._buffer = buffer
        self._buffer_bytes = buffer_bytes
        # Bytes of event data pushed since the buffer was last empty: at least what
        # it holds (counted on push only, so reading costs nothing per event).
        self._bytes = 0
        self._queue: deque[Event] = deque()
        self._wakeup: asyncio.Future[None] | None = None
        self._last_seq = 0
        self._catching_up = True
        self._drops = 0
        self._history: deque[Event] = deque()
        self._last_pushed = 0
        self._check = True
        #: Raised by the next read: the log lost what this subscription stood on.
        self._failure: RecoveryFailed | None = None
        self.closed = False

    @property
    def last_seq(self) -> int:
        return self._last_seq

    @property
    def cursor(self) -> str:
        """Where this subscription stands: resuming from it misses and repeats nothing."""
        return position(self._hub.log.epoch, self._last_seq)

    def _push(self, event: Event) -> None:
        """Called by the hub for every matching event: O(1), never blocks."""
        if event.seq == self._last_pushed:
            return  # two of our patterns matched the same event
        self._last_pushed = event.seq
        if self._types is not None and event.type not in self._types:
            return
        self._bytes += len(event.data)
        if len(self._queue) >= self._buffer or self._bytes > self._buffer_bytes:
            # Too slow: forget the buffer and read what was missed from the log.
            self._drop()
        else:
            self._queue.append(event)
        waiter = self._wakeup
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _push_run(self, events: list[Event]) -> None:
        """Called by the hub for a run of matching events of one channel: one wake-up."""
        if events[-1].seq <= self._last_pushed:
            return  # two of our patterns matched the same run
        self._last_pushed = events[-1].seq
        if self._types is not None:
            events = [e for e in events if e.type in self._types]
            if not events:
                return
        self._bytes += sum([len(e.data) for e in events])
        if len(self._queue) + len(events) > self._buffer or self._bytes > self._buffer_bytes:
            self._drop()
        else:
            self._queue.extend(events)
        waiter = self._wakeup
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, error: RecoveryFailed, head: int) -> None:
        """The log lost its history (a new epoch): the next read raises ``error``, and
        the subscription then goes on from ``head``, the new log's end."""
        self._failure = error
        self._queue.clear()
        self._history.clear()
        self._bytes = 0
        self._last_seq = self._last_pushed = head
        self._catching_up = False
        waiter = self._wakeup
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _drop(self) -> None:
        """Forget the live buffer; what it held is read again from the log."""
        self._queue.clear()
        self._bytes = 0
        self._drops += 1
        self._catching_up = True

    def __aiter__(self) -> AsyncIterator[Event]:
        return self

    async def __anext__(self) -> Event:
        while True:
            if self.closed:
                raise StopAsyncIteration
            if self._failure is not None:
                failure, self._failure = self._failure, None
                raise failure
            if self._history:
                event = self._history.popleft()
                self._last_seq = event.seq
                return event
            if self._catching_up:
                await self._catch_up()
                continue
            while self._queue:
                event = self._queue.popleft()
                if event.seq > self._last_seq:
                    self._last_seq = event.seq
                    return event
            self._bytes = 0  # the buffer is empty
            self._wakeup = asyncio.get_running_loop().create_future()
            try:
                await self._wakeup
            finally:
                self._wakeup = None

    async def batch(self, limit: int = 1000) -> list[Event]:
        """The next events available: at least one, up to ``limit``, in log order.

        Streaming edges write a batch with one socket write, so a burst of
        publishes costs each subscriber one wake-up and one system call.
        Returns an empty list when the subscription is closed.
        """
        try:
            first = await self.__anext__()
        except StopAsyncIteration:
            return []
        out = [first]
        # Moved in bulk, not event by event: history first, then (caught up) the
        # live buffer, which holds events in log order, so those already read
        # from the log are all at its front.
        if self._history:
            _take(self._history, out, limit)
        if len(out) < limit and not self._history and not self._catching_up:
            queue = self._queue
            last = out[-1].seq
            while queue and queue[0].seq <= last:
                queue.popleft()
            if queue:
                _take(queue, out, limit)
            if not queue:
                self._bytes = 0
        self._last_seq = out[-1].seq
        return out

    async def _catch_up(self) -> None:
        drops = self._drops
        result = await self._hub.log.read(
            self.patterns, self._last_seq, CATCH_UP_BATCH, check=self._check
        )
        self._check = True
        events = result.events
        if self._types is not None:
            events = [e for e in events if e.type in self._types]
        if events:
            self._history.extend(events)
        elif self._drops == drops:
            self._catching_up = False  # the live buffer holds everything after this read
        if not events:
            self._last_seq = max(self._last_seq, result.last_seq)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._hub._unregister(self)
            if self._wakeup is not None and not self._wakeup.done():
                self._wakeup.set_result(None)

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


class _Signal:
    """A one-shot wake-up for long polls: fires on the first matching event."""

    __slots__ = ("future", "types")

    def __init__(self, types: frozenset[str] | None) -> None:
        self.future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.types = types

    def _push(self, event: Event) -> None:
        if (self.types is None or event.type in self.types) and not self.future.done():
            self.future.set_result(None)

    def _push_run(self, events: list[Event]) -> None:
        for event in events:
            self._push(event)


Encoder = Callable[["EventMessage"], bytes]
#: An event type's name → its data's encoder (see :meth:`EventHub.publish_data`).
TypeEncoder = Callable[[str], Callable[[Any], bytes]]
#: Sees every published event synchronously, a batch at a time (see :meth:`EventHub.add_tap`).
Tap = Callable[[list[Event]], None]


class EventHub:
    """Publish, subscribe, poll and long-poll over one :class:`EventLog`."""

    def __init__(
        self,
        log: EventLog,
        *,
        buffer: int = 1000,
        buffer_bytes: int = 8 * 1024 * 1024,
        encoder: Encoder | None = None,
        type_encoder: TypeEncoder | None = None,
        trim_interval: float = 60.0,
        max_age: float | None = None,
        bus: Bus | None = None,
        poll_interval: float = 1.0,
    ) -> None:
        self.log = log
        #: Each live subscriber's buffer: at most this many events, and this many bytes.
        self.buffer = buffer
        self.buffer_bytes = buffer_bytes
        self.encoder = encoder
        self.type_encoder = type_encoder
        self._index: PatternIndex[Subscription | _Signal] = PatternIndex()
        self._registrations: dict[Subscription | _Signal, tuple[Pattern, ...]] = {}
        self._trim_interval = trim_interval
        self._max_age = max_age
        self._trimmer: asyncio.Task[None] | None = None
        self._taps: list[Tap] = []
        self._valid_channels: set[str] = set()
        self.published = 0
        self.closing = False
        #: Appended, not yet durable: delivered by one task once the log commits them.
        self._unsent: list[Event] = []
        self._delivering: set[asyncio.Task[None]] = set()
        #: With a bus, other nodes append to the log too: deliver in log order (see core.tail).
        self._tail = None if bus is None else Tail(self, bus, poll_interval=poll_interval)

    @contextlib.contextmanager
    def publishing(self) -> Iterator[None]:
        """Within the block, and in tasks created in it, a service's publishes go here.

        What ``with node.publishing():`` does; the dispatcher and the node set the
        same thing themselves around handlers and hooks.
        """
        token = SERVING_HUB.set(self)
        try:
            yield
        finally:
            SERVING_HUB.reset(token)

    async def start(self) -> None:
        await self.log.open()
        if self._tail is not None:
            try:
                await self._tail.start()
            except BaseException:
                await self.log.close()
                raise
        if self._max_age is not None:
            self._trimmer = asyncio.create_task(self._trim_forever(), name="polyport-trim")

    def release_waiters(self) -> None:
        """Answer every held long poll now (the node is shutting down)."""
        self.closing = True
        for item in list(self._registrations):
            if isinstance(item, _Signal) and not item.future.done():
                item.future.set_result(None)

    async def stop(self) -> None:
        self.release_waiters()
        if self._trimmer is not None:
            self._trimmer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._trimmer
            self._trimmer = None
        if self._tail is not None:
            await self._tail.stop()
        for item in list(self._registrations):
            if isinstance(item, Subscription):
                item.close()
        await self.log.close()

    async def _trim_forever(self) -> None:
        assert self._max_age is not None
        while True:
            await asyncio.sleep(self._trim_interval)
            try:
                dropped = await self.log.trim_older_than(now() - self._max_age)
                if dropped:
                    log.debug("trimmed %d expired events", dropped)
            except Exception:
                log.exception("trimming the event log failed")

    # -- publishing -------------------------------------------------------------

    async def publish(self, channel: str, type: str, data: bytes) -> Event:
        """Append one event (``data`` is JSON) and deliver it to live subscribers."""
        if channel not in self._valid_channels:
            self._remember_channel(channel)
        event = await self.log.append(channel, type, data, now())
        if self._taps:
            self._tap([event])
        self.published += 1
        if not self.log.settled():
            # Acknowledged means durable: subscribers get it after the commit, and the
            # caller's answer waits for it (one commit per loop iteration, shared).
            self._after_commit([event])
            return event
        if self._tail is not None:
            self._tail.local((event,))
            return event
        for subscriber in self._index.match(channel):
            subscriber._push(event)
        return event

    async def publish_message(self, message: EventMessage) -> Event:
        if self.encoder is None:
            raise RuntimeError("this hub has no encoder for typed events")
        return await self.publish(message.channel, message.type.name, self.encoder(message))

    async def publish_data(self, event_type: EventType, channel: str, data: Any) -> Event:
        """Publish one event of ``event_type``: :meth:`publish_message` without the message.

        The hot path of ``EventType.publish``. A hub made without a ``type_encoder``
        makes the message and encodes it with ``encoder``.
        """
        if self.type_encoder is None:
            return await self.publish_message(event_type(data, channel=channel))
        name = event_type.name
        return await self.publish(channel, name, self.type_encoder(name)(data))

    async def publish_data_many(
        self, event_type: EventType, items: Iterable[Any], *, channel: str | None = None
    ) -> list[Event]:
        """Publish events of one type in order, as one batch, on ``channel`` or their own.

        :meth:`publish_batch` for data of one type, without making the messages:
        the hot path of ``EventType.publish_many``. Each item's channel is its
        type's template filled from it, unless ``channel`` is given.
        """
        if self.type_encoder is None:
            return await self.publish_batch([event_type(data, channel=channel) for data in items])
        name = event_type.name
        encode = self.type_encoder(name)
        if channel is not None:
            return await self.publish_many([(channel, name, encode(data)) for data in items])
        items = items if isinstance(items, Sequence) else list(items)
        channels = event_type.channels_for(items)
        return await self.publish_many(
            [(channel, name, encode(data)) for channel, data in zip(channels, items, strict=True)]
        )

    async def publish_batch(self, messages: Iterable[EventMessage]) -> list[Event]:
        """Publish typed events in order, as one batch: see :meth:`publish_many`."""
        encoder = self.encoder
        if encoder is None:
            raise RuntimeError("this hub has no encoder for typed events")
        return await self.publish_many([(m.channel, m.type.name, encoder(m)) for m in messages])

    async def publish_many(self, items: Sequence[tuple[str, str, bytes]]) -> list[Event]:
        """Append ``(channel, type, data)`` events in order and deliver them as one batch.

        Every item is validated (encoded, channel checked) before the first is
        appended, so an invalid item publishes nothing. Each live subscriber then
        gets each run of same-channel events in one push and one wake-up.
        """
        channels = {channel for channel, _, _ in items}
        for channel in channels:
            if channel not in self._valid_channels:
                self._remember_channel(channel)
        events = await self.log.append_many(items, now())
        if self._taps and events:
            self._tap(events)
        self.published += len(events)
        if events and not self.log.settled():
            self._after_commit(events)
        elif self._tail is not None:
            self._tail.local(events)
        elif len(channels) == 1:  # the common case: the whole batch is one run
            for subscriber in self._index.match(events[0].channel):
                subscriber._push_run(events)
        elif events:
            self._deliver(events)
        return events

    def _after_commit(self, events: list[Event]) -> None:
        """Deliver ``events`` once the log has made them durable; the caller's answer waits."""
        _UNSETTLED.set(self)
        if not self._unsent:
            task = asyncio.get_running_loop().create_task(self._deliver_when_durable())
            self._delivering.add(task)  # held until done: the loop keeps only a weak one
            task.add_done_callback(self._delivering.discard)
        self._unsent.extend(events)

    async def _deliver_when_durable(self) -> None:
        # Taken when this task first runs: the appends of the loop iteration before it.
        # A later batch gets a task of its own, which the log's commits wake in order.
        batch, self._unsent = self._unsent, []
        try:
            await self.log.durable()
        except Exception:
            log.warning("%d event(s) could not be stored and were not delivered", len(batch))
            return
        if self._tail is not None:
            self._tail.local(batch)
        else:
            self._deliver(batch)

    def _deliver(self, events: list[Event]) -> None:
        """Push events, in log order, to the subscribers of their channels: a run per channel."""
        start = 0
        while start < len(events):
            channel = events[start].channel
            end = start + 1
            while end < len(events) and events[end].channel == channel:
                end += 1
            run = events[start:end]
            for subscriber in self._index.match(channel):
                subscriber._push_run(run)
            start = end

    def _remember_channel(self, channel: str) -> None:
        """Check ``channel`` once; publishing to it again skips the check."""
        check_channel(channel)
        if len(self._valid_channels) >= _CHECKED_CHANNELS:
            self._valid_channels.clear()
        self._valid_channels.add(channel)

    def _tap(self, events: list[Event]) -> None:
        for tap in self._taps:
            try:
                tap(events)
            except Exception:
                # The events are in the log: failing the publisher now would invite a
                # retry that publishes them twice.
                log.exception(
                    "an event tap failed on %d event(s) from %s", len(events), events[0].id
                )

    def add_tap(self, tap: Tap) -> None:
        """Call ``tap`` with every event published from now on, synchronously.

        ``tap`` gets the events of each publish as one list, in log order (one
        event for :meth:`publish`, the whole batch for :meth:`publish_many`).
        It runs in the loop step that appended them, before they are
        committed and before live subscribers get them, and must not block or
        await. A transactional outbox (the webhooks edge) records events
        there, so on SQLite its rows join the events' group transaction
        instead of trailing it. If that commit fails the events were never
        published, and the tap's rows are rolled back with them.
        """
        self._taps.append(tap)

    def remove_tap(self, tap: Tap) -> None:
        if tap in self._taps:
            self._taps.remove(tap)

    # -- reading ----------------------------------------------------------------

    async def resolve(self, after: str | None) -> int:
        """The seq to read after, for a cursor string (None or 'earliest': the start)."""
        if after is None or after == "earliest":
            return 0
        if after == "now":
            return await self.log.head()
        return await self.log.resolve(Cursor.parse(after))

    async def subscribe(
        self,
        patterns: Sequence[Pattern],
        *,
        after: str | None = "now",
        types: frozenset[str] | None = None,
        buffer: int | None = None,
    ) -> Subscription:
        """A live subscription, resumed after ``after`` ('now' by default).

        Raises :class:`~polyport.core.errors.RecoveryFailed` at once if the
        cursor is older than the history kept.
        """
        subscription = Subscription(
            self,
            patterns,
            types=types,
            buffer=buffer or self.buffer,
            buffer_bytes=self.buffer_bytes,
        )
        self._register(subscription, subscription.patterns)  # before reading: nothing slips by
        try:
            start = await self.resolve(after)
            if after not in (None, "earliest"):
                # Fail now, not on the first read, if history has a gap.
                await self.log.read(patterns, start, 1)
        except BaseException:
            subscription.close()
            raise
        subscription._last_seq = start
        subscription._check = after not in (None, "earliest")
        return subscription

    async def poll(
        self,
        patterns: Sequence[Pattern],
        *,
        after: str | None,
        limit: int = 100,
        wait: float = 0.0,
        types: frozenset[str] | None = None,
    ) -> Poll:
        """Events after ``after``; with ``wait`` > 0 hold until one arrives (long polling)."""
        start = await self.resolve(after)
        check = after not in (None, "earliest")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        seq = start
        while True:
            result = await self.log.read(patterns, seq, limit, check=check)
            check = True
            events = result.events
            if types is not None:
                events = [e for e in events if e.type in types]
            if events:
                return Poll(events, position(self.log.epoch, result.last_seq))
            seq = max(seq, result.last_seq)
            if len(result.events) == limit:
                continue  # a full page of events this reader may not see: keep scanning
            remaining = deadline - loop.time()
            if remaining <= 0 or self.closing:
                return Poll([], position(self.log.epoch, seq))
            signal = _Signal(types)
            self._register(signal, patterns)
            try:
                # Re-read after registering so an event published in between is seen.
                again = await self.log.read(patterns, seq, limit)
                if any(types is None or e.type in types for e in again.events):
                    continue
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(remaining):
                        await signal.future
            finally:
                self._unregister(signal)

    # -- registry -----------------------------------------------------------------

    def lost_history(self, head: int) -> None:
        """The shared log started a new epoch (its engine lost its data): every live
        subscription is told, as a resume from a lost cursor is, and goes on from ``head``."""
        latest = position(self.log.epoch, head)
        for item in list(self._registrations):
            if isinstance(item, Subscription):
                item._fail(
                    RecoveryFailed(
                        "the event log lost its history (a new epoch began)", latest=latest
                    ),
                    head,
                )
            elif not item.future.done():
                item.future.set_result(None)  # a held long poll reads again and finds out

    @property
    def shared(self) -> bool:
        """Whether other nodes append to this hub's log (a shared engine, with a bus)."""
        return self._tail is not None

    def wanted_patterns(self) -> list[Pattern]:
        """Every pattern a subscriber or a held long poll of this node listens to, once."""
        return list(dict.fromkeys(p for patterns in self._registrations.values() for p in patterns))

    @property
    def subscriber_count(self) -> int:
        return sum(isinstance(item, Subscription) for item in self._registrations)

    def _register(self, item: Subscription | _Signal, patterns: Sequence[Pattern]) -> None:
        unique = tuple(dict.fromkeys(patterns))
        self._registrations[item] = unique
        for pattern in unique:
            self._index.add(pattern, item)

    def _unregister(self, item: Subscription | _Signal) -> None:
        patterns = self._registrations.pop(item, ())
        for pattern in patterns:
            self._index.remove(pattern, item)

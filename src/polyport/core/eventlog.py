"""The event log port: what every history backend implements.

Backends (memory, SQLite here; Redis Streams, NATS JetStream, PostgreSQL later)
implement :class:`EventLog` and pass the one shared contract suite in
``tests/contract/test_eventlog.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from polyport.core.errors import RecoveryFailed
from polyport.core.events import Cursor, Event, Pattern, position


@dataclass(frozen=True, slots=True)
class History:
    """How much each channel keeps: at most ``max_events`` and none older than ``max_age``."""

    max_events: int = 1000
    max_age: float = 86400.0


@dataclass(frozen=True, slots=True)
class ReadResult:
    """Events after a position, and the position the read reached.

    ``last_seq`` is where the next read continues: the last event's ``seq`` when
    the page is full, else the head of the log at the time of the read, so
    events filtered out or absent are never scanned twice.
    """

    events: list[Event]
    last_seq: int


@dataclass(frozen=True, slots=True)
class ChannelInfo:
    name: str
    epoch: str
    last_offset: int
    trimmed_offset: int  # the highest offset no longer held (0: nothing lost)
    trimmed_seq: int  # the highest seq no longer held for this channel


class EventLog(Protocol):
    """An append-only, per-channel bounded history with global ordering.

    Raises: :class:`RecoveryFailed` from :meth:`resolve` and :meth:`read` when
    the requested position is not in the history kept (older than it, from
    another epoch, or ahead of it). A log whose engine lost its data begins a
    new :attr:`epoch`; positions of the old one mean nothing in it, and the hub
    tells its subscribers (see :mod:`polyport.core.tail`).
    """

    @property
    def epoch(self) -> str:
        """The log's own epoch: changes when the whole log loses its history."""
        ...

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def append(self, channel: str, type: str, data: bytes, time: float) -> Event:
        """Store one event and return it with its offset, epoch and seq.

        The event may not be durable yet: callers that acknowledge it or show
        it to anyone await :meth:`durable` first. Readers (:meth:`head`,
        :meth:`read`, :meth:`resolve`) see only durable events.
        """
        ...

    async def append_many(
        self, items: Sequence[tuple[str, str, bytes]], time: float
    ) -> list[Event]:
        """Append ``(channel, type, data)`` events in order, all at ``time``; return them in order.

        The same as :meth:`append` for each item in turn — offsets, seqs and
        durability alike — in one call, so a backend can write the batch at once.
        One exception: a batch spanning channels may be stored one channel's
        events at a time (NATS sends each channel's in a message of its own), so
        across channels its seqs need not follow the items' order. Within a
        channel they always do, and its events are consecutive in the channel
        (on NATS as far as one message holds them).
        """
        ...

    def settled(self) -> bool:
        """Whether everything appended so far is durable already (no waiting needed).

        True at all times for a log whose :meth:`append` returns only once the
        events are stored (memory, the engines); False on SQLite between an
        append and its group's commit.
        """
        ...

    @property
    def announces_appends(self) -> bool:
        """Whether each append announces its events on the engine's bus itself, in the
        transaction that stores them, so the hub announces nothing of its own.

        True on PostgreSQL, whose ``NOTIFY`` is delivered on commit only: one commit
        stores and announces, and an append that is rolled back announces nothing.
        False for every other log (memory, SQLite, Redis, NATS): the hub announces
        each append's events on the bus once they are durable (see
        :mod:`polyport.core.tail`).
        """
        ...

    async def durable(self) -> None:
        """Return once every event appended so far is durable.

        Raises :class:`~polyport.core.errors.Unavailable` if that cannot be
        confirmed. Their ids were shown to no one. On SQLite a failed commit
        stored nothing; on an engine over a network (a timeout, a dropped
        connection) the outcome is unknown: the events may be stored, and a
        publisher that retries may publish them twice.
        """
        ...

    async def head(self) -> int:
        """A seq at or after the newest event and before any later one (0 for an empty log).

        The newest event's own seq where seqs are consecutive; on NATS, where
        they are not, the end of the last message (see :meth:`is_next`).
        """
        ...

    def is_next(self, after: int, seq: int) -> bool:
        """Whether no event can lie between seqs ``after`` and ``seq`` (``seq`` the later).

        Seqs grow with the log. On most backends they are consecutive, and this
        is ``seq == after + 1``; NATS numbers an event by its message and its
        place in it, so its seqs skip (see
        :mod:`polyport.backends.nats.messages`). Answers from what the log knows
        without asking its engine: False when it cannot tell.
        """
        ...

    async def resolve(self, cursor: Cursor) -> int:
        """The seq after which a reader resumes from ``cursor``."""
        ...

    async def read(
        self, patterns: Sequence[Pattern], after_seq: int, limit: int, *, check: bool = True
    ) -> ReadResult:
        """Up to ``limit`` events of matching channels with ``seq > after_seq``, oldest first.

        With ``check`` (the default) raise :class:`RecoveryFailed` if a matching
        channel has lost events after ``after_seq``.
        """
        ...

    async def trim_older_than(self, time: float) -> int:
        """Drop events published before ``time``; return how many."""
        ...

    async def channels(self) -> list[ChannelInfo]: ...


def resolve_with(
    cursor: Cursor,
    *,
    log_epoch: str,
    head: int,
    channel: ChannelInfo | None,
    seq_of_offset: int | None,
    first_seq: int | None,
) -> int:
    """The cursor rules every backend shares, given what it looked up.

    ``channel`` is the channel whose epoch the event id names (None if none
    does), ``seq_of_offset`` the seq of that event if still held, and
    ``first_seq`` the seq of the channel's oldest held event.
    """
    latest = position(log_epoch, head)
    if cursor.is_position:
        if cursor.epoch != log_epoch:
            raise RecoveryFailed(
                "the log was reset since this cursor was issued", earliest=None, latest=latest
            )
        if cursor.number > head:
            # Only a log that lost its newest writes (a crash inside a group
            # commit) or a forged cursor gets here: either way, not resumable.
            raise RecoveryFailed(
                f"cursor {cursor} is ahead of the log (head {latest})", latest=latest
            )
        return cursor.number
    if channel is None:
        raise RecoveryFailed(
            f"no channel has epoch {cursor.epoch}: its history was lost or never existed here",
            latest=latest,
        )
    if cursor.number > channel.last_offset:
        raise RecoveryFailed(
            f"cursor {cursor} is ahead of channel {channel.name} "
            f"(last offset {channel.last_offset})",
            latest=latest,
        )
    if seq_of_offset is not None:
        return seq_of_offset
    if cursor.number == 0 and channel.trimmed_offset == 0:
        return (first_seq - 1) if first_seq is not None else head
    earliest = f"{channel.epoch}:{channel.trimmed_offset}" if channel.trimmed_offset else None
    raise RecoveryFailed(
        f"channel {channel.name} no longer holds offset {cursor.number}",
        earliest=earliest,
        latest=latest,
    )


def check_gap(infos: Sequence[ChannelInfo], after_seq: int, log_epoch: str, head: int) -> None:
    """Raise :class:`RecoveryFailed` if a channel lost events after ``after_seq``."""
    for info in infos:
        if info.trimmed_seq > after_seq:
            raise RecoveryFailed(
                f"channel {info.name} lost events after this position "
                f"(history now starts after offset {info.trimmed_offset})",
                earliest=position(log_epoch, info.trimmed_seq),
                latest=position(log_epoch, head),
            )

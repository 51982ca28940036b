"""A node's appends on their way to the stream: per channel, what is known and what waits.

:mod:`.writer` sends them as messages of the channel's; :mod:`.forward` hands
them to the node that writes the channel, and takes other nodes' from them.
"""

from __future__ import annotations

import asyncio
import collections
from typing import TYPE_CHECKING

from polyport.backends.nats.messages import FRAMING, MAX_EVENTS, Entry, Meta
from polyport.core.errors import Unavailable
from polyport.core.events import Event

if TYPE_CHECKING:
    from nats.aio.msg import Msg

    from polyport.backends.nats.client import JetStreamClient


class Tail:
    """What this node knows of one channel: its end in the stream, and its appends waiting."""

    __slots__ = (
        "channel",
        "contended_until",
        "epoch",
        "follow",
        "forwarding",
        "held_back",
        "known",
        "last",
        "leader",
        "offset",
        "queue",
        "sender",
        "sending",
        "subject",
        "trimmed",
    )

    def __init__(self, channel: str, epoch: str, subject: str) -> None:
        self.channel = channel
        self.epoch = epoch
        self.subject = subject
        self.known = False  # offset and last are what the stream held, not a guess
        self.offset = 0  # the channel's last offset (stored)
        self.last: Meta | None = None  # the message holding it (None: the subject holds none)
        self.trimmed = 0  # offsets up to this are gone, as this node last knew
        #: The last offset of the oldest message a trim by count kept whole for its newer
        #: events (0: none): trimming again waits until it can take that message.
        self.held_back = 0
        self.queue: collections.deque[Run] = collections.deque()
        self.sender: asyncio.Task[None] | None = None  # sends the queue, while it has one
        self.sending: Outgoing | None = None  # the message in flight
        self.contended_until = 0.0  # (loop time) until then contended: this node lost lately
        #: The writer (its nonce) this node forwards its appends to (None: it sends them).
        self.leader: str | None = None
        self.follow = False  # lost a round with its own appends: follow the channel's writer
        self.forwarding: list[Run] | None = None  # the runs of the forward in flight

    @property
    def seq(self) -> int:
        """The stream sequence of the channel's last message (0: none)."""
        return self.last.seq if self.last is not None else 0


class TakenBack(Unavailable):
    """A forwarded run this node will not send (late, or it stops): its node sends it itself."""


class Batch:
    """One call's events, answered together."""

    __slots__ = ("done", "events", "failed", "metas", "pending")

    def __init__(self, size: int, *, forwarded: bool = False) -> None:
        self.events: list[Event | None] = [None] * size
        self.pending = size
        self.done: asyncio.Future[list[Event]] = asyncio.get_running_loop().create_future()
        self.failed = False
        #: A forwarded call's: the headers of the messages that hold its events, by seq.
        self.metas: dict[int, Meta] | None = {} if forwarded else None

    def fail(self, exc: Unavailable) -> None:
        self.failed = True
        if not self.done.done():
            self.done.set_exception(exc)
            self.done.exception()  # retrieved: a batch whose caller left logs nothing


class Run:
    """One call's events on one channel, in order: a message takes a run whole if it fits."""

    __slots__ = ("attempts", "batch", "deadline", "entries", "indexes", "partial", "size")

    def __init__(self, batch: Batch, deadline: float = 0.0) -> None:
        self.batch = batch
        self.indexes: list[int] = []  # each event's place in its call
        self.entries: list[Entry] = []
        self.size = 0  # bytes in a pack, at most
        self.attempts = 0  # rounds lost
        #: Another node's run (forwarded to this one): the loop time it must be sent by.
        self.deadline = deadline
        self.partial = False  # its start went in a message of its own (see split)

    def add(self, index: int, entry: Entry) -> None:
        self.indexes.append(index)
        self.entries.append(entry)
        self.size += 3 * len(entry[1].encode()) + len(entry[2]) + FRAMING  # type escaped

    def split(self, budget: int) -> Run:
        """Take off the longest start (one event at least) of at most ``budget`` bytes."""
        head = Run(self.batch, self.deadline)
        head.attempts = self.attempts
        self.partial = True
        n = 0
        while n < len(self.entries) and n < MAX_EVENTS:
            _, type_, data = self.entries[n]
            if n and head.size + 3 * len(type_.encode()) + len(data) + FRAMING > budget:
                break
            head.add(self.indexes[n], self.entries[n])
            n += 1
        del self.indexes[:n], self.entries[:n]
        self.size -= head.size
        return head


class Outgoing:
    """A message of this node's in flight: what it carries and what it expected."""

    __slots__ = (
        "answer",
        "count",
        "expected",
        "msg_id",
        "offset",
        "prev",
        "reply",
        "runs",
        "time",
        "token",
    )

    def __init__(self, runs: list[Run], tail: Tail, msg_id: str, client: JetStreamClient) -> None:
        self.runs = runs
        self.msg_id = msg_id
        self.expected = tail.seq  # the channel's last message when sent
        self.prev = tail.last.end if tail.last is not None else 0
        self.offset = tail.offset + 1
        self.count = sum(len(run.entries) for run in runs)
        self.time = max(run.entries[0][0] for run in runs)  # a call's events share a time
        #: The server's answer; None once the connection was made again (no answer comes).
        self.answer: asyncio.Future[Msg | None] = asyncio.get_running_loop().create_future()
        self.reply, self.token = client.reply_to(self._answered)

    def _answered(self, msg: Msg) -> None:
        if not self.answer.done():
            self.answer.set_result(msg)


def fail_runs(runs: list[Run], exc: Unavailable) -> None:
    """Fail the calls of ``runs`` (each call once, whatever its other runs do)."""
    for run in runs:
        run.batch.fail(exc)

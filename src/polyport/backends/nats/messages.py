"""One message of the log on the wire: its headers, its payload, and where its events stand.

A message holds one or more events of one channel, on the channel's subject
(see :mod:`.subjects`), written by one node in one go (see :mod:`.writer`):

* **One event**: the header ``Polyport: {offset} {prev} {time} {type}`` and the
  event's data as the payload, so ``nats stream get`` shows the event as is.
* **Several events** (a *pack*, at most :data:`MAX_EVENTS`): the header
  ``Polyport-Pack: {offset} {prev} {count} {time}`` and, as the payload, each
  event in order as ``{time} {type} {size}\\n{data}\\n`` (``size``: the bytes of
  ``data``, which may hold newlines of its own).

``offset`` is the first event's; the others follow it one by one. ``prev`` is
the position (below) of the channel's event before the first, ``0`` if none is
held. ``time`` is when the event was appended (seconds since the epoch); a
pack's header holds its newest, which is what trimming by age reads without
the payload. ``type`` is percent-encoded, so it holds no space. Beside these,
JetStream's own headers: ``Nats-Msg-Id`` (what a writer looks for after a
reconnection) and ``Nats-Expected-Last-Subject-Sequence``.

**Positions.** An event's ``seq`` (its place in the whole log: what cursors
and merged reads order by) is ``stream_seq << 10 | index``: its message's
stream sequence and its index in the message. Positions grow with the log,
and within a message they are consecutive; between two messages they jump
(the position after an event is not always the next one's), which
:meth:`NatsEventLog.is_next <polyport.backends.nats.eventlog.NatsEventLog.is_next>`
accounts for. The end of message ``s``, ``s << 10 | 1023``, is at or after every
event of ``s`` and before every later one: the log's head is the end of its
last message.

A stream written before packs (one event per message, its ``seq`` the stream
sequence) is not read by this format: its stream description says so, and
opening it asks for it to be deleted (there were no users of the NATS engine
then).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import quote, unquote

if TYPE_CHECKING:
    from nats.aio.msg import Msg

#: The header of a message holding one event, and of a pack.
HEADER = "Polyport"
PACK_HEADER = "Polyport-Pack"
#: Bits of a position that number an event within its message.
INDEX_BITS = 10
#: Events one message holds at most.
MAX_EVENTS = 1 << INDEX_BITS
LAST_INDEX = MAX_EVENTS - 1
#: Bytes a pack spends on an event beside its data and type (time, size, separators), at most.
FRAMING = 48


def position(stream_seq: int, index: int) -> int:
    """The position of the ``index``-th event of the message at ``stream_seq``."""
    return stream_seq << INDEX_BITS | index


def stream_seq_of(position: int) -> int:
    """The stream sequence of the message holding the event at ``position``."""
    return position >> INDEX_BITS


def end_of(stream_seq: int) -> int:
    """A position after every event of the message at ``stream_seq``, before any later one's."""
    return position(stream_seq, LAST_INDEX) if stream_seq else 0


@dataclass(frozen=True, slots=True)
class Meta:
    """What a message's header says: where it is, the offsets it holds, what came before."""

    seq: int  # the message's stream sequence
    offset: int  # its first event's offset
    count: int  # how many events it holds
    prev: int  # the position of the channel's event before the first (0: none held)
    time: float  # its newest event's time

    @property
    def last(self) -> int:
        """The offset of its last event."""
        return self.offset + self.count - 1

    @property
    def end(self) -> int:
        """The position of its last event."""
        return position(self.seq, self.count - 1)

    def position(self, offset: int) -> int:
        """The position of its event at ``offset``."""
        return position(self.seq, offset - self.offset)


#: An event as a message holds it: ``(time, type, data)``.
Entry = tuple[float, str, bytes]


def encode(offset: int, prev: int, entries: Sequence[Entry]) -> tuple[str, str, bytes]:
    """The header name, header value and payload of a message holding ``entries``."""
    if len(entries) == 1:
        time, type_, data = entries[0]
        return HEADER, f"{offset} {prev} {time!r} {quote(type_, safe='')}", data
    newest = max(time for time, _, _ in entries)
    return PACK_HEADER, f"{offset} {prev} {len(entries)} {newest!r}", pack(entries)


def pack(entries: Sequence[Entry]) -> bytes:
    """A pack's payload: each entry as ``{time} {type} {size}\\n{data}\\n``, in order."""
    parts = []
    for time, type_, data in entries:
        parts.append(f"{time!r} {quote(type_, safe='')} {len(data)}\n".encode())
        parts.append(data)
        parts.append(b"\n")
    return b"".join(parts)


def meta_of(msg: Msg, seq: int) -> Meta | None:
    """What the header of ``msg`` (at stream sequence ``seq``) says; None if not an event's."""
    headers = msg.headers
    if not headers:
        return None
    value = headers.get(HEADER)
    if value is not None:
        offset, prev, time, _ = value.split(" ", 3)
        return Meta(seq, int(offset), 1, int(prev), float(time))
    value = headers.get(PACK_HEADER)
    if value is not None:
        offset, prev, count, time = value.split(" ")
        return Meta(seq, int(offset), int(count), int(prev), float(time))
    return None


def entries_of(msg: Msg, meta: Meta) -> list[Entry]:
    """The events ``msg`` holds, in order (``meta``: its header, from :func:`meta_of`)."""
    if meta.count == 1:
        value = (msg.headers or {})[HEADER]
        _, _, time, type_ = value.split(" ", 3)
        return [(float(time), unquote(type_), msg.data)]
    return unpack(msg.data, meta.count)


def unpack(payload: bytes, count: int) -> list[Entry]:
    """The ``count`` entries of a pack's payload (see :func:`pack`); ValueError if it holds
    fewer."""
    entries: list[Entry] = []
    start = 0
    for _ in range(count):
        newline = payload.index(b"\n", start)
        stamp, kind, size = payload[start:newline].split(b" ")
        start = newline + 1
        end = start + int(size)
        if end >= len(payload):
            raise ValueError("a pack shorter than its sizes say")
        entries.append((float(stamp), unquote(kind.decode()), payload[start:end]))
        start = end + 1
    return entries

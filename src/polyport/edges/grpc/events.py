"""The event log as a gRPC server stream: ``polyport.events.v1.Events/Subscribe``.

    service Events {
      rpc Subscribe(SubscribeRequest) returns (stream EventBatch);
    }

One fixed file (``polyport/events/v1/events.proto``), the same for every
service, so one set of stubs reads the events of any polyport node.

**Batching.** Each ``EventBatch`` carries every event available when the
stream wakes up (up to ``max_batch``, default 1,000), in log order, and the
cursor to resume from. A burst of publishes therefore costs one message, one
wake-up and one write per subscriber, not one per event. The first message is
an empty batch: it says the subscription is live and where it starts.

**Encode once.** Each event is serialised to ``Event`` bytes once (cached on
the event for every subscriber); a batch is those bytes framed as a repeated
field, so the stream never re-encodes an event.

**Resume and recovery.** ``after`` takes an event id, a position, ``now``
(the default) or ``earliest``. A cursor older than the history kept ends the
call with ``OUT_OF_RANGE`` and an ``ErrorInfo`` whose reason is
``RECOVERY_FAILED`` and whose metadata holds ``earliest`` and ``latest``: the
client chooses between a gap (resume from ``latest``) and a reload.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any, NamedTuple

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError

from polyport.core.errors import InvalidArgument, ServiceError
from polyport.core.events import Event, parse_patterns
from polyport.core.hub import Subscription
from polyport.core.runtime import Runtime
from polyport.core.types import Scalar
from polyport.edges.grpc.descriptors import (
    FDP,
    TIMESTAMP,
    FieldPlan,
    MessagePlan,
    Slot,
    add_message,
)
from polyport.edges.grpc.errors import abort
from polyport.edges.grpc.metadata import caller_of

log = logging.getLogger("polyport.grpc")

PACKAGE = "polyport.events.v1"
SERVICE = f"{PACKAGE}.Events"
FILE = "polyport/events/v1/events.proto"
DEFAULT_BATCH = 1000
MAX_BATCH = 10_000

_STR = Slot(Scalar("str"), FDP.TYPE_STRING)
_INT = Slot(Scalar("int"), FDP.TYPE_INT64)
_BYTES = Slot(Scalar("bytes"), FDP.TYPE_BYTES)
_TIME = Slot(Scalar("datetime"), FDP.TYPE_MESSAGE, TIMESTAMP)
_EVENT = Slot(Scalar("any"), FDP.TYPE_MESSAGE, f".{PACKAGE}.Event")


def events_file() -> descriptor_pb2.FileDescriptorProto:
    """The descriptor of the events service (the same for every node)."""
    file = descriptor_pb2.FileDescriptorProto(
        name=FILE,
        package=PACKAGE,
        syntax="proto3",
        dependency=["google/protobuf/timestamp.proto"],
    )
    messages = [
        MessagePlan(
            "SubscribeRequest",
            [
                FieldPlan(
                    "channels",
                    1,
                    "channels",
                    Slot(Scalar("str"), FDP.TYPE_STRING, element=_STR),
                    comment="Channels or patterns: '+' matches one segment, '#' the rest.",
                ),
                FieldPlan(
                    "after",
                    2,
                    "after",
                    _STR,
                    comment="Resume after this event id or position; 'now' (the default, "
                    "when empty) or 'earliest'.",
                ),
                FieldPlan(
                    "max_batch",
                    3,
                    "max_batch",
                    _INT,
                    comment=f"At most this many events per EventBatch "
                    f"(0: {DEFAULT_BATCH}; at most {MAX_BATCH}).",
                ),
            ],
            comment="What to subscribe to, and where to start.",
        ),
        MessagePlan(
            "Event",
            [
                FieldPlan("id", 1, "id", _STR, comment="'{epoch}:{offset}': a resume cursor."),
                FieldPlan("channel", 2, "channel", _STR),
                FieldPlan("offset", 3, "offset", _INT, comment="Counts from 1 per channel."),
                FieldPlan("epoch", 4, "epoch", _STR, comment="Changes when history is lost."),
                FieldPlan("type", 5, "type", _STR, comment="The event type, e.g. 'users.created'."),
                FieldPlan("time", 6, "time", _TIME),
                FieldPlan("data", 7, "data", _BYTES, comment="The event's data as JSON."),
            ],
            comment="One event: the envelope every push pattern delivers.",
        ),
        MessagePlan(
            "EventBatch",
            [
                FieldPlan(
                    "events",
                    1,
                    "events",
                    Slot(_EVENT.node, FDP.TYPE_MESSAGE, _EVENT.type_name, element=_EVENT),
                    comment="The events available when the stream woke up, in log order.",
                ),
                FieldPlan(
                    "cursor",
                    2,
                    "cursor",
                    _STR,
                    comment="Resume from here to miss and repeat nothing.",
                ),
            ],
            comment="Events, batched: the first batch of a stream is empty and says it is live.",
        ),
    ]
    for index, plan in enumerate(messages):
        add_message(file, plan, index)
    service = file.service.add(name="Events")
    service.method.add(
        name="Subscribe",
        input_type=f".{PACKAGE}.SubscribeRequest",
        output_type=f".{PACKAGE}.EventBatch",
        server_streaming=True,
    )
    file.source_code_info.location.add(
        path=[6, 0],
        leading_comments=" The event log of a polyport node: live, resumable, batched.",
    )
    file.source_code_info.location.add(
        path=[6, 0, 2, 0],
        leading_comments=" Events of some channels, from a cursor or from now on.",
    )
    return file


_SMALL = [bytes((n,)) for n in range(0x80)]
#: Field 3 (offset) under 128, by its value; none for 0.
_OFFSETS = [b""] + [b"\x18" + _SMALL[n] for n in range(1, 0x80)]
#: Field 3 (offset) from 128 up: its tag and the first byte of its varint, by ``offset & 0x7F``.
_OFFSET_LOWS = [bytes((0x18, n | 0x80)) for n in range(0x80)]
#: The last two digits of a number from 100 up, by ``number % 100``.
_PAIRS = [b"%02d" % n for n in range(100)]
#: Tag and length by length under 16 KiB, made on first use (see :func:`_head`): field 7
#: (data), none when it is empty, and field 1 of a batch (the framed ``Event``).
_DATA_HEADS: list[bytes | None] = [None] * 0x4000
_FRAME_HEADS: list[bytes | None] = [None] * 0x4000
for _n in range(0x80):
    _DATA_HEADS[_n] = b"\x3a" + _SMALL[_n] if _n else b""
    _FRAME_HEADS[_n] = b"\x0a" + _SMALL[_n]
del _n


def _varint(value: int) -> bytes:
    if value < 0x80:
        if value >= 0:
            return _SMALL[value]
        value += 1 << 64  # int64: two's complement, ten bytes
    elif value < 0x4000:  # a length under 16 KiB: two bytes, without the loop
        return bytes(((value & 0x7F) | 0x80, value >> 7))
    # Longer ones are rare: frames keep offsets' varints and the heads of lengths.
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _head(heads: list[bytes | None], tag: bytes, size: int) -> bytes:
    """``tag`` and the varint ``size``, kept in ``heads`` under 16 KiB."""
    head = tag + _varint(size)
    if size < len(heads):
        heads[size] = head
    return head


def _text(tag: bytes, text: str) -> bytes:
    """A string field, or nothing for the empty string (proto3's default)."""
    data = text.encode()
    return tag + _varint(len(data)) + data if data else b""


class _Shared(NamedTuple):
    """What :meth:`EventStream.frames` encoded for the events before, and from what."""

    channel: str | None
    channel_field: bytes
    epoch: str | None
    type: str | None
    heads: list[bytes]
    kinds: bytes  # fields 4 and 5: epoch and type
    time: float | None
    stamp: bytes  # field 6
    seconds: int  # what the Timestamp refilled for field 6 holds as its seconds
    hundreds: int  # offset // 100 of the last offset from 128 up, -1 for none...
    id_head: bytes  # ...and field 1 up to that offset's last two digits
    high: int  # offset >> 7 of the last offset from 128 up, -1 for none...
    offset_tail: bytes  # ...and the bytes of its varint after the first


class EventStream:
    """Serves ``Subscribe`` from the node's event hub."""

    def __init__(self, runtime: Runtime, pool: descriptor_pool.DescriptorPool) -> None:
        self.runtime = runtime
        self.request_class: Any = message_factory.GetMessageClass(
            pool.FindMessageTypeByName(f"{PACKAGE}.SubscribeRequest")
        )
        self.event_class: Any = message_factory.GetMessageClass(
            pool.FindMessageTypeByName(f"{PACKAGE}.Event")
        )
        # What the events before had as a rule, encoded once (see frames): channel,
        # epoch and type, and time; nothing yet.
        self._shared: _Shared = _Shared(
            None, b"", None, None, [], b"", None, b"", 0, -1, b"", -1, b""
        )
        self._clock: Any = self.event_class().time  # a Timestamp, refilled for each time
        self.subscriptions: set[Subscription] = set()

    def close(self) -> None:
        """End every stream (the node is stopping)."""
        for subscription in list(self.subscriptions):
            subscription.close()

    def event_bytes(self, event: Event) -> bytes:
        """The event as an ``Event`` message, framed as item 1 of a batch; encoded once."""
        return self.frames([event])[0]

    def frames(self, events: list[Event]) -> list[bytes]:
        """Each event as an ``Event`` message framed as item 1 of a batch; each encoded once.

        The bytes are written here, as protobuf writes them: fields in number
        order, proto3's defaults left out (the tests compare them with upb's).
        Channel, epoch, type and time are those of the event before as a rule
        (a batch publish gives its events one time), and are encoded only when
        they differ. So are all but the ends of the id's digits and of the
        offset's varint: offsets count up, and those change once in 100 and
        128 events. An event costs its last digits, its offset's first byte
        and its data. Filling and serialising a reused upb ``Event`` cost more;
        only a time that changes goes through upb, as a ``Timestamp``.
        """
        out: list[bytes] = []
        append = out.append
        shared = self._shared
        channel, channel_field, epoch, type_, heads, kinds, moment, stamp, seconds = shared[:9]
        hundreds, id_head, high, offset_tail = shared[9:]
        fixed = kinds + stamp  # fields 4 to 6
        clock = self._clock
        data_heads, frame_heads = _DATA_HEADS, _FRAME_HEADS
        try:
            for event in events:
                wire = event.wire
                framed = wire.get("grpc")
                if framed is None:
                    # Each part is noted with what it was made from only once made.
                    if event.channel is not channel:
                        channel_field = _text(b"\x12", event.channel)
                        channel = event.channel
                    if event.epoch is not epoch or event.type is not type_:
                        head = event.epoch.encode() + b":"
                        # Field 1, the id "epoch:offset", up to its digits: by their count.
                        heads = [b"\x0a" + _varint(len(head) + n) + head for n in range(21)]
                        kinds = _text(b"\x22", event.epoch) + _text(b"\x2a", event.type)
                        epoch, type_ = event.epoch, event.type
                        fixed = kinds + stamp
                        hundreds = -1  # the id's head is made from heads
                    if event.time != moment:
                        # upb writes the Timestamp: fewer instructions than Python here.
                        whole = int(event.time)
                        if whole > event.time:  # before 1970: the seconds round down
                            whole -= 1
                        if whole != seconds:
                            clock.seconds = whole
                            seconds = whole
                        clock.nanos = int((event.time - whole) * 1e9)
                        inner = clock.SerializeToString()
                        stamp = b"\x32" + _SMALL[len(inner)] + inner
                        moment = event.time
                        fixed = kinds + stamp
                    offset = event.offset
                    data = event.data
                    size = len(data)
                    data_head = data_heads[size] if size < 0x4000 else None
                    if data_head is None:
                        data_head = _head(data_heads, b"\x3a", size)
                    if offset >= 0x80:
                        if offset // 100 != hundreds:
                            digits = b"%d" % (offset // 100)
                            id_head = heads[len(digits) + 2] + digits
                            hundreds = offset // 100
                        if offset >> 7 != high:
                            # A varint after its first byte is the varint of value >> 7.
                            offset_tail = _varint(offset >> 7)
                            high = offset >> 7
                        body = b"".join(
                            (
                                id_head,
                                _PAIRS[offset % 100],
                                channel_field,
                                _OFFSET_LOWS[offset & 0x7F],
                                offset_tail,
                                fixed,
                                data_head,
                                data,
                            )
                        )
                    else:
                        digits = b"%d" % offset
                        body = b"".join(
                            (
                                heads[len(digits)],
                                digits,
                                channel_field,
                                # int64: a negative offset takes ten bytes
                                _OFFSETS[offset] if offset >= 0 else b"\x18" + _varint(offset),
                                fixed,
                                data_head,
                                data,
                            )
                        )
                    size = len(body)
                    frame_head = frame_heads[size] if size < 0x4000 else None
                    if frame_head is None:
                        frame_head = _head(frame_heads, b"\x0a", size)
                    framed = wire["grpc"] = frame_head + body
                append(framed)
        finally:
            # Even after an error: the reused Timestamp holds the seconds noted.
            self._shared = _Shared(
                channel,
                channel_field,
                epoch,
                type_,
                heads,
                kinds,
                moment,
                stamp,
                seconds,
                hundreds,
                id_head,
                high,
                offset_tail,
            )
        return out

    def batch_bytes(self, events: list[Event], cursor: str) -> bytes:
        encoded = cursor.encode()
        tail = b"\x12" + _varint(len(encoded)) + encoded
        if not events:
            return tail
        return b"".join(self.frames(events)) + tail

    async def subscribe(self, request: bytes, context: Any) -> AsyncIterator[bytes]:
        subscription: Subscription | None = None
        try:
            try:
                message = self.request_class.FromString(request)
            except DecodeError:
                raise InvalidArgument(
                    f"the request is not a valid {PACKAGE}.SubscribeRequest", unparseable=True
                ) from None
            caller = caller_of(context)
            patterns = parse_patterns(message.channels)
            types = self.runtime.dispatcher.admit_subscribe(patterns, caller)
            limit = message.max_batch or DEFAULT_BATCH
            if not 1 <= limit <= MAX_BATCH:
                raise InvalidArgument(
                    f"max_batch must be from 1 to {MAX_BATCH}",
                    details=[{"field": "max_batch", "message": f"must be 1 to {MAX_BATCH}"}],
                )
            subscription = await self.runtime.hub.subscribe(
                patterns, after=message.after or "now", types=types
            )
            self.subscriptions.add(subscription)
            yield self.batch_bytes([], subscription.cursor)
            while True:
                events = await subscription.batch(limit)
                if not events:
                    return  # closed: the node is stopping
                yield self.batch_bytes(events, subscription.cursor)
        except ServiceError as exc:
            await abort(context, exc)
        finally:
            if subscription is not None:
                subscription.close()
                self.subscriptions.discard(subscription)

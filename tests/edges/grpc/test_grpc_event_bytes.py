"""The ``Event`` bytes of the events stream: written by hand, exactly as protobuf writes them."""

from __future__ import annotations

from typing import Any, cast

import pytest
from google.protobuf import descriptor_pool, message_factory, timestamp_pb2

from polyport.core.events import Event
from polyport.edges.grpc.events import PACKAGE, EventStream, events_file


@pytest.fixture
def pool() -> descriptor_pool.DescriptorPool:
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(timestamp_pb2.DESCRIPTOR.serialized_pb)
    pool.Add(events_file())
    return pool


def events() -> list[Event]:
    """Events whose shared parts (channel, epoch, type, time) change, stay, and come back."""
    first = Event(
        "orders/created", 7, "abcdefghij", 12, "orders.created", 1795847414.25, b'{"id":1}'
    )
    same = first.channel, first.epoch, first.type
    return [
        first,
        Event("a", 1, "zzzzzzzzzz", 13, "t", 1795847415.0, b""),  # nanos 0, no data
        Event("c/" + "x" * 200, 300, "k" * 10, 14, "long", 1.5, b'"' + b"y" * 300 + b'"'),
        Event(same[0], 8, same[1], 15, same[2], 1795847416.5, b'{"id":2}'),
        Event(same[0], 9, same[1], 16, "orders.paid", 1795847416.5, b'{"id":3}'),  # same time
        Event(same[0], 10, "bcdefghijk", 17, same[2], 1795847418.0, b'{"id":4}'),
        Event("", 11, same[1], 18, "", 1795847419.0, b"{}"),  # empty: proto3's default
        # Equal to the event before's channel, epoch and type, but other strings.
        Event("".join(["orders/", "created"]), 12, "abcdefghi" + "j", 19, same[2], 0.0, b"1"),
        Event(same[0], 0, same[1], 20, same[2], -1.25, b"2"),  # offset 0, before 1970
        # The offset's varint at each of its lengths, and lengths above 127 and 16 KiB.
        Event(same[0], 127, same[1], 21, same[2], 2.0, b"x" * 127),
        Event(same[0], 128, same[1], 22, same[2], 2.0, b"x" * 128),
        Event(same[0], 16_384, same[1], 23, same[2], 2.0, b'"' + b"z" * 20_000 + b'"'),
        Event(same[0], 2_097_152, same[1], 24, same[2], 2.0, b"3"),
        Event(same[0], 2**40, same[1], 25, same[2], 2.0, b"4"),
        Event(same[0], 16_383, same[1], 26, same[2], 2.0, b"5"),
        Event(same[0], 2_097_151, same[1], 27, same[2], 2.0, b"6"),
        Event(same[0], -5, same[1], 28, same[2], 2.0, b"7"),  # int64: ten bytes
    ]


def fresh(stream: EventStream, event: Event) -> Any:
    """What upb makes of the event, from a new message."""
    seconds = int(event.time // 1)
    return stream.event_class(
        id=event.id,
        channel=event.channel,
        offset=event.offset,
        epoch=event.epoch,
        type=event.type,
        time={"seconds": seconds, "nanos": int((event.time - seconds) * 1e9)},
        data=event.data,
    )


def test_each_event_encodes_as_protobuf_would(pool: descriptor_pool.DescriptorPool) -> None:
    """Event by event, nothing carries over from the event before."""
    stream = EventStream(cast(Any, None), pool)
    batch = message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{PACKAGE}.EventBatch"))
    for event in events():
        expected = fresh(stream, event)
        framed = stream.event_bytes(event)
        assert batch.FromString(framed).events[0] == expected
        assert framed.endswith(expected.SerializeToString())
        assert stream.event_bytes(event) is framed  # encoded once


def test_a_batch_encodes_as_protobuf_would(pool: descriptor_pool.DescriptorPool) -> None:
    """A whole batch, some of it encoded before: upb's bytes, and the cursor last."""
    stream = EventStream(cast(Any, None), pool)
    batch_class = message_factory.GetMessageClass(
        pool.FindMessageTypeByName(f"{PACKAGE}.EventBatch")
    )
    some = events()
    earlier = stream.event_bytes(some[5])
    raw = stream.batch_bytes(some, "abcdefghij@25")
    expected = batch_class(events=[fresh(stream, e) for e in some], cursor="abcdefghij@25")
    assert raw == expected.SerializeToString()
    assert some[5].wire["grpc"] is earlier
    assert stream.batch_bytes([], "x@0") == batch_class(cursor="x@0").SerializeToString()


def test_an_event_that_cannot_be_encoded_leaves_the_next_ones_right(
    pool: descriptor_pool.DescriptorPool,
) -> None:
    """What failed is not noted as encoded: the events after it get their own bytes."""
    stream = EventStream(cast(Any, None), pool)
    batch = message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{PACKAGE}.EventBatch"))
    some = events()
    stream.event_bytes(some[0])
    first = some[0]
    for bad, error in [
        (Event("\ud800", 1, first.epoch, 1, first.type, 5.5, b"x"), UnicodeEncodeError),
        (Event(first.channel, 1, "\ud800", 1, first.type, 5.5, b"x"), UnicodeEncodeError),
        (Event(first.channel, 1, first.epoch, 1, first.type, 1e30, b"x"), ValueError),
        (Event(first.channel, 1, first.epoch, 1, first.type, float("inf"), b"x"), OverflowError),
    ]:
        # Another time (another second, too), then the event that fails.
        with pytest.raises(error):
            stream.batch_bytes([some[3], bad], "c")
        assert "grpc" not in bad.wire
        with pytest.raises(error):  # again: nothing of it was noted as made
            stream.event_bytes(bad)
        # The first event's second, channel, epoch and type again, with another fraction.
        probe = Event(first.channel, 99, first.epoch, 99, first.type, first.time + 0.5, b"p")
        assert stream.event_bytes(probe).endswith(fresh(stream, probe).SerializeToString())
    for event in [*some, first]:
        expected = fresh(stream, event)
        assert batch.FromString(stream.event_bytes(event)).events[0] == expected
        assert stream.event_bytes(event).endswith(expected.SerializeToString())


def test_runs_of_offsets_encode_as_protobuf_would(pool: descriptor_pool.DescriptorPool) -> None:
    """Offsets counting up across 100, 128 and their multiples, as a channel gives them.

    The id's leading digits and the offset's varint after its first byte are
    reused while they stay the same; another epoch or type in the middle of a
    hundred, data around 128 bytes and 16 KiB, and a time per event do not
    carry over wrong bytes.
    """
    stream = EventStream(cast(Any, None), pool)
    batch_class = message_factory.GetMessageClass(
        pool.FindMessageTypeByName(f"{PACKAGE}.EventBatch")
    )
    sizes = [0, 1, 126, 127, 128, 129, 300, 16_380, 16_383, 16_384, 20_000]
    some = []
    for offset in [*range(90, 140), *range(16_370, 16_400), *range(2_097_140, 2_097_160), 10**12]:
        epoch, type_ = "abcdefghij", "ticks.tick"
        if offset % 7 == 0:
            epoch = "bcdefghijk"  # another epoch for one event, then the first again
        if offset % 11 == 0:
            type_ = "ticks.other"
        data = b"d" * sizes[offset % len(sizes)]
        some.append(Event("ticks/a", offset, epoch, offset, type_, 1795847414.0 + offset, data))
    # Twice, on a fresh stream: the first pass fills the tables of lengths.
    for _ in range(2):
        for event in some:
            event.wire.clear()
        raw = stream.batch_bytes(some, "c@1")
        expected = batch_class(events=[fresh(stream, e) for e in some], cursor="c@1")
        assert raw == expected.SerializeToString()
        stream = EventStream(cast(Any, None), pool)
    # One by one, each after a different one: nothing is reused wrongly either way.
    for event in [*reversed(some), *some[::3]]:
        event.wire.clear()
        assert stream.event_bytes(event).endswith(fresh(stream, event).SerializeToString())

"""The ``Event`` bytes of the events stream: what protobuf itself writes, event after event."""

from __future__ import annotations

from typing import Any, cast

from google.protobuf import descriptor_pool, message_factory, timestamp_pb2

from polyport.core.events import Event
from polyport.edges.grpc.events import PACKAGE, EventStream, events_file


def test_each_event_encodes_as_a_fresh_message_would() -> None:
    """The reused message carries nothing over from the event before."""
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(timestamp_pb2.DESCRIPTOR.serialized_pb)
    pool.Add(events_file())
    stream = EventStream(cast(Any, None), pool)
    batch = message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{PACKAGE}.EventBatch"))
    events = [
        Event("orders/created", 7, "abcdefghij", 12, "orders.created", 1795847414.25, b'{"id":1}'),
        Event("a", 1, "zzzzzzzzzz", 13, "t", 1795847415.0, b""),  # nanos 0, no data
        Event("c/" + "x" * 200, 300, "k" * 10, 14, "long", 1.5, b'"' + b"y" * 300 + b'"'),
    ]
    # Channel, epoch and type are set only when they differ from the event before
    # (compared by identity): the same strings again, one of them changed, then back.
    first = events[0]
    events += [
        Event(first.channel, 8, first.epoch, 15, first.type, 1795847416.5, b'{"id":2}'),
        Event(first.channel, 9, first.epoch, 16, "orders.paid", 1795847417.0, b'{"id":3}'),
        Event(first.channel, 10, "bcdefghijk", 17, first.type, 1795847418.0, b'{"id":4}'),
        Event("", 11, first.epoch, 18, "", 1795847419.0, b"{}"),  # empty: proto3's default
        Event(first.channel, 12, first.epoch, 19, first.type, 1795847420.0, b'{"id":5}'),
        # Above 16 KiB: the length takes three bytes.
        Event(first.channel, 13, first.epoch, 20, first.type, 2.0, b'"' + b"z" * 20_000 + b'"'),
    ]
    for event in events:
        expected = stream.event_class(
            id=event.id,
            channel=event.channel,
            offset=event.offset,
            epoch=event.epoch,
            type=event.type,
            time={"seconds": int(event.time), "nanos": int((event.time % 1) * 1e9)},
            data=event.data,
        )
        framed = stream.event_bytes(event)
        assert batch.FromString(framed).events[0] == expected
        assert framed.endswith(expected.SerializeToString())
        assert stream.event_bytes(event) is framed  # encoded once

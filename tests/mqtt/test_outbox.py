"""The outbox's delivery path: a batch held and written once, packets as put() makes them."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from polyport.core.events import Event
from polyport.edges.mqtt.codec import encode_publish
from polyport.edges.mqtt.outbound import HOLD_BYTES, Outbox, event_parts
from polyport.edges.mqtt.packets import V5, V311, PacketType


class Transport:
    def abort(self) -> None: ...

    def get_write_buffer_size(self) -> int:
        return 0


class Writer:
    """A PacketWriter that keeps each write."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.transport = Transport()

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return False

    def close(self) -> None: ...

    def can_write_eof(self) -> bool:
        return False

    def write_eof(self) -> None: ...

    async def wait_closed(self) -> None: ...

    async def drain(self) -> None: ...

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


def event(seq: int, size: int = 10) -> Event:
    data = b'{"n":"' + b"x" * size + b'"}'
    return Event("bench/t", seq, "e1", seq, "bench.tick", 1.0, data)


def outbox(level: int = V5, window: int = 4, **kw: Any) -> tuple[Outbox, Writer]:
    writer = Writer()
    return Outbox(writer, level, window=window, max_packet=None, send_timeout=1, **kw), writer


@pytest.mark.parametrize(("level", "qos"), [(V5, 0), (V5, 1), (V311, 0), (V311, 1)])
def test_a_held_batch_is_one_write_of_the_same_bytes(level: int, qos: int) -> None:
    held, writer = outbox(level, window=10)
    one, reference = outbox(level, window=10)

    async def run() -> None:
        for seq in range(1, 6):
            await held.ready(qos)
            assert held.deliver(event(seq), qos, "f", seq, retain=True, hold=True)
            topic, tail = event_parts(event(seq), level)
            await one.ready(qos)
            one.put(topic, tail, qos, "f", seq, retain=True)
        assert writer.writes == []
        await held.drain()

    asyncio.run(run())
    assert writer.writes == [b"".join(reference.writes)]
    assert held.inflight == one.inflight


def test_the_fixed_part_is_encoded_once_per_event() -> None:
    shared = event(1)
    first, a = outbox()
    second, b = outbox()
    first.deliver(shared, 1, "f", 1)
    second.deliver(shared, 1, "f", 1)
    assert a.writes == b.writes  # the same packet id 1 in both
    topic, tail = event_parts(shared, V5)
    assert a.writes == [encode_publish(topic, tail, qos=1, packet_id=1)]
    assert sum(key.startswith("mqtt-head-") for key in shared.wire) == 1


def test_held_packets_go_out_before_waiting_for_a_slot() -> None:
    box, writer = outbox(window=2)

    async def run() -> None:
        for seq in (1, 2):
            await box.ready(1)
            box.deliver(event(seq), 1, "f", seq, hold=True)
        assert writer.writes == []
        waiting = asyncio.create_task(box.ready(1))
        await asyncio.sleep(0)
        assert len(writer.writes) == 1  # the client can see them, and acknowledge one
        box.acked(PacketType.PUBACK, 1, 0)
        await waiting

    asyncio.run(run())


def test_another_write_comes_after_what_is_held() -> None:
    box, writer = outbox()
    box.deliver(event(1), 0, "f", 1, hold=True)
    box.write(b"\xd0\x00")
    assert writer.writes[1] == b"\xd0\x00"
    assert writer.writes[0].startswith(b"\x30")


def test_holding_stops_at_hold_bytes() -> None:
    box, writer = outbox()
    seq = 0
    while not box.held_full:
        seq += 1
        box.deliver(event(seq, size=1000), 0, "f", seq, hold=True)
    assert writer.writes == []
    box.flush()
    assert HOLD_BYTES <= len(writer.writes[0]) < HOLD_BYTES + 1200


def test_expiry_alias_and_subscription_id_take_the_general_path() -> None:
    box, writer = outbox(alias_maximum=4)
    reference, ref_writer = outbox(alias_maximum=4)
    box.deliver(event(1), 1, "f", 1, subscription_id=7, hold=True)
    box.deliver(event(2), 1, "f", 2, subscription_id=7, hold=True)
    box.flush()
    for seq in (1, 2):
        topic, tail = event_parts(event(seq), V5)
        reference.put(topic, tail, 1, "f", seq, subscription_id=7)
    assert writer.writes == [b"".join(ref_writer.writes)]

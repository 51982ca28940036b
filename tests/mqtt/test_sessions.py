"""Persistent sessions: subscriptions kept, missed events resumed from the event log."""

from __future__ import annotations

import json
import queue
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from tests.mqtt.clients import V5, V311, Paho, paho
from tests.mqtt.conftest import node_settings
from tests.mqtt.service import TemperatureEvent, monitoring
from tests.mqtt.wire import connect_packet, dial

from polyport.edges.mqtt.codec import SESSION_EXPIRY, FrameReader, frame, properties, text
from polyport.testing import RunningNode, serve_in_thread

FILTER = "sensors/+/temperature"


def publish(node: RunningNode, *celsius: float, sensor: str = "s1") -> None:
    for value in celsius:
        node.call(TemperatureEvent.publish(TemperatureEvent.model(sensor=sensor, celsius=value)))


def received(client: Paho, count: int) -> list[float]:
    return [json.loads(client.message().payload)["celsius"] for _ in range(count)]


def away(port: int, version: int, client_id: str, expiry: int | None = None) -> None:
    """Connect with a persistent session, subscribe, and leave (a normal DISCONNECT)."""
    client, code = paho(port, version, client_id=client_id, clean=False, expiry=expiry)
    assert code == 0
    assert client.subscribe(FILTER, 1) == [1]
    client.close()


@pytest.mark.parametrize("version", [V5, V311])
def test_a_session_resumes_with_every_event_missed(dev: RunningNode, version: int) -> None:
    """Back with Clean Start 0: Session Present 1, subscriptions kept, missed events in order."""
    port = dev.mqtt_port or 0
    away(port, version, "dash", expiry=300)
    publish(dev, *range(20))  # more than a QoS window: history, not a queue
    client, code = paho(port, version, client_id="dash", clean=False, expiry=300)
    try:
        assert code == 0
        assert client.session_present
        assert received(client, 20) == list(range(20))
        publish(dev, 99)
        assert received(client, 1) == [99]
        with pytest.raises(queue.Empty):
            client.message(timeout=0.3)
    finally:
        client.close()


@pytest.mark.parametrize("version", [V5, V311])
def test_a_clean_start_ends_the_session(dev: RunningNode, version: int) -> None:
    """Clean Start 1 discards what was kept: Session Present 0, no subscriptions, no events."""
    port = dev.mqtt_port or 0
    away(port, version, "dash", expiry=300)
    publish(dev, 1.0)
    client, _ = paho(port, version, client_id="dash", clean=True)
    try:
        assert not client.session_present
        with pytest.raises(queue.Empty):
            client.message(timeout=0.3)
    finally:
        client.close()
    again, _ = paho(port, version, client_id="dash", clean=False, expiry=300)
    try:
        assert not again.session_present
    finally:
        again.close()


def test_a_session_with_expiry_zero_ends_with_its_connection(dev: RunningNode) -> None:
    """MQTT 5 with Clean Start 0 and no Session Expiry Interval keeps nothing."""
    port = dev.mqtt_port or 0
    away(port, V5, "dash")
    client, _ = paho(port, V5, client_id="dash", clean=False)
    try:
        assert not client.session_present
    finally:
        client.close()


@pytest.fixture
def short(tmp_path: Path) -> Iterator[RunningNode]:
    """Sessions last at most 1 s; at most 2 are kept; history holds 3 events per channel."""
    settings = node_settings(
        tmp_path,
        dev=True,
        mqtt={"port": 0, "max_session_expiry": 1, "max_sessions": 2},
        history={"max_events": 3},
    )
    with serve_in_thread(monitoring, settings) as node:
        yield node


@pytest.mark.parametrize("version", [V5, V311])
def test_sessions_expire(short: RunningNode, version: int) -> None:
    """A session is gone once its expiry passed (3.1.1 ones too: mqtt.max_session_expiry)."""
    port = short.mqtt_port or 0
    away(port, version, "dash", expiry=0xFFFFFFFF)
    time.sleep(1.3)
    client, _ = paho(port, version, client_id="dash", clean=False, expiry=0xFFFFFFFF)
    try:
        assert not client.session_present
        if version == V5:  # the expiry granted is announced when it is not the one asked
            assert client.connack_properties.SessionExpiryInterval == 1
    finally:
        client.close()


def test_at_most_max_sessions_are_kept(short: RunningNode) -> None:
    """One session more than mqtt.max_sessions forgets the one that expires first."""
    port = short.mqtt_port or 0
    for name in ("a", "b", "c"):
        away(port, V5, name, expiry=1)
    present = {}
    for name in ("a", "b", "c"):
        client, _ = paho(port, V5, client_id=name, clean=False)
        present[name] = client.session_present
        client.close()
    assert present == {"a": False, "b": True, "c": True}


@pytest.mark.parametrize("version", [V5, V311])
def test_a_gap_in_history_is_told(short: RunningNode, version: int) -> None:
    """Missed events history no longer holds: a PUBLISH on $polyport/gaps, never silence."""
    port = short.mqtt_port or 0
    away(port, version, "dash", expiry=60)
    publish(short, *range(10))  # history keeps 3 per channel
    client, _ = paho(port, version, client_id="dash", clean=False, expiry=60)
    try:
        assert client.session_present
        notice = client.message()
        assert notice.topic == "$polyport/gaps"
        body = json.loads(notice.payload)
        assert body["filter"] == FILTER
        assert body["latest"]
        if version == V5:
            assert "$polyport/gaps" in client.connack_properties.ReasonString
        publish(short, 42)  # the session goes on from now
        assert received(client, 1) == [42]
    finally:
        client.close()


def _next(sock: socket.socket, reader: FrameReader) -> tuple[int, bytes]:
    """The next packet: its first byte and its body."""
    while True:
        got = reader.next()
        if got is not None:
            return got
        reader.feed(sock.recv(4096))


def _publish_v5(body: bytes) -> tuple[str, bytes, bytes]:
    """A QoS 1/2 MQTT 5 PUBLISH body: topic, packet id, payload."""
    size = struct.unpack("!H", body[:2])[0]
    topic, rest = body[2 : 2 + size].decode(), body[2 + size :]
    packet_id, rest = rest[:2], rest[2:]
    length, shift, used = 0, 0, 0
    while True:  # the properties' length, a variable byte integer
        byte = rest[used]
        length |= (byte & 0x7F) << shift
        shift, used = shift + 7, used + 1
        if not byte & 0x80:
            break
    return topic, packet_id, rest[used + length :]


def test_unacknowledged_messages_are_sent_again_with_dup(dev: RunningNode) -> None:
    """A QoS 1 PUBLISH not acknowledged before the connection dropped comes again: same
    packet id, DUP set, before anything else."""
    port = dev.mqtt_port or 0
    hello = connect_packet(5, "raw-dup", clean=False, props=[(SESSION_EXPIRY, 60)])
    with dial(port) as sock:
        reader = FrameReader(65536)
        sock.sendall(hello)
        assert _next(sock, reader)[0] == 0x20
        subscribe = struct.pack("!H", 7) + properties([]) + text(FILTER) + b"\x01"
        sock.sendall(frame(0x82, subscribe))
        assert _next(sock, reader)[0] == 0x90
        publish(dev, 5.0)
        first, body = _next(sock, reader)
        assert first == 0x32  # PUBLISH, QoS 1, no DUP
        _, packet_id, payload = _publish_v5(body)
        # Gone without acknowledging it.
    with dial(port) as sock:
        reader = FrameReader(65536)
        sock.sendall(hello)
        first, connack = _next(sock, reader)
        assert first == 0x20 and connack[0] == 1  # Session Present
        first, body = _next(sock, reader)
        assert first == 0x3A  # PUBLISH, QoS 1, DUP
        assert _publish_v5(body) == ("sensors/s1/temperature", packet_id, payload)
        assert orjson.loads(payload)["celsius"] == 5.0
        sock.sendall(frame(0x40, packet_id))  # PUBACK: settled now
        sock.sendall(b"\xe0\x00")


def test_a_session_survives_a_node_restart(tmp_path: Path) -> None:
    """The session's cursor is in the records store: a restarted node resumes it."""
    settings = node_settings(tmp_path, dev=True)
    with serve_in_thread(monitoring, settings) as node:
        port = node.mqtt_port or 0
        away(port, V5, "dash", expiry=300)
        publish(node, 1.0, 2.0)
    with serve_in_thread(monitoring, settings) as node:
        publish(node, 3.0)
        client, _ = paho(node.mqtt_port or 0, V5, client_id="dash", clean=False, expiry=300)
        try:
            assert client.session_present
            assert received(client, 3) == [1.0, 2.0, 3.0]
        finally:
            client.close()


async def test_expired_sessions_are_swept_from_memory_and_records() -> None:
    """The sweep forgets expired sessions in both places, and nothing else."""
    from polyport.backends.memory.records import MemoryRecordStore
    from polyport.edges.mqtt.sessions import PREFIX, Session, SessionStore

    records = MemoryRecordStore()
    store = SessionStore(records, limit=10)
    await store.open()
    try:
        await store.keep(Session("me", "short", 1, "e"), now=1000.0)
        await store.keep(Session("me", "long", 100, "e"), now=1000.0)
        assert await store.sweep(now=1002.0) == 2  # one in memory, its record
        assert list(store.kept) == [Session("me", "long", 100, "e").key]
        assert len(await records.scan(PREFIX)) == 1
        assert await store.take("me", "short", 1002.0) is None
        assert await store.take("me", "long", 1002.0) is not None
    finally:
        await store.close()


def test_qos2_flows_resume_where_they_stood(dev: RunningNode) -> None:
    """QoS 2 across a reconnect: a PUBREL the client never completed is sent again, and a
    PUBLISH it sends again (DUP) after our PUBREC is not published twice."""
    port = dev.mqtt_port or 0
    hello = connect_packet(5, "raw-qos2", clean=False, props=[(SESSION_EXPIRY, 60)])
    topic = "sensors/q2/temperature"
    #: What our own subscription shows was published (not what is sent again, DUP).
    events: list[bytes] = []

    def expect(sock: socket.socket, reader: FrameReader, first: int) -> bytes:
        while True:
            got, body = _next(sock, reader)
            if got == first:
                return body
            assert got & 0xF0 == 0x30, hex(got)
            if not got & 0x08:
                events.append(_publish_v5(body)[2])

    with dial(port) as sock:
        reader = FrameReader(65536)
        sock.sendall(hello)
        expect(sock, reader, 0x20)
        sock.sendall(frame(0x82, struct.pack("!H", 7) + properties([]) + text(FILTER) + b"\x02"))
        expect(sock, reader, 0x90)
        publish(dev, 1.0, sensor="q2")
        _, ours, _ = _publish_v5(expect(sock, reader, 0x34))  # PUBLISH, QoS 2
        sock.sendall(frame(0x50, ours))  # PUBREC
        assert expect(sock, reader, 0x62) == ours  # PUBREL
        theirs = struct.pack("!H", 9)
        sent = frame(0x34, text(topic) + theirs + properties([]) + b'{"celsius": 2}')
        sock.sendall(sent)
        assert expect(sock, reader, 0x50) == theirs  # PUBREC: stored
        # Gone without PUBCOMP for ours, nor PUBREL for theirs.
    with dial(port) as sock:
        reader = FrameReader(65536)
        sock.sendall(hello)
        assert expect(sock, reader, 0x20)[0] == 1  # Session Present
        assert expect(sock, reader, 0x62) == ours  # PUBREL again
        sock.sendall(frame(0x70, ours))  # PUBCOMP
        sock.sendall(bytes((sent[0] | 0x08,)) + sent[1:])  # their PUBLISH again, DUP
        assert expect(sock, reader, 0x50) == theirs
        sock.sendall(frame(0x62, theirs))  # PUBREL
        assert expect(sock, reader, 0x70) == theirs  # PUBCOMP
        sock.settimeout(0.5)
        with pytest.raises(TimeoutError):
            expect(sock, reader, 0xFF)
    published = [orjson.loads(data) for data in events]
    assert published.count({"sensor": "q2", "celsius": 2.0}) == 1

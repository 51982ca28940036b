"""The MQTT codec against the mqtt5 reference (both ways), and fuzzed: MqttError or a packet,
never another exception, never a hang; and the live listener fuzzed the same way."""

from __future__ import annotations

import contextlib
import socket

import mqtt5
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.fuzz.harness import FUZZ
from tests.mqtt.wire import connect_packet, read_until_closed

from polyport.edges.mqtt import codec
from polyport.edges.mqtt.packets import V5, Connect, MqttError, PacketType, Publish, Subscribe
from polyport.testing import RunningNode


def one(raw: bytes, level: int = V5) -> object:
    reader = codec.FrameReader(1 << 20)
    reader.feed(raw)
    frame = reader.next()
    assert frame is not None and not reader.buffer
    return codec.decode(frame[0], frame[1], level)


def test_what_mqtt5_writes_we_read() -> None:
    """Client packets written by the reference decode to the same fields."""
    will = mqtt5.Will("w/t", payload=b"bye", qos=mqtt5.QoS.AT_LEAST_ONCE, will_delay_interval=5)
    connect = one(
        mqtt5.ConnectPacket(
            "dev", username="u", password=b"k", keep_alive=30, receive_max=7, will=will
        ).write()
    )
    assert isinstance(connect, Connect)
    assert (connect.client_id, connect.password, connect.keep_alive) == ("dev", b"k", 30)
    assert connect.receive_maximum == 7 and connect.will is not None
    assert (connect.will.topic, connect.will.payload, connect.will.delay) == ("w/t", b"bye", 5)
    publish = one(
        mqtt5.PublishPacket(
            "a/b", b"{}", qos=mqtt5.QoS.EXACTLY_ONCE, packet_id=9, user_properties=[("k", "v")]
        ).write()
    )
    assert isinstance(publish, Publish)
    assert (publish.topic, publish.qos, publish.packet_id) == ("a/b", 2, 9)
    assert publish.user_properties == (("k", "v"),)
    subscribe = one(
        mqtt5.SubscribePacket(
            3, [mqtt5.TopicFilter("a/#", max_qos=mqtt5.QoS.AT_LEAST_ONCE)]
        ).write()
    )
    assert isinstance(subscribe, Subscribe)
    assert [(t.filter, t.qos) for t in subscribe.topics] == [("a/#", 1)]


def test_what_we_write_mqtt5_reads() -> None:
    """Server packets written by the codec read back with the reference."""
    props = [(codec.RECEIVE_MAXIMUM, 64), (codec.RETAIN_AVAILABLE, 0)]
    connack, _ = mqtt5.read(memoryview(codec.encode_connack(V5, 0, props=props)))
    assert isinstance(connack, mqtt5.ConnAckPacket)
    assert connack.receive_max == 64 and not connack.retain_available
    ack, _ = mqtt5.read(memoryview(codec.encode_ack(V5, PacketType.PUBACK, 4, 0x99, "bad")))
    assert isinstance(ack, mqtt5.PubAckPacket)
    assert (ack.packet_id, int(ack.reason_code), ack.reason_str) == (4, 0x99, "bad")
    suback, _ = mqtt5.read(memoryview(codec.encode_suback(V5, 2, [1, 0x87])))
    assert isinstance(suback, mqtt5.SubAckPacket)
    assert [int(c) for c in suback.reason_codes] == [1, 0x87]
    tail = codec.properties([(codec.CONTENT_TYPE, "application/json")]) + b"{}"
    raw = codec.encode_publish(codec.text("a/b"), tail, qos=1, packet_id=5)
    publish, size = mqtt5.read(memoryview(raw))
    assert isinstance(publish, mqtt5.PublishPacket) and size == len(raw)
    assert (publish.topic, publish.payload, publish.packet_id) == ("a/b", b"{}", 5)
    assert publish.content_type == "application/json"


packets = st.one_of(
    st.binary(max_size=64),
    st.builds(
        lambda first, body: bytes((first,)) + codec.varint(len(body)) + body,
        st.integers(0, 255),
        st.binary(max_size=64),
    ),
)


@FUZZ
@given(raw=packets, level=st.sampled_from([4, 5]))
def test_the_decoder_raises_only_its_own_errors(raw: bytes, level: int) -> None:
    """Any bytes: whole packets, MqttError, or a wait for more — nothing else."""
    reader = codec.FrameReader(4096)
    reader.feed(raw)
    try:
        while (frame := reader.next()) is not None:
            codec.decode(frame[0], frame[1], level)
    except MqttError:
        pass


@settings(
    FUZZ,
    # One node for every example, on purpose: it must survive them all.
    suppress_health_check=[*FUZZ.suppress_health_check, HealthCheck.function_scoped_fixture],
)
@given(raw=packets, level=st.sampled_from([4, 5]))
def test_the_listener_survives_any_packet_after_connect(
    dev: RunningNode, raw: bytes, level: int
) -> None:
    """Fuzzed packets after CONNECT: the connection ends or goes on; the node answers a
    PINGREQ on a new connection right after."""
    with socket.create_connection(("127.0.0.1", dev.mqtt_port or 0), timeout=5) as sock:
        sock.sendall(connect_packet(level))
        assert sock.recv(4)[:1] == b"\x20"
        with contextlib.suppress(OSError):
            sock.sendall(raw)
        read_until_closed(sock, limit=0.05)
    with socket.create_connection(("127.0.0.1", dev.mqtt_port or 0), timeout=5) as sock:
        sock.sendall(connect_packet(5) + b"\xc0\x00")
        answer = b""
        while not answer.endswith(b"\xd0\x00"):
            chunk = sock.recv(64)
            assert chunk, "closed before PINGRESP"
            answer += chunk
        assert answer.startswith(b"\x20")

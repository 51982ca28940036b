"""The MQTT edge with paho-mqtt, MQTT 5 and 3.1.1: events both ways, QoS 0/1/2, rights."""

from __future__ import annotations

import json
import queue
import time

import pytest
from tests.mqtt.clients import V5, V311, paho, user_properties
from tests.mqtt.conftest import KEYS
from tests.mqtt.service import AlertEvent, TemperatureEvent
from tests.mqtt.wire import connect_packet, dial, read_until_closed

from polyport.testing import RunningNode


@pytest.mark.parametrize("qos", [0, 1, 2])
@pytest.mark.parametrize(("sub_version", "pub_version"), [(V5, V311), (V311, V5)])
def test_published_over_mqtt_received_over_mqtt(
    dev: RunningNode, qos: int, sub_version: int, pub_version: int
) -> None:
    """A PUBLISH to a template's topic is an event; subscribers get it at their QoS."""
    port = dev.mqtt_port or 0
    subscriber, _ = paho(port, sub_version)
    publisher, _ = paho(port, pub_version)
    try:
        assert subscriber.subscribe("sensors/+/temperature", qos) == [qos]
        info = publisher.publish("sensors/s1/temperature", json.dumps({"celsius": 21.5}), qos)
        assert info.rc == 0
        message = subscriber.message()
        assert message.topic == "sensors/s1/temperature"
        assert message.qos == qos
        assert json.loads(message.payload) == {"sensor": "s1", "celsius": 21.5}
        if sub_version == V5:
            props = user_properties(message)
            assert props["event-type"] == "sensors.temperature"
            assert props["event-id"].endswith(":1")
            assert message.properties.ContentType == "application/json"
            assert message.properties.PayloadFormatIndicator == 1
    finally:
        subscriber.close()
        publisher.close()


def test_events_of_the_service_reach_mqtt_subscribers(dev: RunningNode) -> None:
    """An event published by the service's own code arrives as PUBLISH; filters are channels."""
    port = dev.mqtt_port or 0
    client, _ = paho(port, V5)
    try:
        assert client.subscribe("alerts/#", 1) == [1]
        assert client.subscribe("sensors/s2/+", 2) == [2]
        dev.call(AlertEvent.publish(AlertEvent.model(level="high", text="too hot")))
        dev.call(TemperatureEvent.publish(TemperatureEvent.model(sensor="s1", celsius=1.0)))
        dev.call(TemperatureEvent.publish(TemperatureEvent.model(sensor="s2", celsius=2.0)))
        got = [client.message(), client.message()]
        assert sorted(m.topic for m in got) == ["alerts/high", "sensors/s2/temperature"]
        assert {m.topic: m.qos for m in got} == {"alerts/high": 1, "sensors/s2/temperature": 2}
    finally:
        client.close()


def test_unsubscribe_stops_the_events(dev: RunningNode) -> None:
    """After UNSUBSCRIBE (answered with UNSUBACK) no more events of that filter arrive."""
    port = dev.mqtt_port or 0
    client, _ = paho(port, V5)
    try:
        client.subscribe("alerts/+", 0)
        client.client.unsubscribe("alerts/+")
        time.sleep(0.3)
        dev.call(AlertEvent.publish(AlertEvent.model(level="low", text="x")))
        with pytest.raises(queue.Empty):
            client.message(timeout=0.5)
    finally:
        client.close()


def test_the_payload_may_repeat_the_topics_fields(dev: RunningNode) -> None:
    """A field the template names may be in the payload too, if it agrees (else 0x99, below)."""
    port = dev.mqtt_port or 0
    client, _ = paho(port, V5)
    try:
        client.subscribe("sensors/#", 1)
        ok = client.publish("sensors/s7/temperature", b'{"sensor": "s7", "celsius": 3}', 1)
        assert ok.rc == 0
        assert json.loads(client.message().payload)["sensor"] == "s7"
    finally:
        client.close()


def _puback_reason(port: int, password: str, topic: str, payload: bytes) -> int:
    """The reason code of the PUBACK a QoS 1 PUBLISH gets (paho keeps it from us)."""
    from tests.mqtt.wire import publish_packet

    with dial(port) as sock:
        sock.sendall(connect_packet(5, password=password))
        connack = sock.recv(64)
        assert connack[3] == 0, connack
        sock.sendall(publish_packet(5, topic, payload, qos=1))
        answer = sock.recv(256)
        assert answer[0] == 0x40, answer
        return answer[4] if answer[1] > 2 else 0


def test_publish_refusals_carry_reason_codes_on_mqtt5(secure: RunningNode) -> None:
    """0x99 payload invalid, 0x87 not authorized, 0x90 no such topic; nothing reaches readers."""
    port = secure.mqtt_port or 0
    reader, _ = paho(port, V5, password=KEYS["reader"][0])
    sensor = KEYS["sensor"][0]
    try:
        assert reader.subscribe("sensors/+/temperature", 1) == [1]
        cases = [
            (sensor, "sensors/s1/temperature", b'{"celsius": 999}', 0x99),
            (sensor, "sensors/s1/temperature", b"not json", 0x99),
            (sensor, "sensors/s1/temperature", b'{"sensor": "s2", "celsius": 1}', 0x99),
            (KEYS["reader"][0], "sensors/s1/temperature", b'{"celsius": 1}', 0x87),
            (sensor, "alerts/high", b'{"level": "high", "text": "x"}', 0x87),
            (sensor, "nowhere/at/all", b"{}", 0x90),
        ]
        for password, topic, payload, reason in cases:
            assert _puback_reason(port, password, topic, payload) == reason, topic
        assert _puback_reason(port, sensor, "sensors/s1/temperature", b'{"celsius": 5}') == 0
        message = reader.message()
        assert json.loads(message.payload) == {"sensor": "s1", "celsius": 5.0}
        assert reader.messages.empty()
    finally:
        reader.close()


def test_a_refused_publish_closes_an_mqtt311_connection(secure: RunningNode) -> None:
    """3.1.1 cannot say no to a PUBLISH: the connection is closed (3.3.5)."""
    port = secure.mqtt_port or 0
    client, code = paho(port, V311, password=KEYS["sensor"][0])
    assert code == 0
    client.client.publish("sensors/s1/temperature", b'{"celsius": 999}', 1)
    assert client.closed.wait(5)
    client.stop()


def test_connect_refusals(secure: RunningNode) -> None:
    """No password outside development mode: 0x87 / 5; a wrong key: 0x86 / 4."""
    port = secure.mqtt_port or 0
    assert paho(port, V5)[1] == 0x87
    assert paho(port, V5, password="wrong")[1] == 0x86
    for password, code in ((None, 5), ("wrong", 4)):
        with dial(port) as sock:
            sock.sendall(connect_packet(4, password=password))
            answer, closed = read_until_closed(sock)
            assert closed and answer == bytes((0x20, 2, 0, code))
    client, accepted = paho(port, V311, password=KEYS["reader"][0])
    assert accepted == 0
    client.close()


def test_subscribe_needs_read_rights(secure: RunningNode) -> None:
    """SUBACK 0x87 (3.1.1: 0x80) for channels the key may not read, shared or not; $SYS 0x8F."""
    port = secure.mqtt_port or 0
    nobody, _ = paho(port, V5, password=KEYS["nobody"][0])
    sensor, _ = paho(port, V311, password=KEYS["sensor"][0])
    try:
        assert nobody.subscribe("sensors/+/temperature", 1) == [0x87]
        assert nobody.subscribe("$share/g/sensors/#", 1) == [0x87]
        assert nobody.subscribe("$SYS/#", 0) == [0x8F]
        assert sensor.subscribe("alerts/+", 1) == [0x80]
        assert sensor.subscribe("sensors/+/temperature", 2) == [2]
    finally:
        nobody.close()
        sensor.close()


def test_a_client_id_taken_over(dev: RunningNode) -> None:
    """A second connection with the same client id ends the first (MQTT 5 reason 0x8E)."""
    port = dev.mqtt_port or 0
    first, _ = paho(port, V5, client_id="device-1")
    second, _ = paho(port, V5, client_id="device-1")
    try:
        assert first.closed.wait(5)
        assert int(first.disconnect_reason.value) == 0x8E
    finally:
        first.stop()
        second.close()

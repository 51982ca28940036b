"""MQTT 5 topic aliases both ways, and shared subscriptions ($share/group/filter)."""

from __future__ import annotations

import json
import queue

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from tests.mqtt.clients import V5, V311, Paho, paho
from tests.mqtt.service import TemperatureEvent

from polyport.testing import RunningNode


def publish(node: RunningNode, *celsius: float, sensor: str = "s1") -> None:
    for value in celsius:
        node.call(TemperatureEvent.publish(TemperatureEvent.model(sensor=sensor, celsius=value)))


def all_messages(client: Paho, wait: float = 0.5) -> list[float]:
    got = []
    while True:
        try:
            got.append(json.loads(client.message(timeout=wait).payload)["celsius"])
        except queue.Empty:
            return got


def aliased(alias: int) -> Properties:
    props = Properties(PacketTypes.PUBLISH)
    props.TopicAlias = alias
    return props


def test_a_client_sets_and_uses_topic_aliases(dev: RunningNode) -> None:
    """CONNACK announces Topic Alias Maximum; a PUBLISH sets an alias, the next uses it."""
    port = dev.mqtt_port or 0
    watcher, _ = paho(port, V5)
    sensor, _ = paho(port, V5)
    try:
        assert sensor.connack_properties.TopicAliasMaximum == 64
        watcher.subscribe("sensors/+/temperature", 1)
        for topic, payload in [
            ("sensors/s1/temperature", b'{"celsius": 1}'),
            ("", b'{"celsius": 2}'),
        ]:
            sensor.client.publish(topic, payload, 1, properties=aliased(3)).wait_for_publish(5)
        assert all_messages(watcher) == [1.0, 2.0]
    finally:
        watcher.close()
        sensor.close()


@pytest.mark.parametrize(
    ("topic", "alias", "reason"),
    [("sensors/s1/temperature", 65, 0x94), ("", 9, 0x82)],
    ids=["above the maximum", "never set"],
)
def test_a_bad_topic_alias_ends_the_connection(
    dev: RunningNode, topic: str, alias: int, reason: int
) -> None:
    """An alias above Topic Alias Maximum is 0x94; one never set is a protocol error."""
    client, _ = paho(dev.mqtt_port or 0, V5)
    client.client.publish(topic, b'{"celsius": 1}', 0, properties=aliased(alias))
    assert client.closed.wait(5)
    assert isinstance(client.disconnect_reason, ReasonCode)
    assert client.disconnect_reason.value == reason
    client.stop()


def test_the_node_uses_the_clients_topic_alias_maximum(dev: RunningNode) -> None:
    """With a Topic Alias Maximum in CONNECT, a topic comes once, then only its alias."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=V5, reconnect_on_failure=False)
    box = Paho(client)
    client.on_message = lambda c, u, m: box.messages.put(m)
    client.on_subscribe = lambda c, u, mid, codes, p: box.acks.put(codes)
    props = Properties(PacketTypes.CONNECT)
    props.TopicAliasMaximum = 1
    client.connect("127.0.0.1", dev.mqtt_port or 0, properties=props)
    client.loop_start()
    try:
        box.subscribe("sensors/+/temperature", 1)
        publish(dev, 1.0, 2.0)
        publish(dev, 3.0, sensor="s2")  # the one alias is taken: a plain topic
        got = [box.message() for _ in range(3)]
        seen = [(m.topic, getattr(m.properties, "TopicAlias", None)) for m in got]
        assert seen == [
            ("sensors/s1/temperature", 1),
            ("", 1),
            ("sensors/s2/temperature", None),
        ]
    finally:
        box.close()


@pytest.mark.parametrize("version", [V5, V311])
def test_a_shared_subscription_gives_each_event_to_one_member(
    dev: RunningNode, version: int
) -> None:
    """Each event to one member of the group (round robin), every event to each group and
    to plain subscribers; a member that leaves leaves the others all of them."""
    port = dev.mqtt_port or 0
    members = [paho(port, version)[0] for _ in range(3)]
    other, _ = paho(port, V5)
    plain, _ = paho(port, V5)
    try:
        for member in members:
            assert member.subscribe("$share/dash/sensors/+/temperature", 1) == [1]
        assert other.subscribe("$share/other/sensors/#", 0) == [0]
        plain.subscribe("sensors/+/temperature", 1)
        publish(dev, *range(9))
        shares = [all_messages(member) for member in members]
        assert sorted(x for share in shares for x in share) == list(range(9))
        assert [len(share) for share in shares] == [3, 3, 3]
        assert all_messages(other) == list(range(9))
        assert all_messages(plain) == list(range(9))
        members.pop().close()
        publish(dev, 10, 11)
        assert sorted(x for member in members for x in all_messages(member)) == [10, 11]
    finally:
        for client in [*members, other, plain]:
            client.close()


def test_a_shared_subscription_is_part_of_a_session(dev: RunningNode) -> None:
    """A persistent session resumes its shared subscription: the client rejoins its group."""
    port = dev.mqtt_port or 0
    first, _ = paho(port, V5, client_id="worker", clean=False, expiry=60)
    assert first.subscribe("$share/work/sensors/#", 1) == [1]
    first.close()
    again, _ = paho(port, V5, client_id="worker", clean=False, expiry=60)
    try:
        assert again.session_present
        publish(dev, 4.0)
        assert all_messages(again) == [4.0]
    finally:
        again.close()

"""Retained messages: a channel's last event, sent on SUBSCRIBE; retained PUBLISH; clearing."""

from __future__ import annotations

import json
import queue
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.subscribeoptions import SubscribeOptions
from tests.mqtt.clients import V5, V311, Paho, paho
from tests.mqtt.conftest import KEYS, node_settings
from tests.mqtt.service import TemperatureEvent, monitoring

from polyport.testing import RunningNode, serve_in_thread

FILTER = "sensors/+/temperature"


def publish(node: RunningNode, sensor: str, *celsius: float) -> None:
    for value in celsius:
        node.call(TemperatureEvent.publish(TemperatureEvent.model(sensor=sensor, celsius=value)))


def subscribe(client: Paho, topic: str, qos: int = 1, **options: object) -> None:
    client.client.subscribe(topic, options=SubscribeOptions(qos=qos, **options))
    client.acks.get(timeout=5)


def drain(client: Paho, wait: float = 0.4) -> list[mqtt.MQTTMessage]:
    """Every message that arrives within ``wait`` seconds of the last one."""
    got = []
    while True:
        try:
            got.append(client.message(timeout=wait))
        except queue.Empty:
            return got


def summary(messages: list[mqtt.MQTTMessage]) -> list[tuple[str, float, bool]]:
    return [(m.topic, json.loads(m.payload)["celsius"], bool(m.retain)) for m in messages]


@pytest.mark.parametrize("version", [V5, V311])
def test_a_subscribe_gets_the_last_event_of_each_channel(dev: RunningNode, version: int) -> None:
    """The retained message of a channel is its last event, with RETAIN 1; live ones have 0."""
    port = dev.mqtt_port or 0
    publish(dev, "s1", 1.0, 2.0)
    publish(dev, "s2", 3.0)
    client, _ = paho(port, version)
    try:
        assert client.subscribe(FILTER, 1) == [1]
        assert summary(drain(client)) == [
            ("sensors/s1/temperature", 2.0, True),
            ("sensors/s2/temperature", 3.0, True),
        ]
        publish(dev, "s1", 4.0)
        assert summary([client.message()]) == [("sensors/s1/temperature", 4.0, False)]
    finally:
        client.close()


def test_retain_handling_and_retain_as_published(dev: RunningNode) -> None:
    """Retain Handling 2 sends none, 1 only for a new subscription, 0 every time; Retain
    As Published keeps RETAIN 1 on live events (each was its channel's retained)."""
    port = dev.mqtt_port or 0
    publish(dev, "s1", 1.0)
    client, _ = paho(port, V5)
    try:
        subscribe(client, FILTER, retainHandling=2)
        assert drain(client) == []
        subscribe(client, "sensors/s1/+", retainHandling=1)
        assert len(drain(client)) == 1
        subscribe(client, "sensors/s1/+", retainHandling=1)  # not new: none
        assert drain(client) == []
        subscribe(client, "sensors/s1/+", retainHandling=0)
        assert len(drain(client)) == 1
        subscribe(client, "alerts/#", retainAsPublished=True)
        subscribe(client, "sensors/s2/temperature", retainAsPublished=True)
        publish(dev, "s2", 5.0)
        # One copy per matching filter: FILTER's without, the exact one's with RETAIN.
        assert sorted(summary(drain(client))) == [
            ("sensors/s2/temperature", 5.0, False),
            ("sensors/s2/temperature", 5.0, True),
        ]
    finally:
        client.close()


@pytest.mark.parametrize("version", [V5, V311])
def test_a_retained_publish_is_an_event_and_an_empty_one_clears(
    dev: RunningNode, version: int
) -> None:
    """PUBLISH retain=1 publishes the event (RETAIN Available in CONNACK); an empty
    retained PUBLISH publishes nothing and the channel has no retained message until
    its next event."""
    port = dev.mqtt_port or 0
    publisher, _ = paho(port, version)
    watcher, _ = paho(port, V5)
    try:
        if version == V5:
            assert getattr(publisher.connack_properties, "RetainAvailable", 1) == 1
        subscribe(watcher, FILTER, retainHandling=2)
        info = publisher.client.publish("sensors/s1/temperature", b'{"celsius": 7}', 1, retain=True)
        info.wait_for_publish(5)
        assert summary(drain(watcher)) == [("sensors/s1/temperature", 7.0, False)]
        late, _ = paho(port, version)
        late.subscribe(FILTER, 1)
        assert summary(drain(late)) == [("sensors/s1/temperature", 7.0, True)]
        late.close()
        publisher.client.publish("sensors/s1/temperature", b"", 1, retain=True).wait_for_publish(5)
        assert drain(watcher) == []  # no event: nothing to deliver
        later, _ = paho(port, version)
        later.subscribe(FILTER, 1)
        assert drain(later) == []
        publish(dev, "s1", 8.0)
        assert summary(drain(later)) == [("sensors/s1/temperature", 8.0, False)]
        later.close()
        again, _ = paho(port, version)
        again.subscribe(FILTER, 1)
        assert summary(drain(again)) == [("sensors/s1/temperature", 8.0, True)]
        again.close()
    finally:
        publisher.close()
        watcher.close()


def test_clearing_needs_the_right_to_publish(secure: RunningNode) -> None:
    """A reader may not clear a retained message: PUBACK 0x87, and it stays."""
    port = secure.mqtt_port or 0
    publish(secure, "s1", 1.0)
    reader, _ = paho(port, V5, password=KEYS["reader"][0])
    try:
        info = reader.client.publish("sensors/s1/temperature", b"", 1, retain=True)
        info.wait_for_publish(5)
        assert info.rc == 0  # sent; the refusal is in the PUBACK (paho does not raise)
        reader.subscribe(FILTER, 1)
        assert summary(drain(reader)) == [("sensors/s1/temperature", 1.0, True)]
    finally:
        reader.close()


@pytest.fixture
def one_retained(tmp_path: Path) -> Iterator[RunningNode]:
    settings = node_settings(tmp_path, dev=True, mqtt={"port": 0, "max_retained": 1})
    with serve_in_thread(monitoring, settings) as node:
        yield node


def test_retained_messages_per_filter_are_bounded(one_retained: RunningNode) -> None:
    """At most mqtt.max_retained retained messages for one filter: the first channels."""
    publish(one_retained, "s2", 2.0)
    publish(one_retained, "s1", 1.0)
    client, _ = paho(one_retained.mqtt_port or 0, V5)
    try:
        client.subscribe(FILTER, 0)
        assert summary(drain(client)) == [("sensors/s1/temperature", 1.0, True)]
    finally:
        client.close()

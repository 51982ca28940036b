"""Untyped topics: ``mqtt.open_topics`` and untyped event types, beside the typed topics."""

from __future__ import annotations

import json
import queue
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions
from tests.mqtt.clients import V311, Paho, paho
from tests.mqtt.conftest import KEYS, node_settings
from tests.mqtt.service import monitoring

from polyport import RawMessage, Service
from polyport.testing import RunningNode, serve_in_thread


@pytest.fixture
def open_dev(tmp_path: Path) -> Iterator[RunningNode]:
    """The monitoring contract in development mode with every topic open."""
    settings = node_settings(tmp_path, dev=True)
    settings.mqtt.open_topics = ["#"]
    with serve_in_thread(monitoring, settings) as node:
        yield node


def drain(client: Paho, wait: float = 0.4) -> list[mqtt.MQTTMessage]:
    got = []
    while True:
        try:
            got.append(client.message(timeout=wait))
        except queue.Empty:
            return got


def poll(node: RunningNode, channel: str) -> list[dict[str, Any]]:
    url = f"{node.url}/v1/events?channel={urllib.parse.quote(channel)}&after=earliest"
    with urllib.request.urlopen(url, timeout=5) as response:
        events: list[dict[str, Any]] = json.load(response)["events"]
    return events


def test_any_topic_and_payload_round_trip(open_dev: RunningNode) -> None:
    """Bytes on any topic (empty levels, spaces, ``~``, not UTF-8) come back as they went."""
    assert open_dev.mqtt_port is not None
    sub, _ = paho(open_dev.mqtt_port)
    pub, _ = paho(open_dev.mqtt_port, V311)
    try:
        assert sub.subscribe("#", 2) == [2]
        sent = [("a//b", b"\xff\x00raw"), ("room 1/~x", b"hello"), ("/", b""), ("TopicA", b"{")]
        for topic, payload in sent:
            pub.publish(topic, payload, 1)
        got = [(m.topic, m.payload) for m in drain(sub)]
        assert got == sent
    finally:
        sub.close()
        pub.close()


def test_properties_kept(open_dev: RunningNode) -> None:
    """MQTT 5 user properties, content type, format, response topic and correlation data
    are forwarded as the publisher gave them, nothing added."""
    assert open_dev.mqtt_port is not None
    sub, _ = paho(open_dev.mqtt_port)
    try:
        sub.subscribe("dev/+", 1)
        props = Properties(PacketTypes.PUBLISH)
        props.UserProperty = ("a", "2")
        props.UserProperty = ("c", "3")
        props.ContentType = "text/plain"
        props.PayloadFormatIndicator = 1
        props.ResponseTopic = "dev/answers"
        props.CorrelationData = b"\x01\x02"
        sub.client.publish("dev/x", b"21.5", 1, properties=props).wait_for_publish(5)
        message = sub.message()
        assert message.payload == b"21.5"
        got = message.properties
        assert got.UserProperty == [("a", "2"), ("c", "3")]
        assert got.ContentType == "text/plain"
        assert got.PayloadFormatIndicator == 1
        assert got.ResponseTopic == "dev/answers"
        assert got.CorrelationData == b"\x01\x02"
    finally:
        sub.close()


def test_other_patterns_see_a_raw_message(open_dev: RunningNode) -> None:
    """Polling reads an open topic's events as RawMessage JSON: text when UTF-8, else base64;
    a channel is the topic, levels no channel may hold written as ``~`` and hex."""
    assert open_dev.mqtt_port is not None
    pub, _ = paho(open_dev.mqtt_port)
    try:
        pub.publish("plain/t", b"21.5", 1)
        pub.publish("plain/b", b"\xff", 1)
        pub.publish("odd//t", b"x", 1)
    finally:
        pub.close()
    [text] = poll(open_dev, "plain/t")
    assert (text["type"], text["data"]) == ("mqtt.open", {"text": "21.5", "qos": 1})
    [raw] = poll(open_dev, "plain/b")
    assert raw["data"] == {"base64": "/w==", "qos": 1}
    [odd] = poll(open_dev, "odd/~/t")
    assert odd["data"] == {"text": "x", "qos": 1}


def test_typed_topics_stay_typed(open_dev: RunningNode) -> None:
    """A topic an event type takes is validated as ever: open topics never take it."""
    assert open_dev.mqtt_port is not None
    pub, _ = paho(open_dev.mqtt_port)
    try:
        info = pub.client.publish("sensors/s1/temperature", b"not json", 1)
        info.wait_for_publish(5)
        assert info.rc == 0
        assert poll(open_dev, "sensors/s1/temperature") == []
    finally:
        pub.close()


def test_dollar_topics(open_dev: RunningNode) -> None:
    """``$`` topics: a filter starting with a wildcard does not match them (MQTT 4.7.2), one
    naming them does; ``$SYS``, ``$share`` and ``$polyport`` are never open."""
    assert open_dev.mqtt_port is not None
    everything, _ = paho(open_dev.mqtt_port)
    dollar, _ = paho(open_dev.mqtt_port)
    try:
        everything.subscribe("#", 1)
        everything.subscribe("+/x", 1)
        assert dollar.subscribe("$legacy/#", 1) == [1]
        dollar.publish("$legacy/x", b"d", 1)
        dollar.publish("legacy/x", b"n", 1)
        assert [(m.topic, m.payload) for m in drain(dollar)] == [("$legacy/x", b"d")]
        assert [m.topic for m in drain(everything)] == ["legacy/x", "legacy/x"]
        refused = dollar.client.publish("$SYS/x", b"no", 1)
        refused.wait_for_publish(5)
        assert poll(open_dev, "~24535953/x") == []
    finally:
        everything.close()
        dollar.close()


def test_open_topics_need_scopes_outside_development(tmp_path: Path) -> None:
    """Outside development mode, open topics need ``mqtt.open_scopes`` to read and publish."""
    keys = [
        {"key": "device-key", "subject": "device", "scopes": ["mqtt"]},
        {"key": KEYS["nobody"][0], "subject": "nobody", "scopes": []},
    ]
    settings = node_settings(tmp_path, auth={"api_keys": keys})
    settings.mqtt.open_topics = ["legacy/#"]
    with serve_in_thread(monitoring, settings) as node:
        assert node.mqtt_port is not None
        device, _ = paho(node.mqtt_port, password="device-key")
        nobody, _ = paho(node.mqtt_port, password=KEYS["nobody"][0])
        try:
            assert nobody.subscribe("legacy/#", 1) == [0x87]
            assert device.subscribe("legacy/#", 1) == [1]
            assert device.subscribe("other/#", 1) == [0x87]  # not open: no type there
            info = nobody.client.publish("legacy/x", b"no", 1)
            info.wait_for_publish(5)
            device.publish("legacy/x", b"yes", 1)
            assert [m.payload for m in drain(device)] == [b"yes"]
        finally:
            device.close()
            nobody.close()


untyped = Service("untyped")
Legacy = untyped.event("legacy.raw", RawMessage, channel="legacy/#", publish_scopes=[])


@untyped.method
async def noop() -> None:
    """Nothing: a contract needs a method."""


def test_contract_untyped_event_type(tmp_path: Path) -> None:
    """A contract's untyped event type takes its prefix's topics, and server code publishes
    one with an explicit channel."""
    with serve_in_thread(untyped, node_settings(tmp_path, dev=True)) as node:
        assert node.mqtt_port is not None
        sub, _ = paho(node.mqtt_port)
        try:
            sub.subscribe("legacy/#", 1)
            sub.publish("legacy/dev 1", b"\x00\x01", 1)
            node.call(Legacy.publish(RawMessage(text="from code"), channel="legacy/code"))
            got = [(m.topic, m.payload) for m in drain(sub)]
            assert got == [("legacy/dev 1", b"\x00\x01"), ("legacy/code", b"from code")]
            info = sub.client.publish("elsewhere", b"x", 1)
            info.wait_for_publish(5)
        finally:
            sub.close()


def test_retained_and_qos_as_mqtt_has_them(open_dev: RunningNode) -> None:
    """On untyped topics the retained message is the last published with RETAIN 1, an
    empty retained PUBLISH clears it, and delivery is at no more than the published QoS."""
    assert open_dev.mqtt_port is not None
    pub, _ = paho(open_dev.mqtt_port)
    try:
        pub.client.publish("r/a", b"kept", 1, retain=True).wait_for_publish(5)
        pub.publish("r/a", b"not retained", 1)
        pub.client.publish("r/b", b"gone", 1, retain=True).wait_for_publish(5)
        pub.client.publish("r/b", b"", 1, retain=True).wait_for_publish(5)
        sub, _ = paho(open_dev.mqtt_port)
        try:
            sub.subscribe("r/#", 2)
            [retained] = drain(sub)
            assert (retained.topic, retained.payload, retained.retain) == ("r/a", b"kept", True)
            assert retained.qos == 1
            pub.publish("r/c", b"at 0", 0)
            [live] = drain(sub)
            assert (live.payload, live.qos, live.retain) == (b"at 0", 0, False)
        finally:
            sub.close()
    finally:
        pub.close()


def test_no_local(open_dev: RunningNode) -> None:
    """A No Local subscription does not get back what its own connection published."""
    assert open_dev.mqtt_port is not None
    own, _ = paho(open_dev.mqtt_port)
    other, _ = paho(open_dev.mqtt_port)
    try:
        own.client.subscribe("nl/#", options=SubscribeOptions(qos=1, noLocal=True))
        own.acks.get(timeout=5)
        own.publish("nl/x", b"mine", 1)
        other.publish("nl/x", b"theirs", 1)
        assert [m.payload for m in drain(own)] == [b"theirs"]
    finally:
        own.close()
        other.close()

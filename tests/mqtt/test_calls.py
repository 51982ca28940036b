"""MQTT 5 request/response with paho: a PUBLISH to $polyport/call/{method} calls the method."""

from __future__ import annotations

import json
import queue
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from tests.mqtt.clients import V311, Paho, paho, user_properties
from tests.mqtt.conftest import KEYS, node_settings
from tests.mqtt.service import monitoring

from polyport.testing import RunningNode, serve_in_thread


@pytest.fixture
def open_replies(tmp_path: Path) -> Iterator[RunningNode]:
    """API keys, and replies/# an open (untyped) topic the reader and sensor keys may read."""
    keys = [{"key": k, "subject": s, "scopes": scopes} for s, (k, scopes) in KEYS.items()]
    mqtt = {"port": 0, "open_topics": ["replies/#"], "open_scopes": ["read"]}
    settings = node_settings(tmp_path, auth={"api_keys": keys}, mqtt=mqtt)
    with serve_in_thread(monitoring, settings) as node:
        yield node


def request(
    client: Paho,
    method: str,
    args: object,
    *,
    qos: int = 1,
    response_topic: str | None = "replies/me",
    correlation: bytes = b"req-1",
) -> mqtt.MQTTMessageInfo:
    props = Properties(PacketTypes.PUBLISH)
    if response_topic is not None:
        props.ResponseTopic = response_topic
    props.CorrelationData = correlation
    payload = json.dumps(args) if args is not None else b""
    info = client.client.publish(f"$polyport/call/{method}", payload, qos, properties=props)
    if qos:
        info.wait_for_publish(5)
    return info


def test_a_call_is_answered_on_the_response_topic(open_replies: RunningNode) -> None:
    """A client subscribed to its response topic calls a method: the result, correlated,
    once, and to the caller only (another subscriber of the topic gets nothing)."""
    port = open_replies.mqtt_port or 0
    client, _ = paho(port, password=KEYS["sensor"][0])
    other, _ = paho(port, password=KEYS["reader"][0])
    try:
        assert client.subscribe("replies/me", 1) == [1]
        assert other.subscribe("replies/#", 1) == [1]
        request(client, "calibrate", {"sensor": "s1", "offset": 0.5}, correlation=b"\x00\x07")
        answer = client.message()
        assert answer.topic == "replies/me"
        assert json.loads(answer.payload) == {"sensor": "s1", "offset": 0.5}
        assert answer.properties.CorrelationData == b"\x00\x07"
        assert answer.properties.ContentType == "application/json"
        assert "error-code" not in user_properties(answer)
        assert answer.qos == 1
        request(client, "ping", None, qos=0, correlation=b"2")
        answer = client.message()
        assert json.loads(answer.payload) == "pong"
        assert answer.properties.CorrelationData == b"2"
        assert answer.qos == 0
        with pytest.raises(queue.Empty):
            client.message(timeout=0.3)  # not twice, though subscribed
        with pytest.raises(queue.Empty):
            other.message(timeout=0.1)
    finally:
        client.close()
        other.close()


def test_errors_come_back_mapped_from_the_error_table(secure: RunningNode) -> None:
    """A handler's NotFound and invalid arguments arrive with their code and reason code."""
    client, _ = paho(secure.mqtt_port or 0, password=KEYS["sensor"][0])
    try:
        request(client, "calibrate", {"sensor": "gone"}, correlation=b"a")
        answer = client.message()
        props = user_properties(answer)
        assert props["error-code"] == "NOT_FOUND"
        assert props["reason-code"] == "0x90"
        assert props["reason-string"] == "no sensor 'gone'"
        assert json.loads(answer.payload) == {"code": "NOT_FOUND", "message": "no sensor 'gone'"}
        assert answer.properties.CorrelationData == b"a"

        request(client, "calibrate", {"sensor": "s1", "offset": "warm"}, correlation=b"b")
        answer = client.message()
        props = user_properties(answer)
        assert props["error-code"] == "INVALID_ARGUMENT"
        assert props["reason-code"] == "0x99"
        body = json.loads(answer.payload)
        assert body["details"][0]["field"] == "offset"

        request(client, "no_such_method", {}, correlation=b"c")
        answer = client.message()
        assert user_properties(answer)["error-code"] == "NOT_FOUND"
    finally:
        client.close()


@pytest.mark.parametrize("who", ["reader", "nobody"])
def test_a_caller_without_the_scope_is_refused(secure: RunningNode, who: str) -> None:
    """The method's scopes are checked as on every pattern: PERMISSION_DENIED, 0x87."""
    client, _ = paho(secure.mqtt_port or 0, password=KEYS[who][0])
    try:
        request(client, "calibrate", {"sensor": "s1"})
        answer = client.message()
        props = user_properties(answer)
        assert props["error-code"] == "PERMISSION_DENIED"
        assert props["reason-code"] == "0x87"
        assert props["reason-string"] == "missing scope: calibrate"
    finally:
        client.close()


def test_a_request_without_a_response_topic_is_refused(secure: RunningNode) -> None:
    """No Response Topic: PUBACK 0x83 at QoS 1, nothing called; DISCONNECT 0x83 at QoS 0."""
    client, _ = paho(secure.mqtt_port or 0, password=KEYS["sensor"][0])
    codes: queue.Queue[int] = queue.Queue()
    client.client.on_publish = lambda c, u, mid, code, p: codes.put(int(code.value))
    try:
        request(client, "calibrate", {"sensor": "s1"}, response_topic=None)
        assert codes.get(timeout=5) == 0x83
        with pytest.raises(queue.Empty):
            client.message(timeout=0.5)
        request(client, "calibrate", {"sensor": "s1"}, qos=0, response_topic=None)
        assert client.closed.wait(5)
        assert int(client.disconnect_reason.value) == 0x83
    finally:
        client.stop()


def test_an_mqtt311_client_cannot_call(dev: RunningNode) -> None:
    """MQTT 3.1.1 has no Response Topic: a PUBLISH to $polyport/call/… closes it."""
    client, _ = paho(dev.mqtt_port or 0, V311)
    try:
        client.publish("$polyport/call/ping", b"{}", 1)
        assert client.closed.wait(5)
    finally:
        client.stop()

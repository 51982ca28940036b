"""Bridge mode against the machine's Mosquitto (127.0.0.1:1883): events out, messages in.

Every test uses topics under a prefix of its own and a group of its own, so
runs side by side (and leftovers of old runs) never meet.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from tests.conftest import require_service
from tests.mqtt.bridge_service import plant
from tests.mqtt.clients import V5, Paho, paho, user_properties
from tests.mqtt.relay import Relay

from polyport import Settings
from polyport.edges.mqtt.bridge import ORIGIN, MqttBridgeEdge
from polyport.testing import RunningNode, serve_in_thread

MOSQUITTO = 1883


@pytest.fixture(autouse=True)
def _mosquitto() -> None:
    require_service("Mosquitto", MOSQUITTO)


@pytest.fixture
def prefix() -> str:
    return f"polyport-test/{uuid.uuid4().hex[:12]}/"


def settings(path: Path, prefix: str, port: int = MOSQUITTO, **more: Any) -> Settings:
    path.mkdir(exist_ok=True)
    bridge = {
        "url": f"mqtt://127.0.0.1:{port}",
        "prefix": prefix,
        "group": "g" + prefix.split("/")[1],
        "outgoing": ["alerts/#"],
        "incoming": ["sensors/#"],
        "reconnect_max": 0.5,
    }
    values: dict[str, Any] = {
        "dev": True,
        "database": str(path / "db.sqlite3"),
        "rate_limit": {"enabled": False},
        "mqtt": {"port": 0, "bridge": bridge},
        "log": {"level": "warning"},
    }
    values.update(more)
    return Settings.model_validate(values)


def bridge_of(node: RunningNode) -> MqttBridgeEdge:
    return next(e for e in node.node.edges if isinstance(e, MqttBridgeEdge))


def wait_until(check: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail("timed out waiting")
        time.sleep(0.02)


@contextmanager
def bridged(path: Path, prefix: str, **more: Any) -> Iterator[RunningNode]:
    with serve_in_thread(plant, settings(path, prefix, **more)) as node:
        wait_until(bridge_of(node).connected.is_set)
        yield node


@contextmanager
def broker_client(prefix: str, subscribe: str | None = None) -> Iterator[Paho]:
    client, code = paho(MOSQUITTO, V5)
    assert code == 0
    try:
        if subscribe is not None:
            assert client.subscribe(prefix + subscribe, 1) == [1]
        yield client
    finally:
        client.close()


@contextmanager
def node_events(node: RunningNode, channel: str) -> Iterator[Any]:
    """A WebSocket subscriber of the node (``/ws``), subscribed to ``channel``."""
    from websockets.sync.client import connect

    with connect(node.url.replace("http://", "ws://") + "/ws") as ws:
        assert orjson.loads(ws.recv(5))["type"] == "welcome"
        ws.send(orjson.dumps({"id": 1, "type": "subscribe", "channels": [channel]}))
        assert orjson.loads(ws.recv(5))["type"] == "subscribed"
        yield ws


def next_event(ws: Any, timeout: float = 10.0) -> dict[str, Any]:
    while True:
        frame = orjson.loads(ws.recv(timeout))
        if frame["type"] == "event":
            event: dict[str, Any] = frame["event"]
            return event


def raise_alert(node: RunningNode, text: str, level: str = "high") -> None:
    answer = httpx.post(f"{node.url}/v1/raise_alert", json={"level": level, "text": text})
    assert answer.status_code == 200, answer.text


def quiet(client: Paho, seconds: float = 1.0) -> list[Any]:
    """What else arrives within ``seconds`` (a duplicate would)."""
    extra = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            extra.append(client.message(timeout=left))
        except Exception:
            break
    return extra


def test_an_event_published_over_rest_reaches_a_subscriber_of_the_broker(
    tmp_path: Path, prefix: str
) -> None:
    """An alert raised over REST arrives at a paho subscriber of Mosquitto, at QoS 1, with
    the event's JSON as payload and its id and type as user properties."""
    with bridged(tmp_path, prefix) as node, broker_client(prefix, "alerts/#") as sub:
        raise_alert(node, "boiler hot")
        message = sub.message(timeout=10)
        assert message.topic == prefix + "alerts/high"
        assert json.loads(message.payload) == {"level": "high", "text": "boiler hot"}
        assert message.qos == 1
        properties = user_properties(message)
        assert properties["event-type"] == "alerts.raised"
        assert properties[ORIGIN] == bridge_of(node).config.group
        assert message.properties.ContentType == "application/json"
        assert quiet(sub) == []


def test_a_message_on_the_broker_becomes_a_validated_event(tmp_path: Path, prefix: str) -> None:
    """A reading published to Mosquitto is an event a WebSocket subscriber of the node sees,
    its sensor filled in from the topic; invalid ones are counted and never published."""
    with (
        bridged(tmp_path, prefix) as node,
        node_events(node, "sensors/#") as ws,
        broker_client(prefix) as device,
    ):
        device.publish(prefix + "sensors/s1/reading", b'{"celsius": "hot"}', qos=1)
        device.publish(prefix + "sensors/s1/reading", b"not json", qos=1)
        device.publish(prefix + "sensors/s1/reading", b'{"celsius": 900}', qos=1)
        device.publish(prefix + "sensors/s1/reading", b'{"celsius": 21.5}', qos=1)
        event = next_event(ws)
        assert event["channel"] == "sensors/s1/reading"
        assert event["type"] == "sensors.reading"
        assert event["data"] == {"sensor": "s1", "celsius": 21.5}
        bridge = bridge_of(node)
        # Counted once durable, which may be just after subscribers were sent it.
        wait_until(lambda: bridge.counts == {"in-invalid": 3, "in-published": 1})
        history = httpx.get(f"{node.url}/v1/events", params={"channel": "sensors/#"}).json()
        assert [e["data"]["celsius"] for e in history["events"]] == [21.5]


def test_two_nodes_bridging_one_broker_carry_each_event_once(tmp_path: Path, prefix: str) -> None:
    """Two nodes on one shared event log (Redis) and one group: each alert reaches the
    broker once, whichever node raised it; each broker message becomes one event."""
    from tests.cluster.engines import shared_engine

    with (
        shared_engine("redis") as url,
        bridged(tmp_path / "a", prefix, engine=url) as a,
        bridged(tmp_path / "b", prefix, engine=url) as b,
        broker_client(prefix, "alerts/#") as sub,
        node_events(a, "sensors/#") as ws,
    ):
        for index in range(10):
            raise_alert(a if index % 2 else b, f"alert {index}")
        got = [json.loads(sub.message(timeout=15).payload)["text"] for _ in range(10)]
        assert sorted(got) == sorted(f"alert {index}" for index in range(10))
        assert quiet(sub, 1.5) == []
        for index in range(10):
            sub.publish(prefix + f"sensors/s{index}/reading", f'{{"celsius": {index}}}', 1)
        seen = [next_event(ws)["data"]["sensor"] for _ in range(10)]
        assert sorted(seen) == sorted(f"s{index}" for index in range(10))
        with pytest.raises(TimeoutError):
            next_event(ws, timeout=1.5)
        taken = [bridge_of(node).counts for node in (a, b)]
        wait_until(lambda: sum(counts.get("in-published", 0) for counts in taken) == 10)
        forwarded = [bridge_of(node).counts.get("out-forwarded", 0) for node in (a, b)]
        assert sorted(forwarded) == [0, 10]  # one node leads (counted before quiet() ended)


def test_the_bridge_reconnects_and_loses_nothing(tmp_path: Path, prefix: str) -> None:
    """With the broker unreachable (a relay stopped), alerts raised meanwhile are sent
    once it is back, and QoS 1 messages for the node wait in its session at the broker."""
    relay = Relay(MOSQUITTO)
    relay.start()
    try:
        with (
            bridged(tmp_path, prefix, port=relay.port) as node,
            broker_client(prefix, "alerts/#") as sub,
            node_events(node, "sensors/#") as ws,
        ):
            bridge = bridge_of(node)
            raise_alert(node, "before")
            assert json.loads(sub.message(timeout=10).payload)["text"] == "before"
            relay.stop()
            wait_until(lambda: not bridge.connected.is_set())
            raise_alert(node, "during 1")
            raise_alert(node, "during 2")
            sub.publish(prefix + "sensors/s7/reading", b'{"celsius": 7}', qos=1)
            time.sleep(0.5)
            relay.start()
            wait_until(bridge.connected.is_set)
            got = [json.loads(sub.message(timeout=15).payload)["text"] for _ in range(2)]
            assert got == ["during 1", "during 2"]
            assert next_event(ws, timeout=15)["data"] == {"sensor": "s7", "celsius": 7.0}
            assert quiet(sub) == []
    finally:
        relay.stop()


def test_a_message_of_the_group_coming_back_is_not_taken_in(tmp_path: Path, prefix: str) -> None:
    """A message carrying the group's own ``polyport-bridge`` user property (one of ours,
    come back) is not published; the next plain one is."""
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    with (
        bridged(tmp_path, prefix) as node,
        node_events(node, "sensors/#") as ws,
        broker_client(prefix) as device,
    ):
        bridge = bridge_of(node)
        ours = Properties(PacketTypes.PUBLISH)
        ours.UserProperty = (ORIGIN, bridge.config.group)
        topic = prefix + "sensors/s2/reading"
        device.client.publish(topic, b'{"celsius": 1}', 1, properties=ours).wait_for_publish(5)
        device.publish(topic, b'{"celsius": 2}', qos=1)
        assert next_event(ws)["data"]["celsius"] == 2.0
        wait_until(lambda: bridge.counts == {"in-echo": 1, "in-published": 1})

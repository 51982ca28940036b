"""MQTT over WebSocket at /mqtt (subprotocol mqtt) on the node's HTTP port, with paho."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.mqtt.clients import V5, V311, paho
from tests.mqtt.conftest import KEYS, node_settings
from tests.mqtt.service import monitoring
from tests.mqtt.wire import connect_packet
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from polyport.testing import RunningNode, serve_in_thread


@pytest.mark.parametrize("qos", [0, 1, 2])
@pytest.mark.parametrize("version", [V5, V311])
def test_mqtt_over_websocket_both_ways(dev: RunningNode, version: int, qos: int) -> None:
    """A paho client over WebSocket publishes and receives like one over TCP."""
    over_ws, code = paho(dev.port, version, transport="websockets")
    over_tcp, _ = paho(dev.mqtt_port or 0, V5)
    try:
        assert code == 0
        assert over_ws.subscribe("sensors/+/temperature", qos) == [qos]
        assert over_tcp.subscribe("sensors/+/temperature", qos) == [qos]
        over_ws.publish("sensors/w1/temperature", json.dumps({"celsius": 12.5}), qos)
        for client in (over_ws, over_tcp):
            message = client.message()
            assert message.topic == "sensors/w1/temperature"
            assert message.qos == qos
            assert json.loads(message.payload) == {"sensor": "w1", "celsius": 12.5}
    finally:
        over_ws.close()
        over_tcp.close()


def test_the_same_credentials_over_websocket(secure: RunningNode) -> None:
    """The CONNECT password carries the API key over WebSocket too; a bad one is 0x86."""
    _, refused = paho(secure.port, V5, password="no-such-key", transport="websockets")
    assert refused == 0x86
    _, anonymous = paho(secure.port, V311, transport="websockets")
    assert anonymous == 0x87  # 3.1.1 return code 5, as paho reports it
    sensor, accepted = paho(secure.port, V5, password=KEYS["sensor"][0], transport="websockets")
    try:
        assert accepted == 0
        assert sensor.subscribe("alerts/#", 1) == [0x87]  # a sensor may not read alerts
        assert sensor.subscribe("sensors/#", 1) == [1]
    finally:
        sensor.close()


def test_without_the_mqtt_subprotocol_the_socket_is_closed(dev: RunningNode) -> None:
    """A WebSocket to /mqtt that does not offer the mqtt subprotocol is closed (1008)."""
    url = f"ws://127.0.0.1:{dev.port}/mqtt"
    with connect(url, open_timeout=5) as ws, pytest.raises(ConnectionClosed) as closed:
        ws.recv(timeout=5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008


def test_a_text_message_ends_the_connection(dev: RunningNode) -> None:
    """MQTT packets travel in binary messages; a text message closes (1003), as 6.0 asks."""
    url = f"ws://127.0.0.1:{dev.port}/mqtt"
    with connect(url, subprotocols=["mqtt"], open_timeout=5) as ws:
        assert ws.subprotocol == "mqtt"
        ws.send(connect_packet(5, "ws-raw"))
        connack = ws.recv(timeout=5)
        assert isinstance(connack, bytes) and connack[0] == 0x20 and connack[3] == 0
        ws.send("not a packet")
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1003


def test_packets_may_span_and_share_websocket_messages(dev: RunningNode) -> None:
    """A packet split over two messages, and two packets in one message, are read alike."""
    url = f"ws://127.0.0.1:{dev.port}/mqtt"
    hello = connect_packet(4, "ws-split")
    pingreq = b"\xc0\x00"
    with connect(url, subprotocols=["mqtt"], open_timeout=5) as ws:
        ws.send(hello[:5])
        ws.send(hello[5:] + pingreq)
        assert ws.recv(timeout=5) == b"\x20\x02\x00\x00"  # CONNACK, accepted
        assert ws.recv(timeout=5) == b"\xd0\x00"  # PINGRESP


@pytest.fixture
def one_connection(tmp_path: Path) -> Iterator[RunningNode]:
    settings = node_settings(
        tmp_path, dev=True, mqtt={"port": 0, "max_connections": 1, "max_packet": 256}
    )
    with serve_in_thread(monitoring, settings) as node:
        yield node


def test_the_listeners_limits_hold_over_websocket(one_connection: RunningNode) -> None:
    """mqtt.max_connections counts TCP and WebSocket clients together; mqtt.max_packet
    holds for a packet over WebSocket as for one over TCP."""
    url = f"ws://127.0.0.1:{one_connection.port}/mqtt"
    with connect(url, subprotocols=["mqtt"], open_timeout=5) as ws:
        ws.send(connect_packet(5, "x" * 300))  # larger than max_packet: closed at once
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=5)
    first, _ = paho(one_connection.mqtt_port or 0, V5)
    try:
        with (
            connect(url, subprotocols=["mqtt"], open_timeout=5) as ws,
            pytest.raises(ConnectionClosed) as closed,
        ):
            ws.recv(timeout=5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
    finally:
        first.close()

"""MQTT 5 protocol details the Paho interoperability suite checks: Server Keep Alive,
subscription identifiers, will messages and their delay, message expiry, and a
DISCONNECT the client can read while it is still writing."""

from __future__ import annotations

import queue
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from tests.mqtt.clients import V5, V311, Paho, paho
from tests.mqtt.conftest import node_settings
from tests.mqtt.service import monitoring
from tests.mqtt.wire import (
    connect_packet,
    connected,
    dial,
    publish_packet,
    read_until_closed,
    split_packets,
)

from polyport.edges.mqtt.codec import SERVER_KEEP_ALIVE
from polyport.edges.mqtt.packets import TopicSubscription
from polyport.edges.mqtt.sessions import FilterState, Session
from polyport.testing import RunningNode, serve_in_thread


@pytest.fixture
def tuned(tmp_path: Path) -> Iterator[RunningNode]:
    """Development mode, every topic open, Server Keep Alive 2 s, Receive Maximum 2."""
    mqtt = {
        "port": 0,
        "connect_timeout": 1.0,
        "max_keep_alive": 2,
        "receive_maximum": 2,
        "open_topics": ["#"],
    }
    with serve_in_thread(monitoring, node_settings(tmp_path, dev=True, mqtt=mqtt)) as node:
        yield node


def connack(sock: socket.socket, keep_alive: int) -> bytes:
    """CONNECT with ``keep_alive`` on ``sock``: the CONNACK's bytes."""
    sock.sendall(connect_packet(5, keep_alive=keep_alive))
    head = sock.recv(2)
    rest = b""
    while len(rest) < head[1]:
        rest += sock.recv(head[1] - len(rest))
    assert head[0] == 0x20 and rest[1] == 0
    return rest


def test_server_keep_alive_caps_the_clients(tuned: RunningNode) -> None:
    """A keep-alive above mqtt.max_keep_alive (or none) is answered with Server Keep
    Alive, and held to it; one within it is left alone."""
    client, _ = paho(tuned.mqtt_port or 0)  # keepalive 30
    try:
        assert client.connack_properties.ServerKeepAlive == 2
    finally:
        client.close()
    with dial(tuned.mqtt_port or 0) as sock:
        assert bytes((SERVER_KEEP_ALIVE, 0, 1)) not in connack(sock, keep_alive=1)
    with dial(tuned.mqtt_port or 0) as sock:
        assert bytes((SERVER_KEEP_ALIVE, 0, 2)) in connack(sock, keep_alive=0)
        started = time.monotonic()
        answer, closed = read_until_closed(sock, limit=6)
        assert closed and answer[0] == 0xE0 and answer[2] == 0x8D  # keep alive timeout
        assert 2.5 < time.monotonic() - started < 5


def test_a_client_still_writing_reads_the_disconnect(tuned: RunningNode) -> None:
    """Past Receive Maximum, DISCONNECT 0x93 arrives even while the client keeps writing:
    the node drains what it sends before closing, instead of resetting the connection."""
    with connected(tuned.mqtt_port or 0) as sock:
        burst = b"".join(publish_packet(5, "flow/x", b"m", qos=2, packet_id=i) for i in range(1, 4))
        sock.sendall(burst + b"\xc0\x00" * 20_000)  # and more, unread when it refuses
        received = bytearray()
        sock.settimeout(5)
        wrote_more = False
        while chunk := sock.recv(65536):  # a reset would raise ConnectionResetError
            received += chunk
            if not wrote_more and 0xE0 in {first for first, _ in split_packets(received)}:
                sock.sendall(b"\xc0\x00" * 1000)  # still writing after the DISCONNECT
                wrote_more = True
        packets = split_packets(received)
        assert packets[-1] == (0xE0, packets[-1][1]) and packets[-1][1][0] == 0x93
        assert [first for first, _ in packets].count(0x50) == 2  # PUBREC, PUBREC, then no


def will(delay: int | None = None) -> Callable[[mqtt.Client], None]:
    """A paho setup giving the client a will on wills/dev1, with ``delay`` if given."""

    def setup(client: mqtt.Client) -> None:
        props = None
        if delay is not None:
            props = Properties(PacketTypes.WILLMESSAGE)
            props.WillDelayInterval = delay
        client.will_set("wills/dev1", b"gone", qos=1, properties=props)

    return setup


@pytest.mark.parametrize("version", [V5, V311])
def test_a_will_is_published_when_the_connection_breaks(tuned: RunningNode, version: int) -> None:
    """A connection that ends without DISCONNECT publishes its will; one that says
    DISCONNECT does not (MQTT 5: unless its reason is 0x04, with will)."""
    port = tuned.mqtt_port or 0
    watcher, _ = paho(port)
    try:
        assert watcher.subscribe("wills/#", 1) == [1]
        polite, _ = paho(port, version, client_id="polite", setup=will())
        polite.close()  # DISCONNECT 0x00
        broken, _ = paho(port, version, client_id="broken", setup=will())
        broken.stop()  # the socket closes, no DISCONNECT
        message = watcher.message()
        assert (message.topic, message.payload) == ("wills/dev1", b"gone")
        with pytest.raises(queue.Empty):
            watcher.message(timeout=0.5)
        if version == V5:
            leaving, _ = paho(port, version, client_id="leaving", setup=will())
            leaving.client.disconnect(reasoncode=ReasonCode(PacketTypes.DISCONNECT, identifier=4))
            assert watcher.message().payload == b"gone"
            leaving.stop()
    finally:
        watcher.close()


def test_a_will_waits_for_its_delay(tuned: RunningNode) -> None:
    """The will goes out after the smaller of Will Delay Interval and session expiry."""
    port = tuned.mqtt_port or 0
    watcher, _ = paho(port)
    try:
        assert watcher.subscribe("wills/#", 1) == [1]
        for delay, expiry in [(1, 30), (30, 1)]:
            client, _ = paho(port, client_id="late", expiry=expiry, setup=will(delay))
            client.stop()
            started = time.monotonic()
            with pytest.raises(queue.Empty):
                watcher.message(timeout=0.6)
            assert watcher.message(timeout=3).payload == b"gone"
            assert 0.8 < time.monotonic() - started < 2.5
    finally:
        watcher.close()


@pytest.mark.parametrize("clean", [False, True])
def test_a_client_back_in_time_cancels_its_will(tuned: RunningNode, clean: bool) -> None:
    """Back for its session (Clean Start 0) before the delay: no will. Back with Clean
    Start 1: the old session ends, and its will goes out at once."""
    port = tuned.mqtt_port or 0
    watcher, _ = paho(port)
    try:
        assert watcher.subscribe("wills/#", 1) == [1]
        client, _ = paho(port, client_id="flaky", expiry=60, setup=will(2))
        client.stop()
        time.sleep(0.3)
        again, _ = paho(port, client_id="flaky", clean=clean, expiry=60)
        try:
            if clean:
                assert watcher.message(timeout=1).payload == b"gone"
            else:
                with pytest.raises(queue.Empty):
                    watcher.message(timeout=2.5)
        finally:
            again.close()
    finally:
        watcher.close()


def subscribe_with_id(client: Paho, topic: str, ident: int | None) -> None:
    props = None
    if ident is not None:
        props = Properties(PacketTypes.SUBSCRIBE)
        props.SubscriptionIdentifier = ident
    client.client.subscribe(topic, 1, properties=props)
    client.acks.get(timeout=5)


def ids_of(message: mqtt.MQTTMessage) -> list[int]:
    return list(getattr(message.properties, "SubscriptionIdentifier", []))


def test_subscription_identifiers_come_with_what_their_filter_delivers(
    tuned: RunningNode,
) -> None:
    """Each filter's Subscription Identifier is on the PUBLISH packets it delivers (one
    copy per overlapping filter, each with its own), none where it had none, and a
    resumed session keeps them."""
    port = tuned.mqtt_port or 0
    client, _ = paho(port, client_id="ids", expiry=60)
    publisher, _ = paho(port)
    try:
        assert client.connack_properties.SubscriptionIdentifierAvailable == 1
        subscribe_with_id(client, "ids/a", 7)
        subscribe_with_id(client, "ids/#", 9)
        subscribe_with_id(client, "plain/+", None)
        publisher.publish("ids/a", b"1", 1)
        got = sorted(ids_of(client.message()) + ids_of(client.message()))
        assert got == [7, 9]
        publisher.publish("plain/x", b"2", 1)
        assert ids_of(client.message()) == []
        client.close()
        publisher.publish("ids/b", b"3", 1)  # while it is away
        client, _ = paho(port, client_id="ids", clean=False, expiry=60)
        message = client.message()
        assert (message.topic, ids_of(message)) == ("ids/b", [9])
    finally:
        client.close()
        publisher.close()


def test_a_session_record_keeps_subscription_identifiers() -> None:
    """The records store keeps each filter's identifier; a record from before them reads."""
    options = TopicSubscription("ids/#", 1, subscription_id=9)
    session = Session("s", "c", 60, "e1", {"ids/#": FilterState(options, 4)})
    again = Session.from_record(session.record(), 1)
    assert again.filters["ids/#"].options.subscription_id == 9
    old = orjson.loads(session.record())
    old["filters"] = [row[:6] for row in old["filters"]]
    assert Session.from_record(orjson.dumps(old), 1).filters["ids/#"].options == replace(
        options, subscription_id=None
    )


def publish_expiring(client: Paho, topic: str, payload: bytes, qos: int, expiry: int) -> None:
    props = Properties(PacketTypes.PUBLISH)
    props.MessageExpiryInterval = expiry
    client.client.publish(topic, payload, qos, retain=True, properties=props).wait_for_publish(5)


def test_an_expired_message_is_not_delivered(tuned: RunningNode) -> None:
    """A message that waited past its Message Expiry Interval for a session away (or as
    a retained message) is dropped; one delivered later carries the seconds it has left."""
    port = tuned.mqtt_port or 0
    away, _ = paho(port, client_id="away", expiry=60)
    away.subscribe("exp/#", 2)
    away.close()
    publisher, _ = paho(port)
    try:
        for qos in (1, 2):
            publish_expiring(publisher, "exp/a", b"expire %d" % qos, qos, 1)
        for qos in (1, 2):
            publish_expiring(publisher, "exp/a", b"keep %d" % qos, qos, 6)
        publisher.publish("exp/b", b"never expires", 1)
        live, _ = paho(port)
        live.subscribe("exp/live", 1)
        publish_expiring(publisher, "exp/live", b"now", 1, 6)
        message = live.message()
        assert 5 <= message.properties.MessageExpiryInterval <= 6
        live.close()
        time.sleep(2.2)
        away, _ = paho(port, client_id="away", clean=False, expiry=60)
        got = {m.payload: m for m in [away.message() for _ in range(4)]}
        assert sorted(got) == [b"keep 1", b"keep 2", b"never expires", b"now"]
        for payload in (b"keep 1", b"keep 2", b"now"):
            assert 1 <= got[payload].properties.MessageExpiryInterval <= 4
        assert not hasattr(got[b"never expires"].properties, "MessageExpiryInterval")
        with pytest.raises(queue.Empty):
            away.message(timeout=0.3)
        away.close()
        publish_expiring(publisher, "exp/a", b"short", 1, 1)  # retained, for a second
        time.sleep(1.2)
        late, _ = paho(port)
        late.subscribe("exp/a", 1)
        with pytest.raises(queue.Empty):
            late.message(timeout=0.5)  # the retained message expired
        late.close()
    finally:
        publisher.close()

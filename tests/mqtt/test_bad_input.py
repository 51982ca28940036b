"""Hostile and malformed input on the MQTT listener: answered per the specification,
the node unharmed, nothing buffered or held before authentication."""

from __future__ import annotations

import socket
import time

import httpx
import pytest
from tests.mqtt.wire import (
    connect_packet,
    connected,
    dial,
    publish_packet,
    read_until_closed,
)

from polyport.testing import RunningNode


def healthy(node: RunningNode) -> None:
    assert httpx.get(f"{node.url}/healthz", timeout=2).status_code == 200
    with connected(node.mqtt_port or 0) as sock:  # still accepts a good client
        sock.sendall(b"\xc0\x00")
        assert sock.recv(2) == b"\xd0\x00"


def test_a_silent_socket_is_dropped_after_the_connect_timeout(dev: RunningNode) -> None:
    """A client that connects and sends nothing is closed once mqtt.connect_timeout (1 s) passes."""
    with dial(dev.mqtt_port or 0) as sock:
        started = time.monotonic()
        answer, closed = read_until_closed(sock, limit=5)
        assert closed and answer == b""
        assert 0.8 < time.monotonic() - started < 4
    healthy(dev)


def test_a_connect_a_byte_at_a_time_is_dropped_at_the_same_deadline(dev: RunningNode) -> None:
    """Trickling a CONNECT does not extend the deadline: it is for the whole packet."""
    packet = connect_packet(5)
    with dial(dev.mqtt_port or 0) as sock:
        started = time.monotonic()
        closed = False
        for byte in packet[:-1] * 10:
            try:
                sock.sendall(bytes((byte,)))
            except OSError:
                closed = True
                break
            time.sleep(0.2)
            if time.monotonic() - started > 5:
                break
        if not closed:
            _, closed = read_until_closed(sock, limit=2)
        assert closed
        assert time.monotonic() - started < 5
    healthy(dev)


def test_an_oversized_packet_is_refused_from_its_header(dev: RunningNode) -> None:
    """A CONNECT announcing 256 MiB is closed at once, its body never awaited."""
    with dial(dev.mqtt_port or 0) as sock:
        sock.sendall(b"\x10\xff\xff\xff\x7f")
        started = time.monotonic()
        answer, closed = read_until_closed(sock, limit=3)
        assert closed and answer == b""
        assert time.monotonic() - started < 0.8  # not the connect timeout
    with connected(dev.mqtt_port or 0) as sock:  # after CONNECT: MQTT 5 says why
        sock.sendall(b"\x30\xff\xff\xff\x7f")
        answer, closed = read_until_closed(sock)
        assert closed and answer[0] == 0xE0 and answer[2] == 0x95
    healthy(dev)


def test_a_publish_before_connect_closes_without_an_answer(dev: RunningNode) -> None:
    """The first packet must be CONNECT (MQTT-3.1.0-1)."""
    with dial(dev.mqtt_port or 0) as sock:
        sock.sendall(publish_packet(5, "sensors/s1/temperature", b'{"celsius":1}'))
        answer, closed = read_until_closed(sock)
        assert closed and answer == b""
    healthy(dev)


@pytest.mark.parametrize("level", [3, 6, 0])
def test_an_unknown_protocol_level_gets_return_code_1(dev: RunningNode, level: int) -> None:
    """Levels other than 4 and 5: a 3.1.1 CONNACK "unacceptable protocol version", then close."""
    with dial(dev.mqtt_port or 0) as sock:
        sock.sendall(connect_packet(level))
        answer, closed = read_until_closed(sock)
        assert closed and answer == b"\x20\x02\x00\x01"


def test_a_second_connect_is_a_protocol_error(dev: RunningNode) -> None:
    """CONNECT twice on one connection: MQTT 5 DISCONNECT 0x82."""
    with connected(dev.mqtt_port or 0) as sock:
        sock.sendall(connect_packet(5))
        answer, closed = read_until_closed(sock)
        assert closed and answer[0] == 0xE0 and answer[2] == 0x82


@pytest.mark.parametrize("topic", ["sensors/+/temperature", "sensors/#", ""])
def test_wildcards_in_a_publish_topic(dev: RunningNode, topic: str) -> None:
    """MQTT 5: DISCONNECT 0x90 topic name invalid; MQTT 3.1.1: the connection closed."""
    with connected(dev.mqtt_port or 0) as sock:
        sock.sendall(publish_packet(5, topic, b"{}", qos=1))
        answer, closed = read_until_closed(sock)
        assert closed and answer[0] == 0xE0 and answer[2] == 0x90
    with connected(dev.mqtt_port or 0, level=4) as sock:
        sock.sendall(publish_packet(4, topic, b"{}", qos=1))
        answer, closed = read_until_closed(sock)
        assert closed and answer == b""
    healthy(dev)


@pytest.mark.parametrize(
    "packet",
    [
        b"\x36\x05\x00\x01t\x00\x01",  # QoS 3
        b"\x82\x03\x00\x01\x00",  # SUBSCRIBE: properties, no filter
        b"\x80\x06\x00\x01\x00\x00\x01a",  # SUBSCRIBE with wrong flags
        b"\x30\x05\x00\x02\xff\xfe\x00",  # a topic that is not UTF-8
        b"\x30\x05\x00\x02a\x00\x00",  # U+0000 in a topic
        b"\x32\x06\x00\x01t\x00\x00\x00",  # packet id 0
        b"\xc0\x01\x00",  # PINGREQ with a body
        b"\x20\x02\x00\x00",  # a CONNACK from a client
        b"\x30\x80\x80\x80\x80\x01",  # a remaining length of five bytes
    ],
)
def test_malformed_packets_end_only_their_connection(dev: RunningNode, packet: bytes) -> None:
    """MQTT 5: DISCONNECT 0x81 or 0x82; MQTT 3.1.1: closed. The node goes on."""
    with connected(dev.mqtt_port or 0) as sock:
        sock.sendall(packet)
        answer, closed = read_until_closed(sock)
        assert closed and answer[0] == 0xE0 and answer[2] in (0x81, 0x82)
    with connected(dev.mqtt_port or 0, level=4) as sock:
        sock.sendall(packet)
        answer, closed = read_until_closed(sock)
        assert closed and answer == b""
    healthy(dev)


def test_keep_alive_one_and_a_half_times(dev: RunningNode) -> None:
    """A client silent for 1.5 times its keep-alive (1 s) is disconnected with 0x8D."""
    with connected(dev.mqtt_port or 0, keep_alive=1) as sock:
        started = time.monotonic()
        answer, closed = read_until_closed(sock, limit=5)
        took = time.monotonic() - started
        assert closed and answer[0] == 0xE0 and answer[2] == 0x8D
        assert 1.3 < took < 3


def test_a_pinging_client_stays(dev: RunningNode) -> None:
    """PINGREQ within the keep-alive keeps the connection; each gets PINGRESP."""
    with connected(dev.mqtt_port or 0, keep_alive=1) as sock:
        for _ in range(3):
            time.sleep(0.6)
            sock.sendall(b"\xc0\x00")
            assert sock.recv(2) == b"\xd0\x00"


def test_connections_are_bounded(tmp_path: object) -> None:
    """One more than mqtt.max_connections is closed as soon as it is accepted."""
    from pathlib import Path

    from tests.mqtt.conftest import node_settings
    from tests.mqtt.service import monitoring

    from polyport.testing import serve_in_thread

    settings = node_settings(Path(str(tmp_path)), dev=True, mqtt={"port": 0, "max_connections": 3})
    with serve_in_thread(monitoring, settings) as node:
        held = [dial(node.mqtt_port or 0) for _ in range(3)]
        try:
            time.sleep(0.2)
            with dial(node.mqtt_port or 0) as extra:
                answer, closed = read_until_closed(extra, limit=2)
                assert closed and answer == b""
        finally:
            for sock in held:
                sock.close()
        time.sleep(0.2)
        with connected(node.mqtt_port or 0):
            pass


def test_closed_sockets_are_not_an_error(dev: RunningNode) -> None:
    """A client vanishing mid-packet leaves nothing behind."""
    for _ in range(20):
        with socket.create_connection(("127.0.0.1", dev.mqtt_port or 0)) as sock:
            sock.sendall(connect_packet(5)[:7])
    healthy(dev)

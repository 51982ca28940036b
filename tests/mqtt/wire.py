"""Raw MQTT over a socket, for what no well-behaved client sends."""

from __future__ import annotations

import socket
import struct
import time

from polyport.edges.mqtt.codec import frame, properties, text


def connect_packet(
    level: int = 5,
    client_id: str = "raw",
    *,
    keep_alive: int = 0,
    password: str | None = None,
    clean: bool = True,
    props: list[tuple[int, object]] | None = None,
) -> bytes:
    flags = (0x02 if clean else 0) | (0xC0 if password is not None else 0)
    body = text("MQTT") + bytes((level, flags)) + struct.pack("!H", keep_alive)
    if level == 5:
        body += properties(props or [])
    body += text(client_id)
    if password is not None:
        body += text("user") + text(password)
    return frame(0x10, body)


def publish_packet(
    level: int, topic: str, payload: bytes, *, qos: int = 0, packet_id: int = 1
) -> bytes:
    body = text(topic) + (struct.pack("!H", packet_id) if qos else b"")
    if level == 5:
        body += properties([])
    return frame(0x30 | (qos << 1), body + payload)


def dial(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=5)


def read_until_closed(sock: socket.socket, limit: float = 5.0) -> tuple[bytes, bool]:
    """What the server sent until it closed (True), or until ``limit`` seconds (False)."""
    received = bytearray()
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        except ConnectionResetError:
            return bytes(received), True
        if not chunk:
            return bytes(received), True
        received += chunk
    return bytes(received), False


def connected(port: int, level: int = 5, **options: object) -> socket.socket:
    """A socket past CONNECT (its CONNACK read and checked)."""
    sock = dial(port)
    sock.sendall(connect_packet(level, **options))  # type: ignore[arg-type]
    head = sock.recv(2)
    assert head[0] == 0x20, head
    rest = b""
    while len(rest) < head[1]:
        rest += sock.recv(head[1] - len(rest))
    assert rest[1] == 0, rest
    return sock


def split_packets(data: bytes) -> list[tuple[int, bytes]]:
    """Whole packets in ``data``, as (first byte, body); a partial one at the end is left."""
    packets = []
    pos = 0
    while pos + 2 <= len(data):
        length = shift = 0
        used = 1
        while True:
            if pos + used >= len(data):
                return packets
            byte = data[pos + used]
            length |= (byte & 0x7F) << shift
            shift, used = shift + 7, used + 1
            if not byte & 0x80:
                break
        if pos + used + length > len(data):
            break
        packets.append((data[pos], data[pos + used : pos + used + length]))
        pos += used + length
    return packets

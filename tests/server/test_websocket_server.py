"""WebSocket on polyport's own server, spoken to over raw sockets: frames the protocol
refuses, and an upgrade that arrives behind pipelined requests."""

from __future__ import annotations

import base64
import os
import socket
import struct
import time
from collections.abc import Iterator

import orjson
import pytest
from websockets.frames import Frame, Opcode

from polyport import Service, Settings
from polyport.testing import RunningNode, serve_in_thread

svc = Service("echo")


@svc.method(public=True)
async def echo(text: str) -> str:
    return text


@pytest.fixture(scope="module")
def server() -> Iterator[RunningNode]:
    settings = Settings.model_validate(
        {
            "dev": True,
            "database": ":memory:",
            "event_log": "memory",
            "grpc": {"enabled": False},
            "server": {"keep_alive": 0.3},  # a WebSocket outlives the HTTP idle timeout
        }
    )
    with serve_in_thread(svc, settings, edges=["rest", "ws"]) as running:
        yield running


def _upgrade(path: bytes = b"/ws") -> bytes:
    key = base64.b64encode(os.urandom(16))
    return (
        b"GET %b HTTP/1.1\r\nhost: x\r\nupgrade: websocket\r\nconnection: Upgrade\r\n"
        b"sec-websocket-key: %b\r\nsec-websocket-version: 13\r\n\r\n" % (path, key)
    )


class Raw:
    def __init__(self, server: RunningNode) -> None:
        self.sock = socket.create_connection((server.host, server.port), timeout=5)
        self.rfile = self.sock.makefile("rb")

    def close(self) -> None:
        self.rfile.close()
        self.sock.close()

    def head(self) -> tuple[int, dict[bytes, bytes]]:
        status = int(self.rfile.readline().split()[1])
        headers = {}
        while (line := self.rfile.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        return status, headers

    def frame(self) -> tuple[int, bytes]:
        """The next server frame: opcode and payload."""
        first, second = self.rfile.read(2)
        size = second & 0x7F
        if size == 126:
            size = struct.unpack("!H", self.rfile.read(2))[0]
        elif size == 127:
            size = struct.unpack("!Q", self.rfile.read(8))[0]
        return first & 0x0F, self.rfile.read(size)


@pytest.fixture
def raw(server: RunningNode) -> Iterator[Raw]:
    connection = Raw(server)
    yield connection
    connection.close()


def test_invalid_utf8_in_a_text_message_closes_1007(raw: Raw) -> None:
    """RFC 6455 8.1: close 1007 (was a failed data_received and a dropped transport)."""
    raw.sock.sendall(_upgrade())
    assert raw.head()[0] == 101
    assert orjson.loads(raw.frame()[1])["type"] == "welcome"
    raw.sock.sendall(Frame(Opcode.TEXT, b'{"id": 1, "type": "\xff\xfe"}').serialize(mask=True))
    opcode, payload = raw.frame()
    assert opcode == Opcode.CLOSE.value
    assert struct.unpack("!H", payload[:2])[0] == 1007
    assert raw.rfile.read(1) == b""


def test_an_upgrade_behind_pipelined_requests_waits_its_turn(raw: Raw) -> None:
    """A request, then a WebSocket handshake, in one write: 200 first, then 101 (the 101
    used to go out first, and the 200 after it, inside the WebSocket stream)."""
    body = orjson.dumps({"text": "before"})
    raw.sock.sendall(
        b"POST /v1/echo HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\n\r\n%b" % (len(body), body) + _upgrade()
    )
    status, headers = raw.head()
    assert status == 200
    assert raw.rfile.read(int(headers[b"content-length"])) == b'"before"'
    assert raw.head()[0] == 101
    assert orjson.loads(raw.frame()[1])["type"] == "welcome"
    time.sleep(0.6)  # past server.keep_alive: no HTTP timer may close the WebSocket
    raw.sock.sendall(Frame(Opcode.TEXT, b'{"id": 1, "type": "ping"}').serialize(mask=True))
    assert orjson.loads(raw.frame()[1])["type"] == "pong"


def test_frames_sent_with_the_handshake_are_not_lost(raw: Raw) -> None:
    """A client may send its first frame with the handshake: it is the WebSocket's."""
    ping = Frame(Opcode.TEXT, b'{"id": 7, "type": "ping"}').serialize(mask=True)
    raw.sock.sendall(_upgrade() + ping)
    assert raw.head()[0] == 101
    assert orjson.loads(raw.frame()[1])["type"] == "welcome"
    answer = orjson.loads(raw.frame()[1])
    assert answer["type"] == "pong" and answer["id"] == 7

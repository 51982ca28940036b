"""Request bodies on polyport's own server: complete in the first packet, late, or refused.

The server reads Content-Length and ``Expect`` only when a body has not
arrived with its headers; these pin down that both ways behave alike.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import orjson
import pytest

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
            "database": ":memory:",
            "event_log": "memory",
            "grpc": {"enabled": False},
            "limits": {"max_body": 1024},
        }
    )
    with serve_in_thread(svc, settings) as running:
        yield running


def _rpc(payload: object, content_type: bytes = b"application/json") -> bytes:
    body = orjson.dumps(payload)
    return (
        b"POST /jsonrpc HTTP/1.1\r\nhost: x\r\ncontent-type: %b\r\n"
        b"content-length: %d\r\n\r\n%b" % (content_type, len(body), body)
    )


class _Reader:
    def __init__(self, server: RunningNode) -> None:
        self.sock = socket.create_connection((server.host, server.port), timeout=5)
        self.rfile = self.sock.makefile("rb")

    def close(self) -> None:
        self.rfile.close()
        self.sock.close()

    def response(self) -> tuple[bytes, dict[bytes, bytes], bytes]:
        status = self.rfile.readline().rstrip(b"\r\n")
        headers = {}
        while (line := self.rfile.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        return status, headers, self.rfile.read(int(headers.get(b"content-length", b"0")))


@pytest.fixture
def conn(server: RunningNode) -> Iterator[_Reader]:
    reader = _Reader(server)
    yield reader
    reader.close()


def test_pipelined_json_rpc_calls_in_one_packet_keep_their_ids(conn: _Reader) -> None:
    """Whole requests in one packet: answered in order, each id as sent, notifications 204."""
    call = {"jsonrpc": "2.0", "method": "echo.echo", "params": {"text": "a"}}
    ids: list[object] = [7, "seven", 7.5, None, -9223372036854775808]
    conn.sock.sendall(
        b"".join(_rpc({**call, "id": i}) for i in ids)
        + _rpc(call)  # a notification
        + _rpc({**call, "id": 1}, b"application/json; charset=utf-8")
    )
    for request_id in ids:
        status, _, body = conn.response()
        assert status == b"HTTP/1.1 200 OK"
        answer = orjson.loads(body)
        assert answer == {"jsonrpc": "2.0", "result": "a", "id": request_id}
        assert body.endswith(b',"id":' + orjson.dumps(request_id) + b"}")
    assert conn.response()[0] == b"HTTP/1.1 204 No Content"
    assert orjson.loads(conn.response()[2])["result"] == "a"


def test_a_body_that_is_not_json_is_refused_415(conn: _Reader) -> None:
    conn.sock.sendall(_rpc({"jsonrpc": "2.0", "method": "echo.echo", "id": 1}, b"text/plain"))
    assert conn.response()[0].startswith(b"HTTP/1.1 415")


def test_a_complete_body_over_the_limit_gets_413_and_close(conn: _Reader) -> None:
    """Sent whole with its headers, a body over ``limits.max_body`` is still refused."""
    conn.sock.sendall(_rpc({"jsonrpc": "2.0", "method": "echo.echo", "params": ["x" * 2000]}))
    status, headers, _ = conn.response()
    assert status.startswith(b"HTTP/1.1 413")
    assert headers[b"connection"] == b"close"


def test_expect_continue_over_the_limit_gets_413_without_100(conn: _Reader) -> None:
    """A declared length over the limit is refused at once: no interim 100 Continue."""
    conn.sock.sendall(
        b"POST /jsonrpc HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\n"
        b"content-type: application/json\r\ncontent-length: 5000\r\n\r\n"
    )
    status, headers, _ = conn.response()
    assert status.startswith(b"HTTP/1.1 413")
    assert headers[b"connection"] == b"close"


def test_a_late_body_is_waited_for_and_expect_continue_answered(conn: _Reader) -> None:
    body = b'{"jsonrpc":"2.0","method":"echo.echo","params":{"text":"late"},"id":3}'
    conn.sock.sendall(
        b"POST /jsonrpc HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\n"
        b"content-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(body)
    )
    assert conn.rfile.readline() == b"HTTP/1.1 100 Continue\r\n"
    assert conn.rfile.readline() == b"\r\n"
    conn.sock.sendall(body[:10])
    conn.sock.sendall(body[10:])
    status, _, answer = conn.response()
    assert status == b"HTTP/1.1 200 OK"
    assert orjson.loads(answer) == {"jsonrpc": "2.0", "result": "late", "id": 3}

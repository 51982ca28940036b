"""polyport's own HTTP/1.1 server, spoken to over raw sockets."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from polyport import Service, Settings
from polyport.testing import RunningNode, serve_in_thread

svc = Service("echo")


@svc.method(public=True)
async def echo(text: str) -> str:
    return text


@pytest.fixture(scope="module")
def server() -> Iterator[RunningNode]:
    with serve_in_thread(
        svc, Settings(database=":memory:", event_log="memory", grpc={"enabled": False})
    ) as running:
        yield running


class Client:
    """A raw HTTP/1.1 client over one socket, reading responses from a buffered file."""

    def __init__(self, server: RunningNode) -> None:
        self.sock = socket.create_connection((server.host, server.port), timeout=5)
        self.rfile = self.sock.makefile("rb")

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.rfile.close()
        self.sock.close()

    def sendall(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv(self, n: int) -> bytes:
        return self.rfile.read1(n)

    def response(self) -> tuple[bytes, dict[bytes, bytes], bytes]:
        """One response: status line, headers, body (by Content-Length)."""
        status = self.rfile.readline().rstrip(b"\r\n")
        if not status:
            raise ConnectionError("closed before a response")
        headers = {}
        while (line := self.rfile.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        body = self.rfile.read(int(headers.get(b"content-length", b"0")))
        return status, headers, body


def connect(server: RunningNode) -> Client:
    return Client(server)


def post(text: str, *, close: bool = False) -> bytes:
    body = b'{"text": "%s"}' % text.encode()
    extra = b"connection: close\r\n" if close else b""
    return (
        b"POST /v1/echo HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        + extra
        + b"content-length: %d\r\n\r\n" % len(body)
        + body
    )


def test_keep_alive_serves_many_requests_on_one_connection(server: RunningNode) -> None:
    """HTTP/1.1 connections stay open between requests."""
    with connect(server) as sock:
        for i in range(5):
            sock.sendall(post(f"n{i}"))
            status, headers, body = sock.response()
            assert status == b"HTTP/1.1 200 OK"
            assert body == b'"n%d"' % i
            assert b"connection" not in headers
            assert headers[b"date"]


def test_pipelined_requests_are_answered_in_order(server: RunningNode) -> None:
    """Several requests sent at once get their answers in the same order."""
    with connect(server) as sock:
        sock.sendall(b"".join(post(f"p{i}") for i in range(6)))
        bodies = []
        for _ in range(6):
            status, _, body = sock.response()
            assert status.endswith(b"200 OK")
            bodies.append(body)
        assert bodies == [b'"p%d"' % i for i in range(6)]


def test_connection_close_and_http_1_0(server: RunningNode) -> None:
    """'Connection: close' and HTTP/1.0 without keep-alive end the connection after the answer."""
    with connect(server) as sock:
        sock.sendall(post("bye", close=True))
        _, headers, body = sock.response()
        assert headers[b"connection"] == b"close" and body == b'"bye"'
        assert sock.recv(10) == b""
    with connect(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
        status, headers, _ = sock.response()
        assert status.endswith(b"200 OK") and headers[b"connection"] == b"close"
        assert sock.recv(10) == b""


def test_chunked_request_bodies_and_expect_continue(server: RunningNode) -> None:
    """Chunked uploads work; 'Expect: 100-continue' gets its interim answer first."""
    with connect(server) as sock:
        sock.sendall(
            b"POST /v1/echo HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n"
            b"content-type: application/json\r\n\r\n"
            b'5\r\n{"tex\r\n9\r\nt": "ok"}\r\n0\r\n\r\n'
        )
        _, _, body = sock.response()
        assert body == b'"ok"'
        sock.sendall(
            b"POST /v1/echo HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\n"
            b"content-type: application/json\r\ncontent-length: 14\r\n\r\n"
        )
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b'{"text": "go"}')
        _, _, body = sock.response()
        assert body == b'"go"'


def test_malformed_requests_get_400_and_are_closed(server: RunningNode) -> None:
    """Garbage is answered 400 and the connection closed; the server carries on."""
    for garbage in (
        b"NOT HTTP AT ALL\r\n\r\n",
        b"GET / HTTP/1.1\r\nbad header line\r\n\r\n",
        b"GET / HTTP/1.1\r\ncontent-length: -5\r\n\r\n",
    ):
        with connect(server) as sock:
            sock.sendall(garbage)
            status, headers, _ = sock.response()
            assert status.startswith(b"HTTP/1.1 400"), garbage
            assert headers[b"connection"] == b"close"
    assert httpx.get(f"{server.url}/healthz").status_code == 200


def test_oversized_headers_get_431(server: RunningNode) -> None:
    """Headers beyond the limits (count or bytes) are refused with 431."""
    with connect(server) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\n" + b"x-big: " + b"a" * 70_000 + b"\r\n\r\n")
        status, _, _ = sock.response()
        assert status.startswith(b"HTTP/1.1 431")
    with connect(server) as sock:
        many = b"".join(b"x-h%d: v\r\n" % i for i in range(150))
        sock.sendall(b"GET / HTTP/1.1\r\n" + many + b"\r\n")
        status, _, _ = sock.response()
        assert status.startswith(b"HTTP/1.1 431")


def test_oversized_bodies_get_413_and_close(server: RunningNode) -> None:
    """A declared length over the limit is refused before it is read."""
    with connect(server) as sock:
        sock.sendall(
            b"POST /v1/echo HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b"content-length: 99999999\r\n\r\n{"
        )
        status, headers, _ = sock.response()
        assert status.startswith(b"HTTP/1.1 413")
        assert headers[b"connection"] == b"close"


def test_header_values_cannot_split_a_response(server: RunningNode) -> None:
    """Response header values never carry CR or LF (no response splitting)."""
    response = httpx.post(
        f"{server.url}/v1/echo", json={"text": "x"}, headers={"x-request-id": "abc"}
    )
    assert response.status_code == 200


def test_idle_connections_are_closed(server: RunningNode) -> None:
    """A connection that sends nothing is closed after the keep-alive timeout."""
    server.node.server.state.limits.keep_alive = 0.3
    try:
        with connect(server) as sock:
            began = time.monotonic()
            assert sock.recv(10) == b""
            assert time.monotonic() - began < 4
    finally:
        server.node.server.state.limits.keep_alive = 5.0


def test_connections_are_counted_and_released(server: RunningNode) -> None:
    """Closed connections leave the server's table."""
    state = server.node.server.state
    before = len(state.connections)
    socks = [connect(server) for _ in range(20)]
    for sock in socks:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        sock.response()
    assert len(state.connections) >= before + 20
    for sock in socks:
        sock.close()
    for _ in range(100):
        if len(state.connections) <= before:
            break
        time.sleep(0.02)
    assert len(state.connections) <= before

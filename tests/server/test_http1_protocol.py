"""What polyport's own server answers to requests HTTP/1.1 lets it refuse, or ignore.

RFC 9112 3.2: a Host missing (HTTP/1.1) or repeated is 400. RFC
9110 7.8: an Upgrade the server does not take is ignored and the request
served in HTTP/1.1 (curl offers h2c on every plain ``http://`` request with
``--http2``). A URL too long is 414, a body that does not come in time 408.
Answers keep their order behind pipelined requests, and a client's mistake is
one line at debug in the log, never a traceback.
"""

from __future__ import annotations

import logging
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
            "server": {"body_timeout": 0.5},
        }
    )
    with serve_in_thread(svc, settings) as running:
        yield running


class Raw:
    """One raw connection: send bytes, read whole responses."""

    def __init__(self, server: RunningNode) -> None:
        self.sock = socket.create_connection((server.host, server.port), timeout=5)
        self.rfile = self.sock.makefile("rb")

    def close(self) -> None:
        self.rfile.close()
        self.sock.close()

    def response(self) -> tuple[int, dict[bytes, bytes], bytes]:
        status = self.rfile.readline()
        if not status:
            raise ConnectionError("closed before a response")
        headers = {}
        while (line := self.rfile.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        body = self.rfile.read(int(headers.get(b"content-length", b"0")))
        return int(status.split()[1]), headers, body

    def closed(self) -> bool:
        return self.rfile.read1(10) == b""


@pytest.fixture
def raw(server: RunningNode) -> Iterator[Raw]:
    connection = Raw(server)
    yield connection
    connection.close()


def _post(text: str, *, extra: bytes = b"") -> bytes:
    body = orjson.dumps({"text": text})
    return (
        b"POST /v1/echo HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n%b"
        b"content-length: %d\r\n\r\n%b" % (extra, len(body), body)
    )


#: What ``curl --http2 http://…`` sends with every request.
H2C = (
    b"connection: Upgrade, HTTP2-Settings\r\nupgrade: h2c\r\n"
    b"http2-settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n"
)


# -- Upgrade ----------------------------------------------------------------------------------


def test_an_h2c_offer_is_ignored_and_served_as_http_1_1(raw: Raw) -> None:
    """curl's h2c offer on a GET: 200 in HTTP/1.1, and the connection goes on (was 404)."""
    raw.sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\n" + H2C + b"\r\n")
    status, headers, body = raw.response()
    assert status == 200 and orjson.loads(body) == {"status": "ok"}
    assert b"upgrade" not in headers and b"connection" not in headers
    raw.sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
    assert raw.response()[0] == 200


def test_an_ignored_upgrade_keeps_its_body_and_the_request_after_it(raw: Raw) -> None:
    """The parser stops at an Upgrade before the body: the body still reaches the endpoint,
    and a request pipelined after it is answered next (neither is taken for a request)."""
    chunked = (
        b"POST /v1/echo HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        + H2C
        + b'transfer-encoding: chunked\r\n\r\n6\r\n{"text\r\n9\r\n": "two"}\r\n0\r\n\r\n'
    )
    raw.sock.sendall(
        _post("one", extra=H2C) + chunked + b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n"
    )
    assert [raw.response()[2] for _ in range(3)] == [b'"one"', b'"two"', b'{"status":"ok"}']


def test_a_websocket_upgrade_off_a_websocket_route_is_plain_http(raw: Raw) -> None:
    """Upgrade: websocket where no WebSocket endpoint is: the route answers (was 404)."""
    raw.sock.sendall(
        b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: websocket\r\n"
        b"sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n"
    )
    assert raw.response()[0] == 200


# -- refusals ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "head",
    [
        b"GET /healthz HTTP/1.1\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nhost: a\r\nhost: b\r\n\r\n",
        b"GET /healthz HTTP/1.0\r\nhost: a\r\nhost: b\r\n\r\n",
    ],
    ids=["missing", "twice", "twice-1.0"],
)
def test_a_missing_or_repeated_host_is_400(raw: Raw, head: bytes) -> None:
    raw.sock.sendall(head)
    status, headers, _ = raw.response()
    assert status == 400 and headers[b"connection"] == b"close"
    assert raw.closed()


def test_http_1_0_needs_no_host_and_an_empty_host_is_allowed(server: RunningNode) -> None:
    for head in (b"GET /healthz HTTP/1.0\r\n\r\n", b"GET /healthz HTTP/1.1\r\nhost:\r\n\r\n"):
        connection = Raw(server)
        try:
            connection.sock.sendall(head)
            assert connection.response()[0] == 200
        finally:
            connection.close()


def test_a_long_url_is_414(raw: Raw) -> None:
    """Past server.max_url (32 KiB): 414, not 431 (the headers are not too large)."""
    raw.sock.sendall(b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\nhost: x\r\n\r\n")
    status, headers, _ = raw.response()
    assert status == 414 and headers[b"connection"] == b"close"


def test_a_body_that_does_not_come_in_time_is_408(raw: Raw) -> None:
    """server.body_timeout passes with the body half sent: 408 and close, not 422."""
    raw.sock.sendall(
        b"POST /v1/echo HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b'content-length: 100\r\n\r\n{"text": '
    )
    status, headers, body = raw.response()
    assert status == 408 and headers[b"connection"] == b"close"
    assert orjson.loads(body)["status"] == 408
    assert raw.closed()


def test_connect_is_refused_and_logged_in_one_line(
    raw: Raw, caplog: pytest.LogCaptureFixture
) -> None:
    """CONNECT (a proxy's method) is 400, logged at debug without a traceback (it was
    logged as an error with one, which any client could repeat to flood the log)."""
    caplog.set_level(logging.DEBUG, logger="polyport")
    raw.sock.sendall(b"CONNECT example.com:443 HTTP/1.1\r\nhost: example.com:443\r\n\r\n")
    status, _, body = raw.response()
    assert status == 400 and b"CONNECT" in body
    assert raw.closed()
    records = [r for r in caplog.records if r.name.startswith("polyport")]
    assert records and all(r.levelno == logging.DEBUG and not r.exc_info for r in records)


def test_garbage_is_refused_in_one_line(raw: Raw, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="polyport")
    raw.sock.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 TLS to a plain port\r\n\r\n")
    assert raw.response()[0] == 400
    records = [r for r in caplog.records if r.name.startswith("polyport")]
    assert all(r.levelno == logging.DEBUG and not r.exc_info for r in records)


def test_a_refusal_waits_behind_the_answers_before_it(raw: Raw) -> None:
    """Pipelined: a good request, then a malformed one. The 200 comes first, then the
    400 (it used to be written at once, ahead of the answer it should follow)."""
    raw.sock.sendall(_post("first") + b"NOT HTTP AT ALL\r\n\r\n")
    status, _, body = raw.response()
    assert (status, body) == (200, b'"first"')
    status, headers, _ = raw.response()
    assert status == 400 and headers[b"connection"] == b"close"

"""How many connections a node serves, and how it lets go of the ones that stop reading."""

from __future__ import annotations

import resource
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from polyport import Service, Settings
from polyport.server.limits import MIN_RESERVED_FDS, Limits, connection_limit
from polyport.testing import RunningNode, serve_in_thread

from .conftest import CLIENT_RCVBUF, aborted, stall_node

svc = Service("big")


@svc.method(public=True)
async def big(size: int) -> str:
    return "x" * size


@pytest.fixture(scope="module")
def server() -> Iterator[RunningNode]:
    settings = Settings.model_validate(
        {
            "database": ":memory:",
            "event_log": "memory",
            "grpc": {"enabled": False},
            "server": {"max_connections": 4, "send_timeout": 0.5, "keep_alive": 30},
        }
    )
    with serve_in_thread(svc, settings, edges=["rest"]) as running:
        yield running


def _healthz(sock: socket.socket) -> bytes:
    """Ask /healthz on ``sock``; the status line of the answer."""
    sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
    answer = b""
    while b"\r\n\r\n" not in answer:
        chunk = sock.recv(4096)
        if not chunk:
            break
        answer += chunk
    return answer.split(b"\r\n", 1)[0]


def test_connections_past_the_limit_get_503(server: RunningNode) -> None:
    """server.max_connections open: the next is answered 503 and closed; one closes, and
    a new one is served again."""
    socks = [socket.create_connection((server.host, server.port), timeout=5) for _ in range(5)]
    try:
        assert [_healthz(s) for s in socks[:4]] == [b"HTTP/1.1 200 OK"] * 4
        assert _healthz(socks[4]) == b"HTTP/1.1 503 Service Unavailable"
        assert socks[4].recv(10) == b""
        socks[0].close()
        deadline = time.monotonic() + 5
        while len(server.node.server.state.connections) >= 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        with socket.create_connection((server.host, server.port), timeout=5) as again:
            assert _healthz(again) == b"HTTP/1.1 200 OK"
    finally:
        for sock in socks:
            sock.close()


def test_the_default_limit_leaves_descriptors_for_the_rest_of_the_node() -> None:
    """Unset, max_connections is the open-file limit less a tenth of it (at least 64):
    it was 20,000, the very limit of this machine, so its 503 could never fire."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    assert Limits().max_connections == connection_limit()
    if soft != resource.RLIM_INFINITY:
        assert connection_limit() == soft - max(MIN_RESERVED_FDS, soft // 10)
    assert Limits(max_connections=7).max_connections == 7


def test_a_node_with_few_descriptors_answers_503_before_it_runs_out(tmp_path: Path) -> None:
    """With ``ulimit -n 256`` the node serves 192 connections, answers the next 503, and
    keeps serving (before: it accepted until EMFILE, and then no one was answered)."""
    limit = 256 - max(MIN_RESERVED_FDS, 256 // 10)
    with stall_node(tmp_path, "rest", max_open_files=256, POLYPORT_SERVER__KEEP_ALIVE="60") as node:
        socks = [node.connect() for _ in range(limit + 1)]
        statuses = [_healthz(sock) for sock in socks]
        assert statuses[:limit] == [b"HTTP/1.1 200 OK"] * limit
        assert statuses[limit] == b"HTTP/1.1 503 Service Unavailable"
        for sock in socks:
            sock.close()
        time.sleep(0.2)
        assert node.healthz_seconds() < 1.0


def test_a_closed_connection_the_client_does_not_read_is_reset(server: RunningNode) -> None:
    """``Connection: close`` on a 4 MB answer that is never read: after send_timeout the
    node resets the connection (before: the close waited on the reader for ever)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, CLIENT_RCVBUF)
        sock.settimeout(5)
        sock.connect((server.host, server.port))
        body = orjson.dumps({"size": 4 * 1024 * 1024})
        sock.sendall(
            b"POST /v1/big HTTP/1.1\r\nhost: x\r\nconnection: close\r\n"
            b"content-type: application/json\r\ncontent-length: %d\r\n\r\n%b" % (len(body), body)
        )
        assert aborted(sock, within=5)

"""Clients that stop reading cost the node a bounded amount of memory, and are dropped.

One node per test, in a process of its own (``stallnode.py``), so its memory
is its resident set size and nothing else's. Each test warms the node up,
notes its RSS, resets the kernel's peak (``VmHWM``, through
``/proc/PID/clear_refs``), runs a client that stops reading, and checks that

* the peak stayed within a bound far below what the client was sent (what
  buffering it all would have cost);
* ``/healthz`` answered within a second meanwhile;
* the stalled connection was aborted: the client's socket saw a reset, not a
  polite close that would wait on the unread bytes (and hold them) forever.

The clients' receive buffers are tiny, so the kernel holds little on their
behalf and what the node buffers shows. Send and stall timeouts are set short
through ``POLYPORT_*`` variables, as an operator would.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import grpc
import httpx
import orjson
from websockets.frames import Opcode

from .conftest import (
    MB,
    TCP_CLOSE,
    StallNode,
    aborted,
    frame,
    read_frame,
    read_head,
    sending,
    stall_node,
    tcp_state,
    websocket,
)


def publish_until_aborted(node: StallNode, sock: socket.socket, size: int) -> int:
    """Publish rounds of ``size``-byte events until the node drops ``sock``; bytes published."""
    published = 0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        published += node.call("emit", count=100, size=size) * size
        assert node.healthz_seconds() < 1.0
        if tcp_state(sock) == TCP_CLOSE:
            return published
    raise AssertionError(f"the stalled client was not dropped ({published} bytes published)")


def settle(node: StallNode) -> int:
    """The node's RSS once warm, with the peak counted from now."""
    time.sleep(0.2)
    baseline = node.rss()
    node.reset_peak()
    return baseline


# -- requests and answers on one connection --------------------------------------------------


def test_pipelined_static_file_to_a_client_that_never_reads(tmp_path: Path) -> None:
    """The reproduction, scaled: 200 pipelined GETs of the 1.3 MB GraphiQL script, never
    read. The node holds about one answer, not 260 MB, and drops the client after the
    send timeout (before: every answer buffered, and the connection kept)."""
    with stall_node(tmp_path, "graphql") as node:
        path = "/static/graphiql/graphiql.js"
        size = len(httpx.get(node.url + path).content)
        assert size > MB
        baseline = settle(node)
        sock = node.connect()
        sock.sendall(b"GET %b HTTP/1.1\r\nhost: x\r\n\r\n" % path.encode() * 200)
        time.sleep(0.5)
        assert node.healthz_seconds() < 1.0
        assert aborted(sock)
        assert node.healthz_seconds() < 1.0
        growth = node.peak() - baseline
        assert growth < 24 * MB, f"{growth / MB:.1f} MB for {200 * size / MB:.0f} MB asked for"


def test_pipelined_bodies_wait_in_the_socket_not_in_the_node(tmp_path: Path) -> None:
    """Behind a slow request, pipelined 6 MB bodies stay unread in the socket: the node
    holds one body at a time (before: 16 of them, up to 16 times max_body)."""
    with stall_node(tmp_path, "rest", POLYPORT_LIMITS__MAX_BODY=str(8 * MB)) as node:
        body = orjson.dumps({"text": "x" * (6 * MB)})
        post = b"POST /v1/echo HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        one = post + b"content-length: %d\r\n\r\n%b" % (len(body), body)
        assert node.call("echo", text="x" * (6 * MB)) == 6 * MB  # warm: one body through
        baseline = settle(node)
        sock = node.connect()
        slow = orjson.dumps({"seconds": 2})
        sock.sendall(
            b"POST /v1/slow HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n%b" % (len(slow), slow)
        )
        sender = sending(sock, one * 12)
        time.sleep(1.5)  # the slow request holds the line; the bodies arrive behind it
        assert node.healthz_seconds() < 1.0
        waiting = node.peak() - baseline
        assert waiting < 4 * MB, f"{waiting / MB:.1f} MB held while the slow request ran"
        sender.join(60)
        assert not sender.is_alive()
        growth = node.peak() - baseline
        assert growth < 48 * MB, f"{growth / MB:.1f} MB for {12 * len(body) / MB:.0f} MB sent"


# -- streams --------------------------------------------------------------------------------


def test_sse_client_that_stops_reading_is_aborted(tmp_path: Path) -> None:
    """An SSE subscriber that stops reading while 32 KiB events pour in: bounded, then
    reset after the stall timeout (before: half-closed, kept open with its buffer)."""
    with stall_node(tmp_path, "rest,sse") as node:
        node.call("emit", count=100, size=32 * 1024)
        baseline = settle(node)
        sock = node.connect()
        sock.sendall(b"GET /v1/events/stream?channel=blobs HTTP/1.1\r\nhost: x\r\n\r\n")
        assert read_head(sock).startswith(b"HTTP/1.1 200")
        published = publish_until_aborted(node, sock, 32 * 1024)
        growth = node.peak() - baseline
        assert growth < 16 * MB, f"{growth / MB:.1f} MB for {published / MB:.0f} MB published"


def test_sse_server_stream_that_outruns_its_reader_is_paced(tmp_path: Path) -> None:
    """A server-streaming method over SSE that yields 32 KiB items for ever, to a client
    that stops reading: the generator is paced by the socket, then the client is reset
    (before: every item written at once, memory without a bound)."""
    with stall_node(tmp_path, "rest,sse") as node:
        baseline = settle(node)
        sock = node.connect()
        sock.sendall(b"GET /v1/blobs/stream?size=32768 HTTP/1.1\r\nhost: x\r\n\r\n")
        assert read_head(sock).startswith(b"HTTP/1.1 200")
        time.sleep(0.5)
        assert node.healthz_seconds() < 1.0
        assert aborted(sock)
        growth = node.peak() - baseline
        assert growth < 8 * MB, f"{growth / MB:.1f} MB held for a stalled stream"


def test_websocket_subscriber_that_stops_reading_is_aborted(tmp_path: Path) -> None:
    """/ws: subscribe, then never read: bounded, then closed 1013 and reset."""
    with stall_node(tmp_path, "rest,ws") as node:
        node.call("emit", count=100, size=32 * 1024)
        baseline = settle(node)
        sock = websocket(node, "/ws")
        assert orjson.loads(read_frame(sock))["type"] == "welcome"
        sock.sendall(frame({"id": 1, "type": "subscribe", "channels": ["blobs"]}))
        answer = orjson.loads(read_frame(sock))
        assert answer["type"] == "subscribed", answer
        published = publish_until_aborted(node, sock, 32 * 1024)
        growth = node.peak() - baseline
        assert growth < 16 * MB, f"{growth / MB:.1f} MB for {published / MB:.0f} MB published"


def test_graphql_subscriber_that_stops_reading_is_aborted(tmp_path: Path) -> None:
    """graphql-transport-ws on /graphql: subscribe, then never read: bounded, then reset."""
    with stall_node(tmp_path, "rest,graphql") as node:
        node.call("emit", count=100, size=32 * 1024)
        baseline = settle(node)
        sock = websocket(node, "/graphql", "graphql-transport-ws")
        sock.sendall(frame({"type": "connection_init"}))
        assert orjson.loads(read_frame(sock))["type"] == "connection_ack"
        query = "subscription { blobsAdded { data { n data } } }"
        sock.sendall(frame({"id": "1", "type": "subscribe", "payload": {"query": query}}))
        time.sleep(0.3)  # the subscription is live before the first publish
        published = publish_until_aborted(node, sock, 32 * 1024)
        growth = node.peak() - baseline
        assert growth < 16 * MB, f"{growth / MB:.1f} MB for {published / MB:.0f} MB published"


def test_json_rpc_caller_that_never_reads_its_answers_is_aborted(tmp_path: Path) -> None:
    """JSON-RPC over the WebSocket: 400 calls answering 64 KiB each, never read."""
    with stall_node(tmp_path, "rest,jsonrpc") as node:
        baseline = settle(node)
        sock = websocket(node, "/jsonrpc")
        calls = b"".join(
            frame({"jsonrpc": "2.0", "method": "stall.blob", "params": {"size": 65536}, "id": i})
            for i in range(400)
        )
        sender = sending(sock, calls)
        time.sleep(0.5)
        assert node.healthz_seconds() < 1.0
        assert aborted(sock)
        sender.join(30)
        growth = node.peak() - baseline
        assert growth < 16 * MB, f"{growth / MB:.1f} MB for {400 * 65536 / MB:.0f} MB of answers"


def test_ping_flood_that_never_reads_its_pongs_is_bounded(tmp_path: Path) -> None:
    """200,000 pings of 125 bytes, pongs never read: the node stops reading once its send
    buffer is full, then drops the client (before: 25 MB of pongs queued, and kept)."""
    with stall_node(tmp_path, "rest,ws") as node:
        baseline = settle(node)
        sock = websocket(node, "/ws")
        ping = frame(b"p" * 125, Opcode.PING)
        sender = sending(sock, ping * 200_000)
        time.sleep(1.0)
        assert node.healthz_seconds() < 1.0
        assert aborted(sock, within=30)
        sender.join(30)
        growth = node.peak() - baseline
        assert growth < 8 * MB, f"{growth / MB:.1f} MB for {200_000 * 127 / MB:.0f} MB of pongs"


def test_grpc_stream_that_stops_reading_stays_bounded(tmp_path: Path) -> None:
    """The gRPC event stream, read once then never again: HTTP/2 flow control (grpcio's
    own) holds the events back, so the node's memory stays bounded."""
    with stall_node(tmp_path, "rest,grpc") as node:
        node.call("emit", count=100, size=32 * 1024)
        baseline = settle(node)
        channel = grpc.insecure_channel(f"127.0.0.1:{node.grpc_port}")
        try:
            subscribe = channel.unary_stream("/polyport.events.v1.Events/Subscribe")
            stream = subscribe(b"\x0a\x05blobs", timeout=60)  # SubscribeRequest(channels=["blobs"])
            next(stream)  # the empty first batch: the subscription is live
            published = 0
            for _ in range(20):
                published += node.call("emit", count=100, size=32 * 1024) * 32 * 1024
                assert node.healthz_seconds() < 1.0
            growth = node.peak() - baseline
            assert growth < 32 * MB, f"{growth / MB:.1f} MB for {published / MB:.0f} MB published"
            stream.cancel()
        finally:
            channel.close()

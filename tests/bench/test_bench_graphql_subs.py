"""GraphQL subscription fan-out (``python -m polyport.bench.graphql_subs``): its client, a tiny run.

No speed is asserted: the subscriber must count exactly the ``next`` frames,
and a short run must deliver every message to every subscriber over both
patterns.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import cast

import orjson
import pytest

pytest.importorskip("sse_starlette")
pytest.importorskip("matplotlib")

from polyport.bench.graphql_subs import SUBSCRIPTION, GraphQLSubscriber, fanout, main
from polyport.bench.realtime_clients import HandshakeError, Tally


class _Transport:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def close(self) -> None:
        self.closed = True

    abort = close


def _server_frame(payload: bytes) -> bytes:
    assert len(payload) < 126
    return bytes([0x81, len(payload)]) + payload


def _client_payload(frame: bytes) -> bytes:
    """The payload of a client frame masked with a zero key (as the bench's clients send)."""
    size = frame[1] & 0x7F
    start = 2
    if size == 126:
        start, size = 4, int.from_bytes(frame[2:4], "big")
    return frame[start + 4 : start + 4 + size]


async def test_the_subscriber_inits_subscribes_on_ack_then_counts_next_frames() -> None:
    """Handshake with the subprotocol, connection_init, subscribe on ack, every frame counted."""
    tally = Tally(expected=3, latency=False, connections=1)
    subscriber = GraphQLSubscriber(tally, "127.0.0.1", 1, "bench/t")
    transport = _Transport()
    subscriber.connection_made(cast(asyncio.Transport, transport))
    request = transport.written[0]
    assert request.startswith(b"GET /graphql HTTP/1.1\r\n")
    assert b"\r\nSec-WebSocket-Protocol: graphql-transport-ws\r\n" in request
    head = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"
    subscriber.data_received(head)
    assert orjson.loads(_client_payload(transport.written[1])) == {"type": "connection_init"}
    subscriber.data_received(_server_frame(b'{"type":"connection_ack"}'))
    assert subscriber.ready.done() and subscriber.ready.exception() is None
    assert orjson.loads(_client_payload(transport.written[2])) == {
        "id": "1",
        "type": "subscribe",
        "payload": {"query": SUBSCRIPTION, "variables": {"channel": "bench/t"}},
    }
    nexts = b"".join(
        _server_frame(b'{"id":"1","type":"next","payload":{"data":{"n":%d}}}' % i) for i in range(3)
    )
    subscriber.data_received(nexts)
    assert subscriber.count == 3 and tally.all_done.done()


async def test_a_refused_handshake_is_the_reason() -> None:
    """A close before the ack (4406 here) fails the subscription with its code."""
    tally = Tally(expected=1, latency=False, connections=1)
    subscriber = GraphQLSubscriber(tally, "127.0.0.1", 1, "bench/t")
    subscriber.connection_made(cast(asyncio.Transport, _Transport()))
    close = b"\x88" + bytes([2 + 26]) + (4406).to_bytes(2, "big") + b"Subprotocol not acceptable"
    subscriber.data_received(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n" + close
    )
    with pytest.raises(HandshakeError, match="code 4406: Subprotocol not acceptable"):
        await subscriber.ready


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.parametrize("kind", ["ws", "graphql"])
def test_a_tiny_fanout_delivers_everything(tmp_path: Path, kind: str) -> None:
    """Three subscribers, five messages: fifteen deliveries, every client complete."""
    figures = fanout(kind, 3, 5, 100, tmp_path)
    assert figures["deliveries"] == 15
    assert figures["complete_clients"] == 3
    assert figures["deliveries_per_second"] > 0


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_the_command_prints_both_and_writes_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The module's command measures both patterns and writes its figures as JSON."""
    out = tmp_path / "subs.json"
    main(["--clients", "2", "--messages", "3", "--json", str(out)])
    printed = capsys.readouterr().out
    assert "fan-out: 2 subscribers x 3 messages of 100 B" in printed
    assert "graphql / ws = " in printed
    rows = json.loads(out.read_text())["rows"]
    assert [r["kind"] for r in rows] == ["ws", "graphql"]
    assert all(r["deliveries"] == 6 for r in rows)

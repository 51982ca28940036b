"""The real-time benches (``polyport bench ws`` and ``sse``): their clients and short runs.

No test here asserts a speed: timing on a shared machine is noise. They check
that the subscribers count exactly what was sent, that every subscriber of a
run received every message, that an unavailable target is reported as such,
and that the lab writes its results.
"""

from __future__ import annotations

import asyncio
import io
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import orjson
import pytest
from rich.console import Console
from typer.testing import CliRunner

# Without the `bench` extra polyport.bench.realtime raises MissingExtra on import: skip instead.
pytest.importorskip("sse_starlette")
pytest.importorskip("websockets")
pytest.importorskip("matplotlib")

from polyport.bench.realtime import TRANSPORTS, RealtimeServer, run_realtime_bench
from polyport.bench.realtime_apps import Tick, padding
from polyport.bench.realtime_clients import HandshakeError, SseSubscriber, Tally, WsSubscriber
from polyport.bench.realtime_report import RealtimeFigures, RealtimeReport
from polyport.bench.realtime_subscribers import Subscribers, Unavailable
from polyport.bench.report import TIMES
from polyport.cli import app


class _Transport:
    """A stand-in transport that keeps what the protocol writes."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def close(self) -> None:
        self.closed = True

    abort = close


def _feed(protocol: asyncio.Protocol, data: bytes, sizes: tuple[int, ...]) -> None:
    """Hand ``data`` to ``protocol`` in reads of the given sizes, round and round."""
    position, turn = 0, 0
    while position < len(data):
        size = sizes[turn % len(sizes)]
        protocol.data_received(data[position : position + size])
        position, turn = position + size, turn + 1


def _tick(seq: int, ts: int, size: int = 100) -> bytes:
    return orjson.dumps(Tick(run="t", seq=seq, ts=ts, pad=padding("t", 10, size)).model_dump())


def _server_frame(opcode: int, payload: bytes) -> bytes:
    size = len(payload)
    if size < 126:
        return bytes([0x80 | opcode, size]) + payload
    if size < 1 << 16:
        return bytes([0x80 | opcode, 126]) + size.to_bytes(2, "big") + payload
    return bytes([0x80 | opcode, 127]) + size.to_bytes(8, "big") + payload


def test_padding_makes_ticks_of_the_asked_size() -> None:
    """A tick's JSON is the asked size (within the width of its clock), never less than bare."""
    for size in (100, 300):
        assert abs(len(_tick(9, 10**13, size)) - size) <= 2
    assert padding("t", 10, 0) == ""


@pytest.mark.parametrize("sizes", [(1,), (2, 7, 3), (5,), (4096,)])
async def test_the_sse_subscriber_counts_events_whatever_the_reads(sizes: tuple[int, ...]) -> None:
    """data: lines are counted once each, across any split, chunked, with comments in between."""
    tally = Tally(expected=6, latency=True, connections=1)
    subscriber = SseSubscriber(tally, "127.0.0.1", 1, "bench/t")
    transport = _Transport()
    subscriber.connection_made(cast(asyncio.Transport, transport))
    assert transport.written[0].startswith(b"GET /v1/events/stream?channel=bench%2Ft HTTP/1.1")
    body = b""
    for seq in range(6):
        event = b"id: %d\r\nevent: bench.tick\r\ndata: %s\r\n\r\n" % (seq, _tick(seq, 1_000))
        if seq == 3:
            event = b": ping\r\n\r\n" + event.replace(b"\r\n", b"\n")
        body += b"%x\r\n%s\r\n" % (len(event), event)
    head = (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
    )
    _feed(subscriber, head + body, sizes)
    assert subscriber.ready.done() and subscriber.ready.exception() is None
    assert subscriber.count == 6
    assert tally.all_primed.done() and tally.all_done.done()
    assert tally.latencies is not None and len(tally.latencies) == 6


async def test_an_sse_stream_without_chunks_counts_its_first_event() -> None:
    """An event right after the headers (no chunked coding) is counted too."""
    tally = Tally(expected=2, latency=False, connections=1)
    subscriber = SseSubscriber(tally, "127.0.0.1", 1, "bench/t")
    subscriber.connection_made(cast(asyncio.Transport, _Transport()))
    subscriber.data_received(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\ndata: {}\n\ndata: {}\n\n"
    )
    assert subscriber.count == 2


async def test_an_sse_refusal_is_its_status_line() -> None:
    """A 404 fails the subscription with the request and the status line."""
    tally = Tally(expected=1, latency=False, connections=1)
    subscriber = SseSubscriber(tally, "127.0.0.1", 1, "bench/t")
    transport = _Transport()
    subscriber.connection_made(cast(asyncio.Transport, transport))
    subscriber.data_received(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
    with pytest.raises(HandshakeError, match=r"GET /v1/events/stream\?channel=bench%2Ft answered"):
        await subscriber.ready
    assert transport.closed


@pytest.mark.parametrize("sizes", [(1,), (3, 11), (4096,)])
async def test_the_ws_subscriber_subscribes_then_counts_frames(sizes: tuple[int, ...]) -> None:
    """welcome is skipped, subscribed makes it live, pings get pongs, every data frame counts."""
    tally = Tally(expected=4, latency=True, connections=1)
    subscriber = WsSubscriber(tally, "127.0.0.1", 1, "bench/t")
    transport = _Transport()
    subscriber.connection_made(cast(asyncio.Transport, transport))
    assert transport.written[0].startswith(b"GET /ws HTTP/1.1\r\n")
    head = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
    frames = [
        _server_frame(1, b'{"type":"welcome","session":"s"}'),
        _server_frame(1, b'{"id":1,"type":"subscribed","subscription":"a"}'),
        _server_frame(9, b"hi"),
        _server_frame(1, b'{"type":"event","event":{"data":' + _tick(0, 1_000) + b"}}"),
        _server_frame(1, _tick(1, 1_000, 300)),  # a 16-bit length
        _server_frame(2, _tick(2, 1_000, 70_000)),  # a 64-bit length, binary
        _server_frame(1, _tick(3, 1_000)),
    ]
    _feed(subscriber, head + b"".join(frames), sizes)
    assert subscriber.ready.done() and subscriber.ready.exception() is None
    assert subscriber.count == 4
    assert tally.all_done.done()
    assert tally.latencies is not None and len(tally.latencies) == 4
    subscribe = transport.written[1]
    assert subscribe[:2] == bytes([0x81, 0x80 | (len(subscribe) - 6)])
    assert orjson.loads(subscribe[6:]) == {"id": 1, "type": "subscribe", "channels": ["bench/t"]}
    assert transport.written[2] == bytes([0x8A, 0x82, 0, 0, 0, 0]) + b"hi"  # the pong


async def test_a_ws_error_answer_fails_the_subscription() -> None:
    """An error frame in answer to subscribe is the reason the target is unavailable."""
    tally = Tally(expected=1, latency=False, connections=1)
    subscriber = WsSubscriber(tally, "127.0.0.1", 1, "bench/t")
    subscriber.connection_made(cast(asyncio.Transport, _Transport()))
    error = b'{"id":1,"type":"error","error":{"code":"NOT_FOUND","message":"no"}}'
    subscriber.data_received(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n" + _server_frame(1, error)
    )
    with pytest.raises(HandshakeError, match=r"the subscribe frame was answered with .*NOT_FOUND"):
        await subscriber.ready


def _figures(name: str, **values: Any) -> RealtimeFigures:
    return RealtimeFigures(name, name, **values)


def test_a_report_without_polyport_says_not_measured() -> None:
    """An unavailable polyport gives no ratio, NOT MEASURED goals and its reason."""
    report = RealtimeReport(
        TRANSPORTS["ws"],
        {
            "clients": 2,
            "messages": 2,
            "size": 100,
            "idle": 0,
            "latency_samples": 2,
            "stream_messages": 2,
        },
        datetime.now(UTC),
        {"cpu_count": 2},
        [
            _figures("polyport", available=False, reason="GET /ws answered 404"),
            _figures("websockets", latency_p50_us=80.0, fanout_deliveries_per_second=9e4),
        ],
    )
    assert report.goal_met is None and report.fanout_goal_met is None
    assert all("NOT MEASURED" in line for line in report.goal_lines())
    assert report.notes() == ["polyport: not available: GET /ws answered 404"]
    assert report.target("websockets") is not None
    assert report.as_json()["goal"]["met"] is None


def test_a_report_with_polyport_has_ratios_and_verdicts() -> None:
    """polyport's figures over the baseline's, and PASS/MISS on both goals."""
    report = RealtimeReport(
        TRANSPORTS["sse"],
        {"clients": 2, "messages": 2, "size": 100, "idle": 0},
        datetime.now(UTC),
        {},
        [
            _figures("polyport", latency_p50_us=1500.0, fanout_deliveries_per_second=2e5),
            _figures("sse-starlette", latency_p50_us=100.0, fanout_deliveries_per_second=1e5),
        ],
    )
    polyport = report.target("polyport")
    assert polyport is not None and polyport.ratio_fanout == pytest.approx(2.0)
    assert report.fanout_goal_met is True and report.latency_goal_met is False
    assert report.goal_met is False


@pytest.mark.timeout(60)
def test_a_target_without_the_pattern_is_unavailable(tmp_path: Path) -> None:
    """Subscribing where nothing serves the pattern raises Unavailable with the answer."""
    with (
        RealtimeServer("sse-starlette") as server,
        Subscribers("ws", (server.host, server.port), "bench/x", 3, 1, tmp_path) as subscribers,
        pytest.raises(Unavailable, match=r"GET /ws answered 'HTTP/1.1 404 Not Found'"),
    ):
        subscribers.ready(20.0)


def test_bad_options_are_one_line() -> None:
    """An option out of range is a one-line error with exit code 2."""
    result = CliRunner().invoke(app, ["bench", "ws", "--clients", "0"])
    assert result.exit_code == 2
    assert "--clients must be between 1 and 10000, not 0" in result.output


def _check_measured(target: dict[str, Any], options: dict[str, int]) -> None:
    """Every figure of a measured target is there, and every subscriber got every message."""
    assert target["available"] is True, target["reason"]
    assert target["errors"] == {}
    assert target["latency_samples"] == options["latency_samples"]
    assert target["latency_p99_us"] >= target["latency_p50_us"] > 0
    assert target["stream_received"] == options["stream_messages"]
    assert target["stream_events_per_second"] > 0
    assert target["fanout_clients"] == options["clients"]
    assert target["fanout_complete_clients"] == options["clients"]
    assert target["fanout_deliveries"] == options["clients"] * options["messages"]
    assert target["fanout_deliveries_per_second"] > 0
    assert target["wire_bytes_per_message"] >= options["size"]
    assert target["idle_connections"] == options["idle"]
    assert target["idle_kib_per_connection"] is not None


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.parametrize("bench", ["ws", "sse"])
def test_a_short_bench_measures_the_baseline_and_writes_its_results(
    tmp_path: Path, bench: str
) -> None:
    """A tiny run measures the baseline fully; polyport is measured or said unavailable."""
    options = {
        "clients": 20,
        "messages": 10,
        "size": 100,
        "idle": 50,
        "latency_samples": 50,
        "stream_messages": 200,
    }
    screen = io.StringIO()
    report = run_realtime_bench(
        bench, output=tmp_path, console=Console(file=screen, width=120), **options
    )
    data = json.loads((tmp_path / f"{bench}-latest.json").read_text())
    transport = TRANSPORTS[bench]
    assert data["bench"] == bench
    assert data["options"]["clients"] == 20
    assert data["machine"]["versions"]["websockets"]
    assert [t["name"] for t in data["targets"]] == ["polyport", transport.baseline]
    polyport, baseline = data["targets"]
    _check_measured(baseline, options)
    assert baseline["ratio_fanout"] == pytest.approx(1.0)
    shown = " ".join(screen.getvalue().split())
    if polyport["available"]:
        _check_measured(polyport, options)
        assert polyport["ratio_fanout"] > 0
        assert data["goal"]["met"] is report.goal_met is not None
    else:
        # The lead's edge has not landed yet: the report says why, and goes on.
        assert polyport["reason"]
        assert f"polyport: not available: {polyport['reason']}" in shown
        assert data["goal"]["met"] is None
    assert f"Goal: polyport {transport.name} fan-out ≥ 1.0{TIMES} {transport.baseline_label}" in (
        shown
    )
    assert "Goal: p50 publish→receive < 1 ms" in shown
    assert (tmp_path / f"{bench}-latest.png").read_bytes().startswith(b"\x89PNG")
    assert len(list(tmp_path.glob(f"{bench}-*-*.json"))) == 1

"""The RPC bench (``polyport bench rpc``): its wire helpers and one short end-to-end run.

No test here asserts a speed: timing on a shared machine is noise. They check
that every call and every stream is measured on every target without an
error, that bytes on the wire are counted, and that the lab writes its results.
"""

from __future__ import annotations

import importlib.util
import io
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

# Without the `bench` extra polyport.bench.rpc raises MissingExtra on import: skip instead.
pytest.importorskip("matplotlib")
pytest.importorskip("grpc_tools")
if importlib.util.find_spec("spyne") is None:  # not imported: its six importer breaks imports
    pytest.skip("spyne is not installed", allow_module_level=True)

from polyport.bench import rpc
from polyport.bench.loadgen import HttpCall
from polyport.bench.report import TIMES
from polyport.bench.rpc import RpcServer, run_rpc_bench, schedule
from polyport.bench.rpc_apps import TARGETS, plain_stubs
from polyport.bench.rpc_calls import CASES, STREAMS, Case
from polyport.bench.rpc_clients import field
from polyport.bench.rpc_report import CallFigures, RpcReport, paired_ratio
from polyport.bench.users import BENCH_PATH
from polyport.bench.wire import http_exchange
from polyport.cli import app
from polyport.core.errors import ConfigError


def test_field_encodes_as_protobuf_does() -> None:
    """The requests the gRPC client sends are the bytes protobuf itself would write."""
    pb2, _ = plain_stubs()
    assert field(1, 42) == pb2.GetUserRequest(id=42).SerializeToString()
    assert field(1, 50) == pb2.ListUsersRequest(limit=50).SerializeToString()
    assert field(1, 300) == pb2.StreamUsersRequest(count=300).SerializeToString()
    blast = field(1, "run") + field(2, 20_000) + field(3, 48)
    assert blast == pb2.BlastRequest(run="run", count=20_000, size=48).SerializeToString()


@pytest.mark.timeout(60)
def test_http_exchange_counts_every_byte_of_an_answer() -> None:
    """Bytes per call on HTTP/1.1: the request as sent; the answer with its head."""
    with RpcServer("polyport") as server:
        call = HttpCall("GET", BENCH_PATH)
        wire, answer = http_exchange(server.host, server.port, call, calls=3)
    assert answer.status == 200
    assert json.loads(answer.body) == {"id": 42, "name": "User 42", "email": "user42@example.com"}
    assert wire.request == len(call.raw(server.host, server.port))
    assert wire.response_payload == len(answer.body)
    assert wire.response == answer.size > len(answer.body) + len(b"HTTP/1.1 200 OK\r\n\r\n")


def test_a_round_measures_each_call_next_to_what_it_is_compared_with() -> None:
    """Every call and stream once per round; the two sides of each ratio back to back."""
    targets = list(TARGETS)
    for round_ in (0, 1):
        steps = schedule(targets, round_)
        assert sorted(map(repr, steps)) == sorted(map(repr, [*CASES, *STREAMS]))
        names = [(s.name, s.payload) if isinstance(s, Case) else (s.name, "") for s in steps]
        for payload in ("user", "list"):
            for pair in (("grpc", "grpcio"), ("soap", "spyne"), ("rest", "jsonrpc")):
                at = sorted(names.index((name, payload)) for name in pair)
                assert at[1] - at[0] == 1, (pair, payload, round_)
        for pair in (("events", "grpcio-events"), ("contract", "grpcio-contract")):
            at = sorted(names.index((name, "")) for name in pair)
            assert at[1] - at[0] == 1, (pair, round_)
    # Neither side always goes first: the order within each group turns round.
    first, second = schedule(targets, 0), schedule(targets, 1)
    grpc = [s for s in first if isinstance(s, Case) and s.name in ("grpc", "grpcio")]
    again = [s for s in second if isinstance(s, Case) and s.name in ("grpc", "grpcio")]
    assert [s.name for s in grpc] == ["grpc", "grpcio"] * 2
    assert [s.name for s in again] == ["grpcio", "grpc"] * 2
    # A target left out (Spyne not installed) leaves out its calls, and only those.
    without = schedule([t for t in targets if t != "spyne"], 0)
    assert {s.target for s in without} == set(targets) - {"spyne"}
    assert len(without) == len(first) - sum(1 for c in CASES if c.target == "spyne")


def test_a_ratio_is_the_median_of_the_rounds_ratios() -> None:
    """Each round pairs a call with its reference; the goal reads the median of those ratios."""

    def figures(name: str, target: str, runs: list[float]) -> CallFigures:
        median = sorted(runs)[(len(runs) - 1) // 2]  # the lab's median run
        return CallFigures(
            name, name, target, "user", "grpcload", calls_per_second=median, runs=runs
        )

    # Per round 1.1, 0.9 and 1.25: median 1.1. The median rounds are 100 and 100: 1.0.
    polyport = figures("grpc", "polyport", [110.0, 90.0, 100.0])
    plain = figures("grpcio", "grpcio", [100.0, 100.0, 80.0])
    report = RpcReport(datetime.now(UTC), {}, {}, [polyport, plain], [])
    assert polyport.ratio == pytest.approx(1.1)
    assert polyport.ratio_of_medians == pytest.approx(1.0)
    goal = report.goals()[0]
    assert goal.met is True
    assert f"1.10{TIMES} for one User" in goal.measured
    assert f"the median rounds' ratio 1.00{TIMES}" in goal.measured
    # Runs that do not pair (a round missing) fall back to the median rounds.
    assert paired_ratio([1.0, 2.0], [1.0]) is None
    assert paired_ratio([], []) is None
    assert paired_ratio([2.0], [0.0]) is None
    one = figures("grpc", "polyport", [95.0])
    RpcReport(datetime.now(UTC), {}, {}, [one, figures("grpcio", "grpcio", [100.0])], [])
    assert one.ratio == pytest.approx(0.95) == one.ratio_of_medians


def test_bad_options_are_one_line(tmp_path: Path) -> None:
    console = Console(file=io.StringIO())
    for options, message in (
        ({"duration": 0.0}, "--duration must be positive"),
        ({"warmup": -1.0}, "--warmup must be zero or more"),
        ({"connections": 0}, "--connections must be between 1 and 1000"),
        ({"repeats": 0}, "--repeats must be at least 1"),
        ({"generator": "ab"}, "unknown load generator"),
    ):
        with pytest.raises(ConfigError, match=message):
            run_rpc_bench(output=tmp_path, console=console, **options)
    assert not list(tmp_path.iterdir())


def test_the_command_says_a_bad_option_in_one_line(tmp_path: Path) -> None:
    """``polyport bench rpc`` with an option out of range: one line, exit code 2."""
    result = CliRunner().invoke(app, ["bench", "rpc", "--connections", "0", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "--connections must be between 1 and 1000, not 0" in result.output


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_short_bench_measures_every_call_and_stream_and_writes_its_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tiny run measures every case on every target with no error, bytes on the wire too."""
    # Fewer probe calls and events than a real run counts, to keep the test short.
    monkeypatch.setattr(rpc, "GRPC_PROBE_CALLS", 20)
    monkeypatch.setattr(rpc, "STREAM_PROBE_EVENTS", 200)
    screen = io.StringIO()
    report = run_rpc_bench(
        duration=0.3,
        warmup=0.0,
        connections=8,
        repeats=1,
        generator="python",
        output=tmp_path,
        console=Console(file=screen, width=140),
    )
    data = json.loads((tmp_path / "rpc-latest.json").read_text())
    assert data["bench"] == "rpc"
    assert data["generator"] == "python"
    assert data["connections"] == 8
    assert data["machine"]["versions"]["grpcio"]
    assert data["notes"] == []
    assert data["probe"] == {"http_calls": 20, "grpc_calls": 20, "stream_events": 200}

    calls = {(c["name"], c["payload"]): c for c in data["calls"]}
    assert sorted(calls) == sorted((case.name, case.payload) for case in CASES)
    for key, call in calls.items():
        assert call["calls"] > 0, key
        assert call["errors"] == 0, key
        wire = call["wire"]
        assert wire["request"] > 0 and wire["response"] > 0, key
        assert wire["response_payload"] > 0, key
        # Every request carries a body or message, but REST's GET.
        assert (wire["request_payload"] == 0) is (key[0] == "rest"), key
        # The whole answer is more than its body or message: heads and framing are counted.
        assert wire["response"] > wire["response_payload"], key
    for payload in ("user", "list"):
        # Same field numbers: polyport and the generated stubs send and answer the same bytes.
        grpc, grpcio = calls[("grpc", payload)]["wire"], calls[("grpcio", payload)]["wire"]
        assert grpc["request_payload"] == grpcio["request_payload"] == 2
        if payload == "user":
            assert grpc["response_payload"] == grpcio["response_payload"] == 31
        else:  # the same 50 users; the next cursor differs: polyport's "MTo1MA", grpcio's "50"
            assert 0 <= grpc["response_payload"] - grpcio["response_payload"] <= 8
        assert calls[("jsonrpc", payload)]["ratio"] > 0
        assert calls[("soap", payload)]["reference"] == "spyne"
    assert calls[("rest", "user")]["wire"]["response_payload"] == 55
    # 50 users are more bytes than one, whatever the pattern.
    for case in CASES:
        one, many = calls[(case.name, "user")], calls[(case.name, "list")]
        assert many["wire"]["response_payload"] > 10 * one["wire"]["response_payload"], case.name

    streams = {s["name"]: s for s in data["streams"]}
    assert sorted(streams) == sorted(stream.name for stream in STREAMS)
    for name, stream in streams.items():
        assert stream["events"] == data["stream_events"], name
        assert stream["events_per_second"] > 0, name
        assert stream["wire_per_event"] > 0, name
        assert stream["messages"] >= 1, name
    assert streams["events"]["batched"] and streams["events"]["events_per_message"] > 1
    assert streams["grpcio-events"]["messages"] == data["stream_events"]  # one event each

    assert len(data["goals"]) == 4 == len(report.goals())
    assert all(goal["met"] is not None for goal in data["goals"])
    shown = " ".join(screen.getvalue().split())
    for text in (
        f"polyport gRPC unary ≥ 1.0{TIMES} a plain grpcio servicer",
        "events over a gRPC server stream ≥ 100,000/s",
        f"polyport SOAP ≥ 5.0{TIMES} Spyne",
        f"polyport JSON-RPC ≥ 0.9{TIMES} polyport's REST",
    ):
        assert f"Goal: {text}" in shown
    assert f"claimed: protobuf is about 5{TIMES} smaller than JSON — measured:" in shown
    markdown = (tmp_path / "rpc-latest.md").read_text()
    assert markdown.startswith("# polyport bench rpc — ")
    assert "--generator python" in markdown
    for case in CASES:
        assert f"\n| {case.label} | " in markdown, case.label
    for stream_case in STREAMS:
        assert f"\n| {stream_case.label} | " in markdown, stream_case.label
    assert markdown.count("\n* polyport ") + markdown.count("\n* events ") == 4
    assert (tmp_path / "rpc-latest.png").read_bytes().startswith(b"\x89PNG")
    assert len(list(tmp_path.glob("rpc-*-*.json"))) == len(list(tmp_path.glob("rpc-*-*.md"))) == 1

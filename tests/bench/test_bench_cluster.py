"""``polyport bench cluster``: its ledgers, its pacer, its report, and one short run on Redis.

No test here asserts a speed: timing on a shared machine is noise. They check
that every tick is counted once, that lost, duplicated and refused ticks are
told apart, that the goals read PASS, MISS or NOT MEASURED from the figures,
and that a tiny run on a real engine delivers every tick and writes its
record, leaving nothing behind on the engine.
"""

from __future__ import annotations

import asyncio
import io
import json
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

# Without the `bench` extra polyport.bench.cluster raises MissingExtra on import: skip instead.
pytest.importorskip("matplotlib")

from tests.conftest import require_service

from polyport.bench.cluster import run_cluster_bench
from polyport.bench.cluster_clients import ChunkedBody
from polyport.bench.cluster_engines import namespaced
from polyport.bench.cluster_report import ClusterCase, ClusterReport, ClusterRun
from polyport.bench.cluster_ticks import Receipts, pace, ranges, tick_bytes
from polyport.bench.report import TIMES
from polyport.cli import app


def test_receipts_count_each_tick_once_and_tell_cross_from_local() -> None:
    """Duplicates and strangers are counted apart; measured ticks are timed by their origin."""
    receipts = Receipts(publishers=2, last=3, home=0)
    for p in (0, 1):
        receipts.scan(tick_bytes("r", p, 0, 1_000, ""), 2_000)  # the primers
    assert receipts.primed and not receipts.complete
    receipts.scan(tick_bytes("r", 0, 0, 1_000, ""), 2_000)  # a primer again: not a duplicate
    receipts.measured_from = 1_500  # the warm-up's end: ticks sent from then on are timed
    data = b"".join(
        tick_bytes("r", p, seq, 1_000 * seq, "xx") + b"\n" for p in (0, 1) for seq in (1, 2, 3)
    )
    receipts.scan(data, 5_000)
    receipts.scan(tick_bytes("r", 1, 3, 3_000, ""), 6_000)  # a duplicate
    receipts.scan(tick_bytes("r", 2, 1, 1_000, "") + tick_bytes("r", 0, 9, 1, ""), 6_000)
    assert receipts.complete and receipts.missing == 0
    assert receipts.duplicates == 1 and receipts.unknown == 2
    figures = receipts.figures()
    assert figures["measured_received"] == 4  # seqs 2 and 3 of both publishers
    assert figures["local_us"] == [3, 2] and figures["cross_us"] == [3, 2]
    assert figures["first_ts"] == 2_000 and figures["last_arrival"] == 5_000


def test_a_refused_tick_is_excused_not_lost() -> None:
    """A tick whose publish call failed is not owed; if it arrives anyway it is unacknowledged."""
    receipts = Receipts(publishers=1, last=4, home=0)
    receipts.scan(b"".join(tick_bytes("r", 0, seq, 1, "") for seq in (0, 1, 3)), 2)
    receipts.excuse(0, 2, 2)
    assert receipts.missing == 1  # seq 4
    receipts.excuse(0, 3, 4)  # 3 arrived already: unacknowledged, 4 excused
    assert receipts.complete and receipts.excused == 3 and receipts.unacknowledged == 1
    receipts.scan(tick_bytes("r", 0, 2, 1, ""), 3)  # 2 was stored after all
    assert receipts.unacknowledged == 2 and receipts.duplicates == 0


def test_ranges_compress_seqs() -> None:
    """Failed seqs travel as inclusive ranges."""
    assert ranges([7, 3, 1, 2, 9, 8]) == [[1, 3], [7, 9]]
    assert ranges([]) == []


@pytest.mark.parametrize("sizes", [(1,), (2, 5, 3), (4096,)])
def test_a_chunked_body_decodes_whatever_the_reads(sizes: tuple[int, ...]) -> None:
    """Chunk sizes, extensions and CRLFs are removed however the bytes arrive."""
    pieces = [b"data: one\n\n", b"data: " + b"x" * 300 + b"\n\n", b": ping\n\n"]
    wire = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
    body, out, position, turn = ChunkedBody(), b"", 0, 0
    while position < len(wire):
        size = sizes[turn % len(sizes)]
        out += body.feed(wire[position : position + size])
        position, turn = position + size, turn + 1
    assert out == b"".join(pieces) and body.ended


async def test_the_pacer_keeps_its_rate_and_names_the_refused() -> None:
    """Every seq is sent once, about rate per second; failed calls come back as ranges."""
    sent: list[int] = []

    async def send(seq: int, ts: int) -> None:
        if seq in (4, 5, 9):
            raise RuntimeError("busy")
        sent.append(seq)

    loop = asyncio.get_running_loop()
    began = loop.time()
    start = time.monotonic_ns()
    paced = await pace(
        send, first=1, count=20, rate=200.0, start_ns=start, measure_from_ns=start + 50_000_000
    )
    assert loop.time() - began >= 0.09  # 19 intervals of 5 ms: never ahead of its schedule
    assert sorted(sent) == [s for s in range(1, 21) if s not in (4, 5, 9)]
    assert paced.published == 17 and paced.errors == 3
    assert paced.failed == [[4, 5], [9, 9]] and paced.error == "RuntimeError: busy"
    assert 8 <= paced.measured <= 11  # seqs 11-20 were due after 50 ms


async def test_a_publisher_past_its_grace_sends_no_more() -> None:
    """A publisher that cannot keep up stops at its schedule's end plus grace, and says so."""

    async def slow(seq: int, ts: int) -> None:
        await asyncio.sleep(0.05)

    start = time.monotonic_ns()
    paced = await pace(slow, first=1, count=50, rate=1000.0, start_ns=start, in_flight=1, grace=0.1)
    assert 0 < paced.published < 50 and paced.errors == 0
    assert paced.unsent == [[paced.published + 1, 50]]


def _run(target: str, nodes: int, **figures: object) -> ClusterRun:
    run = ClusterRun("redis", target, nodes, 0, 5000.0)
    for name, value in figures.items():
        setattr(run, name, value)
    return run


def _report(cases: list[ClusterCase], rate: float = 5000.0) -> ClusterReport:
    options = {"rate": rate, "size": 100, "duration": 1, "warmup": 0, "channels": "shared"}
    return ClusterReport(options | {"repeats": 1}, datetime.now(UTC), {}, cases, {})


def test_the_goals_read_the_figures() -> None:
    """Cross-node p99, the ratio with three nodes, the scaling and the faults, each judged."""
    cases = [
        ClusterCase(
            "redis",
            n,
            [_run("polyport", n, delivered_per_second=rate, cross_p99_ms=p99, cross_samples=9)],
            [_run("bare", n, delivered_per_second=5000.0 * n)],
        )
        for n, rate, p99 in ((1, 5000.0, None), (2, 9000.0, 20.0), (3, 8000.0, 60.0))
    ]
    report = _report(cases)
    verdicts = {goal: met for goal, met, _ in report.goals()}
    assert list(verdicts.values()) == [False, True, False, True]
    assert cases[2].ratio == pytest.approx(8000 / 15000)
    assert report.goal_met is False
    lines = " ".join(report.goal_lines())
    assert "redis 60.0 ms" in lines and f"redis 0.53{TIMES}" in lines
    assert "5,000 → 9,000 → 8,000" in lines
    assert _report(cases, rate=1000.0).latency_goal()[0] is None  # not at the goal's rate


def test_a_report_without_figures_says_not_measured() -> None:
    """An engine that could not be reached leaves every goal NOT MEASURED, with its reason."""
    down = "redis is not reachable on 127.0.0.1:6379: Connection refused"
    case = ClusterCase("redis", 3, [_run("polyport", 3, error=down)], [_run("bare", 3, error=down)])
    report = _report([case])
    assert [met for _, met, _ in report.goals()] == [None, None, None, None]
    assert report.goal_met is None
    assert any(down in note for note in report.notes())


def test_namespaces_replace_the_urls_own() -> None:
    """A URL's namespace option is replaced by the run's, its other options kept."""
    url = namespaced("postgresql", "postgresql://u@h/db?schema=mine&sslmode=off", "ppbench_1")
    assert url == "postgresql://u@h/db?sslmode=off&schema=ppbench_1"
    assert namespaced("nats", "nats://h:4222", "x") == "nats://h:4222?name=x"


def test_bad_options_are_one_line() -> None:
    """An unknown engine or an out-of-range option is a one-line error with exit code 2."""
    runner = CliRunner()
    result = runner.invoke(app, ["bench", "cluster", "--engines", "mysql"])
    assert result.exit_code == 2
    assert "--engines takes some of postgresql, redis, nats, not 'mysql'" in result.output
    result = runner.invoke(app, ["bench", "cluster", "--nodes", "0,2"])
    assert result.exit_code == 2 and "--nodes takes counts from 1 to 8" in result.output


@pytest.mark.services
@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_short_run_on_redis_delivers_every_tick_and_writes_its_record(tmp_path: Path) -> None:
    """One and two nodes against the bare redis-py client: every tick arrives, once."""
    require_service("Redis", 6379)
    screen = io.StringIO()
    report = run_cluster_bench(
        engines="redis",
        nodes="1,2",
        rate=200.0,
        duration=0.5,
        warmup=0.2,
        output=tmp_path,
        console=Console(file=screen, width=120),
    )
    data = json.loads((tmp_path / "cluster-latest.json").read_text())
    assert data["bench"] == "cluster" and data["options"]["nodes"] == [1, 2]
    assert data["servers"]["redis"].startswith("Redis ")
    assert [(c["engine"], c["nodes"]) for c in data["cases"]] == [("redis", 1), ("redis", 2)]
    for case in data["cases"]:
        for run in case["runs"]:
            assert run["error"] is None, run["error"]
            # About 200/s for 0.5 s after the warm-up, each to one subscriber a node.
            assert run["expected"] >= run["nodes"] * 80
            assert run["delivered"] == run["expected"]
            assert run["lost"] == run["duplicates"] == run["publish_errors"] == run["unsent"] == 0
            assert run["delivered_per_second"] > 0
        assert case["ratio_vs_bare"] > 0
    for run in data["cases"][1]["runs"]:  # two nodes: each subscriber has the other's ticks
        assert run["cross_samples"] == run["local_samples"] == run["delivered"] // 2
    shown = " ".join(screen.getvalue().split())
    assert "Goal: no tick lost or duplicated — PASS" in shown
    assert "Goal: adding a node does not lower the total" in shown
    assert report.faults_goal()[0] is True
    assert (tmp_path / "cluster-latest.png").read_bytes().startswith(b"\x89PNG")
    left = asyncio.run(_keys([r["namespace"] for c in data["cases"] for r in c["runs"]]))
    assert left == []


async def _keys(namespaces: list[str]) -> list[bytes]:
    """Every key left under the runs' namespaces."""
    from redis.asyncio import Redis

    client = Redis.from_url("redis://127.0.0.1:6379/0")
    try:
        return [
            key
            for name in namespaces
            async for key in client.scan_iter(match="{" + name + "}*", count=1000)
        ]
    finally:
        await client.aclose()

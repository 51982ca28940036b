"""The REST bench: its targets, its generators and one short end-to-end run.

No test here asserts a speed: timing on a shared machine is noise. They check
that the lab measures the same answer on every target and writes its results.
"""

from __future__ import annotations

import http.client
import io
import json
import shutil
import sys
from pathlib import Path

import pytest
from rich.console import Console

from polyport.core.errors import ConfigError

# Without the `bench` extra polyport.bench.rest raises MissingExtra on import: skip instead.
pytest.importorskip("fastapi")
pytest.importorskip("matplotlib")

from polyport.bench.loadgen import Wrk, choose_generator, parse_wrk
from polyport.bench.report import TIMES
from polyport.bench.rest import run_rest_bench
from polyport.bench.targets import TARGETS, TargetServer

HAVE_WRK = shutil.which("wrk") is not None

WRK_REPORT = """\
Running 10s test @ http://127.0.0.1:40123/v1/users/42
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.07ms  338.54us  10.54ms   90.41%
    Req/Sec    31.11k     1.45k   33.48k    81.00%
  Latency Distribution
     50%  850.00us
     75%    2.13ms
     90%    2.31ms
     99%    1.02s
  309515 requests in 10.00s, 55.49MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 5
Requests/sec:  30949.01
Transfer/sec:      5.55MB
"""


def _get(port: int, path: str) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


@pytest.mark.timeout(30)
def test_every_target_serves_the_same_user_and_404s_an_unknown_one() -> None:
    """Each target process answers the bench request with the same JSON, and 404 otherwise."""
    bodies = {}
    for name in TARGETS:
        with TargetServer(name) as server:
            status, body = _get(server.port, "/v1/users/42")
            assert status == 200, name
            bodies[name] = json.loads(body)
            assert _get(server.port, "/v1/users/4242")[0] == 404, name
    assert bodies["polyport"] == bodies["fastapi"] == bodies["starlette"]
    assert bodies["polyport"] == {"id": 42, "name": "User 42", "email": "user42@example.com"}


def test_a_target_that_cannot_start_is_one_line_with_its_stderr(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server process that dies at start-up is reported with the tail of its stderr."""
    broken = tmp_path / "python"
    broken.write_text("#!/bin/sh\necho 'first line' >&2\necho 'boom: no server' >&2\nexit 3\n")
    broken.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(broken))
    with pytest.raises(ConfigError, match=r"exited with status 3: first line / boom: no server$"):
        TargetServer("polyport").start()


def test_parse_wrk_reads_rate_percentiles_and_errors() -> None:
    """wrk's report gives the rate as printed, p50/p99 in ms and every kind of error."""
    result = parse_wrk(WRK_REPORT)
    assert result.requests == 309515
    assert result.seconds == pytest.approx(10.0)
    assert result.requests_per_second == pytest.approx(30949.01)
    assert result.p50_ms == pytest.approx(0.85)
    assert result.p99_ms == pytest.approx(1020.0)
    assert result.errors == 8


def test_parse_wrk_without_latency_is_a_config_error() -> None:
    """A report without --latency's distribution cannot give percentiles."""
    without = "\n".join(line for line in WRK_REPORT.splitlines() if "%  " not in line)
    with pytest.raises(ConfigError, match="cannot read wrk's report"):
        parse_wrk(without)


def test_wrk_requested_but_missing_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """--generator wrk without wrk says so; auto falls back to Python."""
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(ConfigError, match="wrk was requested but is not installed"):
        choose_generator("wrk")
    assert choose_generator("auto").name == "python"
    with pytest.raises(ConfigError, match="unknown load generator"):
        choose_generator("ab")


@pytest.mark.skipif(not HAVE_WRK, reason="wrk is not installed")
def test_wrk_runs_whole_seconds_only() -> None:
    """wrk takes whole seconds, so fractions are rounded up (and never below one)."""
    wrk = choose_generator("wrk")
    assert isinstance(wrk, Wrk)
    assert (wrk.seconds(0.3), wrk.seconds(1.0), wrk.seconds(2.5)) == (1.0, 1.0, 3.0)


@pytest.mark.slow
@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "generator",
    ["python", pytest.param("wrk", marks=pytest.mark.skipif(not HAVE_WRK, reason="no wrk"))],
)
def test_a_short_bench_writes_three_targets_and_a_chart(tmp_path: Path, generator: str) -> None:
    """A one-second run measures all three targets and writes the JSON and the PNG."""
    screen = io.StringIO()
    report = run_rest_bench(
        duration=1,
        connections=4,
        warmup=0.3,
        output=tmp_path,
        generator=generator,
        console=Console(file=screen, width=120),
    )
    data = json.loads((tmp_path / "rest-latest.json").read_text())
    assert data["generator"] == generator
    assert data["connections"] == 4
    assert data["machine"]["cpu_count"] >= 1
    assert [t["name"] for t in data["targets"]] == ["polyport", "fastapi", "starlette"]
    for target in data["targets"]:
        assert target["requests"] > 0
        assert target["requests_per_second"] > 0
        assert target["errors"] == 0
        assert target["p99_ms"] >= target["p50_ms"] > 0
    fastapi = next(t for t in data["targets"] if t["name"] == "fastapi")
    assert fastapi["ratio_vs_fastapi"] == pytest.approx(1.0)
    assert data["goal"]["met"] is report.goal_met
    assert (tmp_path / "rest-latest.png").read_bytes().startswith(b"\x89PNG")
    assert len(list(tmp_path.glob("rest-*-*.json"))) == 1
    goal = f"Goal: polyport ≥ 2.0{TIMES} FastAPI and ≥ 0.8{TIMES} Starlette"
    assert goal in screen.getvalue()

"""The GraphQL bench: both targets give the same answers, and one short end-to-end run.

No test here asserts a speed: timing on a shared machine is noise. They check
that the lab measures the same work on both targets and writes its results.
"""

from __future__ import annotations

import http.client
import io
import json
import shutil
from pathlib import Path

import orjson
import pytest
from rich.console import Console

from polyport.core.errors import ConfigError

# Without the `bench` extra polyport.bench.graphql raises MissingExtra on import: skip instead.
pytest.importorskip("strawberry")

from polyport.bench.graphql import TARGETS, GraphQLTarget, check_answer, run_graphql_bench
from polyport.bench.graphql_data import QUERIES, expected

HAVE_WRK = shutil.which("wrk") is not None


def _post(port: int, query: str) -> tuple[int, dict[str, object]]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        body = orjson.dumps({"query": query})
        connection.request("POST", "/graphql", body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


@pytest.mark.timeout(60)
def test_both_targets_answer_both_queries_alike_and_refuse_unknown_fields() -> None:
    """polyport and both Strawberry apps give the expected data, and an error for a typo."""
    answers: dict[str, dict[str, object]] = {}
    for name in TARGETS:
        with GraphQLTarget(name) as server:
            for case, query in QUERIES.items():
                status, answer = _post(server.port, query)
                assert status == 200 and answer == {"data": expected(case)}, (name, case)
                answers[f"{name} {case}"] = answer
                check_answer(server.host, server.port, case, name)
            _, typo = _post(server.port, "{ user(id: 1) { nmae } }")
            assert not typo.get("data") and typo["errors"], name
    nested = expected("nested")["user"]
    assert len(nested["posts"]) == 5 and all(len(p["comments"]) == 3 for p in nested["posts"])


def test_check_answer_refuses_a_target_with_other_data(monkeypatch: pytest.MonkeyPatch) -> None:
    """A target answering with other data (or errors, as 200) is a ConfigError, not a figure."""
    import polyport.bench.graphql as lab

    monkeypatch.setattr(lab, "expected", lambda case: {"user": None})
    with (
        GraphQLTarget("polyport") as server,
        pytest.raises(ConfigError, match="other data than expected"),
    ):
        check_answer(server.host, server.port, "simple", "polyport")


@pytest.mark.slow
@pytest.mark.timeout(90)
@pytest.mark.parametrize(
    "generator",
    ["python", pytest.param("wrk", marks=pytest.mark.skipif(not HAVE_WRK, reason="no wrk"))],
)
def test_a_short_bench_runs_every_case_without_errors(tmp_path: Path, generator: str) -> None:
    """A one-second run measures both queries on every target and writes JSON and Markdown."""
    screen = io.StringIO()
    report = run_graphql_bench(
        duration=1,
        connections=4,
        warmup=0,
        output=tmp_path,
        generator=generator,
        console=Console(file=screen, width=120),
    )
    cases = {(f.target, f.case) for f in report.figures}
    assert cases == {(t, c) for t in TARGETS for c in QUERIES}
    assert all(f.requests > 0 and f.errors == 0 for f in report.figures), report.figures
    data = json.loads((tmp_path / "graphql-latest.json").read_text())
    assert {(r["target"], r["case"]) for r in data["results"]} == cases
    assert (
        set(data["ratios_vs_strawberry"])
        == set(data["ratios_vs_strawberry_cached"])
        == set(QUERIES)
    )
    assert len(data["goals"]) == 2
    markdown = (tmp_path / "graphql-latest.md").read_text()
    assert "| simple | polyport |" in markdown and "| nested | Strawberry+caches |" in markdown
    text = screen.getvalue()
    assert "Goal: polyport ≥ 8,000 req/s" in text and "results:" in text

"""``polyport bench queues``: a tiny run measures every phase and loses nothing; bad options
are one line. (Figures are for the lab, never asserted here.)"""

from __future__ import annotations

import io
from pathlib import Path

import orjson
import pytest
from rich.console import Console
from tests.conftest import require_service

from polyport.bench.queues import run_queues_bench
from polyport.core.errors import ConfigError


def test_a_small_run_of_the_embedded_queue(tmp_path: Path) -> None:
    record = run_queues_bench(
        console=Console(file=io.StringIO()),
        messages=300,
        in_flight=32,
        rate=200,
        duration=0.5,
        repeats=1,
        output=tmp_path,
    )
    [target] = record["targets"]
    assert target["target"] == "sqlite" and target["lost"] == 0
    assert target["enqueue_per_second"] > 0 and target["consume_per_second"] > 0
    assert target["runs"][0]["latency_samples"] == 100
    written = orjson.loads((tmp_path / "queues.json").read_bytes())
    assert written["goal"]["no message lost"]["met"] is True


@pytest.mark.parametrize(
    "options",
    [{"targets": ["kafka"]}, {"messages": 10}, {"rate": 0}, {"repeats": 0}],
)
def test_bad_options_are_one_line(options: dict[str, object], tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        run_queues_bench(console=Console(file=io.StringIO()), output=tmp_path, **options)  # type: ignore[arg-type]


@pytest.mark.services
@pytest.mark.timeout(120)
def test_jetstream_is_paired_with_both_bare_baselines(tmp_path: Path) -> None:
    """The JetStream broker's rounds are paired with bare nats-py and with bare nats-py
    confirming its sends' ids and its acks; only the first ratio is judged by the goal."""
    require_service("NATS", 4222)
    record = run_queues_bench(
        console=Console(file=io.StringIO()),
        targets=["nats-jetstream"],
        messages=100,
        in_flight=32,
        rate=100,
        duration=0.5,
        repeats=1,
        output=tmp_path,
    )
    polyport, bare, confirmed = record["targets"]
    assert bare["target"] == "nats-jetstream (bare nats-py)"
    assert confirmed["target"] == "nats-jetstream (bare nats-py, msg ids + ack_sync)"
    assert all(t["lost"] == 0 and t["consume_per_second"] > 0 for t in (polyport, bare, confirmed))
    assert set(polyport["ratios"]) == set(polyport["ratios_confirmed"]) == {"enqueue", "consume"}
    [judged] = [line for line in record["goal"] if "bare client" in line]
    assert "confirmed" not in record["goal"][judged]["measured"]

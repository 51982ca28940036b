"""``polyport bench queues``: a tiny run measures every phase and loses nothing; bad options
are one line. (Figures are for the lab, never asserted here.)"""

from __future__ import annotations

import io
from pathlib import Path

import orjson
import pytest
from rich.console import Console

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

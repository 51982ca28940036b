"""The webhooks bench runs end to end on a small scale and writes its results."""

from __future__ import annotations

import shutil
from pathlib import Path

import orjson
import pytest
from rich.console import Console

import polyport.bench.webhooks_receiver as receiver_bench
from polyport.bench.webhooks import run_webhooks_bench
from polyport.core.errors import ConfigError

HAVE_WRK = shutil.which("wrk") is not None


def test_a_small_webhooks_bench_writes_json_and_markdown(tmp_path: Path) -> None:
    """Every delivery of each phase arrives; the figures are written (no timing asserts)."""
    with (tmp_path / "console.txt").open("w") as console:
        figures = run_webhooks_bench(
            endpoints=3,
            rate=60.0,
            duration=0.5,
            burst=4,
            size=10,
            output=tmp_path,
            console=Console(file=console),
            receiver=False,
        )
    assert figures.check_verified == 3
    assert figures.sustained_deliveries == 30
    assert figures.burst_deliveries == 12
    result = orjson.loads((tmp_path / "webhooks.json").read_bytes())
    assert result["bench"] == "webhooks" and result["options"]["endpoints"] == 3
    assert result["figures"]["burst_deliveries"] == 12
    assert result["figures"]["receiver"] is None
    markdown = (tmp_path / "webhooks.md").read_text()
    assert markdown.startswith("## Webhooks") and "| burst" in markdown
    assert "Receiver" not in markdown


@pytest.mark.slow
@pytest.mark.parametrize(
    "generator",
    ["python", pytest.param("wrk", marks=pytest.mark.skipif(not HAVE_WRK, reason="no wrk"))],
)
def test_the_receiver_part_counts_acknowledgements_and_stores_each_id(
    tmp_path: Path, generator: str
) -> None:
    """New and repeated ids are acknowledged without error, each acknowledged one is stored."""
    with (tmp_path / "console.txt").open("w") as console:
        figures = run_webhooks_bench(
            endpoints=1,
            rate=20.0,
            duration=0.5,
            burst=1,
            size=0,
            output=tmp_path,
            console=Console(file=console),
            connections=4,
            generator=generator,
        )
    receiver = figures.receiver
    assert receiver is not None and receiver.generator == generator
    for phase in (receiver.new_ids, receiver.duplicates):
        assert phase.acknowledgements > 0 and phase.errors == 0
        assert phase.per_s > 0 and phase.p99_ms >= phase.p50_ms > 0
    # Every acknowledged id is stored (a few more were on their way when the load stopped).
    assert receiver.stored >= receiver.new_ids.acknowledgements
    assert receiver.handled_during_load + receiver.left_after_load == receiver.stored
    result = orjson.loads((tmp_path / "webhooks.json").read_bytes())
    assert result["options"]["receiver"] is True and result["options"]["connections"] == 4
    assert result["figures"]["receiver"]["duplicates"]["errors"] == 0
    assert result["figures"]["receiver"]["stored"] == receiver.stored
    markdown = (tmp_path / "webhooks.md").read_text()
    assert "### Receiver acknowledgements" in markdown and "| repeated" in markdown


@pytest.mark.slow
def test_ids_acknowledged_but_not_stored_are_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Too few prepared ids go round and are answered as duplicates: no figures, an error."""
    monkeypatch.setattr(receiver_bench, "IDS_PER_SECOND", 1)
    with pytest.raises(ConfigError, match=r"acknowledged \d+ new ids but stored \d+"):
        receiver_bench.run_receiver_bench(seconds=0.5, connections=2, generator="python")


def test_bad_receiver_options_fail_before_anything_runs(tmp_path: Path) -> None:
    """An unknown generator or no connections is refused before the outbound part starts."""
    with pytest.raises(ConfigError, match="unknown load generator"):
        run_webhooks_bench(output=tmp_path, generator="ab", console=Console(file=None))
    with pytest.raises(ConfigError, match="connections must be between"):
        run_webhooks_bench(output=tmp_path, connections=0, console=Console(file=None))
    assert not (tmp_path / "webhooks.json").exists()

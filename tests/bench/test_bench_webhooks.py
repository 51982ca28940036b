"""The webhooks bench runs end to end on a small scale and writes its results."""

from __future__ import annotations

from pathlib import Path

import orjson
from rich.console import Console

from polyport.bench.webhooks import run_webhooks_bench


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
        )
    assert figures.check_verified == 3
    assert figures.sustained_deliveries == 30
    assert figures.burst_deliveries == 12
    result = orjson.loads((tmp_path / "webhooks.json").read_bytes())
    assert result["bench"] == "webhooks" and result["options"]["endpoints"] == 3
    assert result["figures"]["burst_deliveries"] == 12
    markdown = (tmp_path / "webhooks.md").read_text()
    assert markdown.startswith("## Webhooks") and "| burst" in markdown

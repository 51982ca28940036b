"""An engine that crashes and restarts under load loses nothing it acknowledged — on
PostgreSQL, Redis and NATS servers of the test's own (``servers.py``).

A node writes as fast as four clients ask while its engine crashes and comes
back on the same port over the same files. Afterwards, with the node never
restarted: every write the node acknowledged is in the log and none is
stored twice (each writer has a channel of its own, so each channel holds no
more than its writer asked for, offsets gapless), the SSE subscriber it kept
through the crash got every one of them in log order, and writes succeed
again. Writes during the outage answer 503 with Retry-After.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest
from tests.cluster.servers import engine_server
from tests.cluster.test_engine_outage import read_all
from tests.cluster.test_nodes_share_events import follow_sse, node

pytestmark = [pytest.mark.services, pytest.mark.timeout(180)]


def offsets_by_channel(url: str) -> dict[str, list[int]]:
    """The offsets of every ticks/# channel in the log, read through the node at ``url``."""
    offsets: dict[str, list[int]] = {}
    after = None
    while True:
        params = {"channel": "ticks/#", "limit": 1000, **({"after": after} if after else {})}
        page = httpx.get(f"{url}/v1/events", params=params, timeout=10).json()
        for event in page["events"]:
            offsets.setdefault(event["channel"], []).append(event["offset"])
        if not page["events"]:
            return offsets
        after = page["events"][-1]["id"]


@pytest.mark.parametrize("kind", ["postgresql", "redis", "nats"])
def test_an_engine_restart_under_load_loses_no_acknowledged_write(
    kind: str, tmp_path: Path
) -> None:
    with engine_server(kind) as server:
        namespace = {"postgresql": "?schema=restart", "redis": "?prefix=restart"}.get(
            kind, "?name=restart"
        )
        with node(tmp_path, server.url + namespace, "a") as a:
            acked: list[str] = []
            refused: list[httpx.Response] = []
            asked = [0, 0, 0, 0]  # events each writer asked for, answered or not
            streamed: list[str] = []
            stop = threading.Event()

            def subscribe() -> None:
                for event_id, _ in follow_sse(a, 1_000_000, read_timeout=90):
                    streamed.append(event_id)

            threading.Thread(target=subscribe, daemon=True).start()
            time.sleep(0.5)

            def write(writer: int) -> None:
                with httpx.Client(timeout=30) as client:
                    while not stop.is_set():
                        asked[writer] += 2
                        answer = client.post(f"{a}/v1/emit", json={"tag": f"r{writer}", "n": 2})
                        if answer.status_code == 200:
                            acked.extend(answer.json())
                        else:
                            refused.append(answer)
                            time.sleep(0.05)

            writers = [threading.Thread(target=write, args=(w,), daemon=True) for w in range(4)]
            for writer in writers:
                writer.start()
            time.sleep(1.5)
            before = len(acked)
            server.crash()
            time.sleep(1.0)
            server.start()
            # Writes work again, without restarting the node.
            deadline = time.monotonic() + 30
            while len(acked) <= before + 20 and time.monotonic() < deadline:
                time.sleep(0.1)
            stop.set()
            for writer in writers:
                writer.join(40)

            assert before > 0 and len(acked) > before + 20, (before, len(acked))
            for answer in refused:
                assert answer.status_code == 503, answer.text
                assert int(answer.headers["retry-after"]) >= 1
            stored = read_all(a)
            assert set(acked) <= set(stored)
            offsets = offsets_by_channel(a)
            for writer in range(4):
                held = offsets[f"ticks/r{writer}"]
                assert held == list(range(1, len(held) + 1))
                assert len(held) <= asked[writer]
            deadline = time.monotonic() + 30
            while not set(acked) <= set(streamed) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert set(acked) <= set(streamed)
            assert streamed == stored[: len(streamed)]

"""Failures under load lose nothing acknowledged — on PostgreSQL, Redis and NATS.

* An engine that goes away: writes answer 503 with Retry-After, subscribers stay
  connected and get everything once it is back, and the node needs no restart.
* A node killed with SIGKILL mid-write: every write it acknowledged is in the log,
  read through another node.

The engine is not stopped (other tests share it): a relay between the node and
the engine resets every connection and refuses new ones (see ``cutter.py``),
which is what the node sees of an engine that crashed and restarts.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
from tests.cluster.cutter import Cutter
from tests.cluster.test_nodes_share_events import follow_sse, node, node_process

pytestmark = [pytest.mark.services, pytest.mark.timeout(120)]

# Longer than an engine call may take (5 s): a write caught in the cut cannot wait it out.
LOAD = 10.0  # seconds of writes
CUT_AT, RESTORE_AT = 1.5, 7.5


def through(url: str, port: int) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit(":", 1)[0] + f":{port}"
    return urlunsplit(parts._replace(netloc=netloc))


def read_all(url: str) -> list[str]:
    """Every id of ticks/# in the log, read through the node at ``url``."""
    stored: list[str] = []
    after = None
    while True:
        params = {"channel": "ticks/#", "limit": 1000, **({"after": after} if after else {})}
        page = httpx.get(f"{url}/v1/events", params=params, timeout=10).json()
        stored += [e["id"] for e in page["events"]]
        if not page["events"]:
            return stored
        after = page["events"][-1]["id"]


def test_a_node_killed_mid_write_loses_no_acknowledged_write(engine: str, tmp_path: Path) -> None:
    with node_process(tmp_path, engine, "a") as (a, process), node(tmp_path, engine, "b") as b:
        acked: list[str] = []

        def write() -> None:
            with httpx.Client(timeout=10) as client:
                while True:
                    try:
                        answer = client.post(f"{a}/v1/emit", json={"tag": "k", "n": 5})
                    except httpx.HTTPError:
                        return  # the node is gone
                    assert answer.status_code == 200, answer.text
                    acked.extend(answer.json())

        writers = [threading.Thread(target=write, daemon=True) for _ in range(4)]
        for writer in writers:
            writer.start()
        time.sleep(1.5)
        process.kill()
        for writer in writers:
            writer.join(15)
        assert len(acked) > 20
        assert set(acked) <= set(read_all(b))


def test_an_engine_outage_loses_no_acknowledged_write(engine: str, tmp_path: Path) -> None:
    upstream = urlsplit(engine).port
    assert upstream is not None
    with (
        Cutter(upstream).running() as cutter,
        node(tmp_path, through(engine, cutter.port), "a") as a,
        node(tmp_path, engine, "b") as b,
    ):
        acked: list[str] = []
        refused: list[httpx.Response] = []
        streamed: list[str] = []

        def subscribe() -> None:
            for event_id, _ in follow_sse(a, 100_000, read_timeout=60):
                streamed.append(event_id)

        reader = threading.Thread(target=subscribe, daemon=True)
        reader.start()
        time.sleep(0.5)  # the stream is open

        def write() -> None:
            with httpx.Client(timeout=30) as client:
                started = time.monotonic()
                n = 0
                while time.monotonic() - started < LOAD:
                    n += 1
                    answer = client.post(f"{a}/v1/emit", json={"tag": "w", "n": 1})
                    if answer.status_code == 200:
                        acked.extend(answer.json())
                    else:
                        refused.append(answer)
                        time.sleep(0.05)

        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        time.sleep(CUT_AT)
        cutter.cut()
        before_cut = len(acked)
        time.sleep(RESTORE_AT - CUT_AT)
        cutter.restore()
        writer.join(LOAD + 40)
        deadline = time.monotonic() + 30
        while not set(acked) <= set(streamed) and time.monotonic() < deadline:
            time.sleep(0.1)

        assert before_cut > 0, "nothing was written before the outage"
        assert refused, "no write was refused during the outage"
        for answer in refused:
            assert answer.status_code == 503, answer.text
            assert int(answer.headers["retry-after"]) >= 1
            assert answer.headers["content-type"].startswith("application/problem+json")
        assert len(acked) > before_cut, "no write succeeded after the engine came back"
        # Nothing acknowledged is lost: node B, straight on the engine, reads every id.
        stored = read_all(b)
        assert set(acked) <= set(stored)
        # The subscriber on A was kept and got every event, in log order, no gaps.
        assert set(acked) <= set(streamed)
        assert streamed == [i for i in stored if i in set(streamed)]
        assert streamed == stored[: len(streamed)]

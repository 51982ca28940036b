"""Acknowledged means durable, across SIGKILL: nothing acknowledged or shown is lost or renamed.

Several rounds on one database: a node in its own process, writers publishing
through REST (one event per call and batches), SSE subscribers reading live,
a SIGKILL at a random moment, a restart. Then every id a writer was answered
and every id a subscriber was shown must still name the same event, and a
subscriber resuming from the last id it saw continues without a gap.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson
from tests.nodeprocess import node_process

NODE = Path(__file__).with_name("killnode.py")
ROUNDS = 5
WRITERS = 4
SUBSCRIBERS = 2
STREAM = "/v1/events/stream?channel=ticks/%23"


def node(database: Path) -> contextlib.AbstractContextManager[tuple[str, subprocess.Popen[str]]]:
    return node_process(NODE, str(database))


@dataclass
class Seen:
    """What clients were told: event id → the tick (writer, i) it names."""

    acknowledged: dict[str, tuple[int, int]] = field(default_factory=dict)
    streamed: dict[str, tuple[int, int]] = field(default_factory=dict)
    last_streamed: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def write(url: str, writer: int, first: int, stop: threading.Event, seen: Seen) -> None:
    """Publish ticks until the node dies: single events and batches, in turn."""
    i = first
    with httpx.Client(timeout=5) as client:
        while not stop.is_set():
            n = 1 if i % 3 else 7
            try:
                answer = client.post(f"{url}/v1/emit", json={"writer": writer, "first": i, "n": n})
            except httpx.HTTPError:
                return  # killed
            assert answer.status_code == 200, answer.text
            ids = answer.json()
            assert len(ids) == n
            with seen.lock:
                for k, event_id in enumerate(ids):
                    seen.acknowledged[event_id] = (writer, i + k)
            i += n


def subscribe(url: str, ready: threading.Event, seen: Seen) -> None:
    """Read the live stream until the node dies, noting every id and what it named."""
    last = None
    try:
        with (
            httpx.Client(timeout=httpx.Timeout(5, read=None)) as client,
            client.stream("GET", url + STREAM) as response,
        ):
            assert response.status_code == 200
            ready.set()
            event_id = None
            for line in response.iter_lines():
                if line.startswith("id: "):
                    event_id = line[4:]
                elif line.startswith("data: ") and event_id is not None:
                    data = orjson.loads(line[6:])["data"]
                    with seen.lock:
                        seen.streamed[event_id] = (data["writer"], data["i"])
                    last = event_id
                    event_id = None
    except httpx.HTTPError:
        pass  # killed
    finally:
        ready.set()
        if last is not None:
            with seen.lock:
                seen.last_streamed.append(last)


def history(url: str) -> list[tuple[str, tuple[int, int]]]:
    """Every event the restarted node holds, in log order."""
    events: list[tuple[str, tuple[int, int]]] = []
    after = "earliest"
    with httpx.Client(timeout=10) as client:
        while True:
            page = client.get(
                f"{url}/v1/events",
                params={"channel": "ticks/#", "after": after, "limit": 1000},
            )
            assert page.status_code == 200, page.text
            body = page.json()
            if not body["events"]:
                return events
            events += [(e["id"], (e["data"]["writer"], e["data"]["i"])) for e in body["events"]]
            after = body["next"]


def resume(url: str, last: str, expected: list[str]) -> None:
    """An SSE client resuming from ``last`` gets exactly the events after it, first to last."""
    got: list[str] = []
    with (
        httpx.Client(timeout=httpx.Timeout(10, read=10)) as client,
        client.stream("GET", url + STREAM, headers={"last-event-id": last}) as response,
    ):
        assert response.status_code == 200
        if not expected:
            return
        for line in response.iter_lines():
            assert not line.startswith("event: recovery-failed"), f"resuming from {last} failed"
            if line.startswith("id: "):
                got.append(line[4:])
                if len(got) == len(expected):
                    break
    assert got == expected


def test_nothing_acknowledged_or_shown_is_lost_across_kill_9(tmp_path: Path) -> None:
    """Writers, subscribers, a random SIGKILL, a restart: every id still means what it meant."""
    database = tmp_path / "state.sqlite3"
    seen = Seen()
    rng = random.Random(os.environ.get("POLYPORT_KILL9_SEED"))
    next_i = [0] * WRITERS
    for round in range(ROUNDS):
        with node(database) as (url, process):
            stop = threading.Event()
            readers = []
            for _ in range(SUBSCRIBERS):
                ready = threading.Event()
                reader = threading.Thread(target=subscribe, args=(url, ready, seen), daemon=True)
                reader.start()
                ready.wait(10)
                readers.append(reader)
            writers = [
                threading.Thread(target=write, args=(url, w, next_i[w], stop, seen), daemon=True)
                for w in range(WRITERS)
            ]
            for writer in writers:
                writer.start()
            time.sleep(rng.uniform(0.3, 1.2))
            process.send_signal(signal.SIGKILL)
            process.wait(10)
            stop.set()
            for thread in writers + readers:
                thread.join(15)
                assert not thread.is_alive()
        with seen.lock:
            for writer_id in range(WRITERS):
                numbers = [i for w, i in seen.acknowledged.values() if w == writer_id]
                next_i[writer_id] = max(numbers, default=next_i[writer_id]) + 1000
        # Restarted on the same file: compare what it holds with what anyone was told.
        with node(database) as (url, _):
            held = history(url)
            names = dict(held)
            assert len(names) == len(held), "an id names two events"
            lost = {i: t for i, t in seen.acknowledged.items() if names.get(i) != t}
            assert not lost, f"round {round}: {len(lost)} acknowledged event(s) lost or renamed"
            wrong = {i: t for i, t in seen.streamed.items() if names.get(i) != t}
            assert not wrong, f"round {round}: {len(wrong)} streamed event(s) lost or renamed"
            order = [event_id for event_id, _ in held]
            for last in seen.last_streamed:
                resume(url, last, order[order.index(last) + 1 :][:50])
        seen.last_streamed.clear()
    assert len(seen.acknowledged) > ROUNDS * 10  # the writers really wrote

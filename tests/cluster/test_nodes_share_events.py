"""Two nodes on one shared engine behave as one: a write on A reaches B's subscribers,
and an id from one node resumes on the other — on PostgreSQL, Redis and NATS.

Each node runs in a process of its own (`clusternode.py`); each test gets a
namespace of its own on the engine (a schema, a key prefix, a stream name)
and removes it afterwards (the ``engine`` fixture, in conftest.py).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

pytestmark = [pytest.mark.services, pytest.mark.timeout(120)]
NODE = Path(__file__).with_name("clusternode.py")


@contextlib.contextmanager
def node(tmp_path: Path, engine: str, label: str, poll: float = 0.2) -> Iterator[str]:
    """A node process on ``engine``, serving at the URL yielded until the ``with`` ends."""
    with node_process(tmp_path, engine, label, poll) as (url, _):
        yield url


@contextlib.contextmanager
def node_process(
    tmp_path: Path, engine: str, label: str, poll: float = 0.2
) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """A node process on ``engine``: its URL, and the process (to kill it).

    Its log goes to ``{label}.log`` in ``tmp_path``, not to a pipe: a pipe nobody
    reads fills up, and the node then blocks writing its log.
    """
    log_path = tmp_path / f"{label}.log"
    with log_path.open("w") as log_file:
        process = subprocess.Popen(
            [sys.executable, str(NODE), str(tmp_path / f"{label}.sqlite3"), engine, str(poll)],
            stdout=subprocess.PIPE,
            stderr=log_file,
            text=True,
            env={**os.environ},
        )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line.strip().isdigit():
            process.wait(10)
            raise AssertionError(f"node {label} did not start: {line}{log_path.read_text()}")
        url = f"http://127.0.0.1:{int(line)}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            time.sleep(0.05)
        yield url, process
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        if process.stdout is not None:
            process.stdout.close()


def follow_sse(
    url: str, n: int, headers: dict[str, str] | None = None, read_timeout: float = 10
) -> Iterator[tuple[str, dict]]:
    """The first ``n`` events of an SSE stream of ticks/#, as (id, data), as they come."""
    with (
        httpx.Client(timeout=httpx.Timeout(10, read=read_timeout)) as client,
        client.stream(
            "GET", f"{url}/v1/events/stream?channel=ticks/%23", headers=headers or {}
        ) as response,
    ):
        assert response.status_code == 200
        event_id = None
        for line in response.iter_lines():
            if line.startswith("id: "):
                event_id = line[4:]
            elif line.startswith("data: ") and event_id is not None:
                yield event_id, orjson.loads(line[6:])["data"]
                n -= 1
                if n == 0:
                    return


def read_sse(url: str, n: int, headers: dict[str, str] | None = None) -> list[tuple[str, dict]]:
    """The first ``n`` events of an SSE stream of ticks/#, as (id, data)."""
    return list(follow_sse(url, n, headers))


def emit(url: str, tag: str, n: int) -> list[str]:
    answer = httpx.post(f"{url}/v1/emit", json={"tag": tag, "n": n}, timeout=10)
    assert answer.status_code == 200, answer.text
    ids: list[str] = answer.json()
    return ids


def test_a_write_on_one_node_reaches_the_other_and_ids_resume_across(
    engine: str, tmp_path: Path
) -> None:
    """SSE on B gets what A published; B resumes A's ids; polling on A sees B's events."""
    import threading

    with node(tmp_path, engine, "a") as a, node(tmp_path, engine, "b") as b:
        received: list[tuple[str, dict]] = []
        reader = threading.Thread(target=lambda: received.extend(read_sse(b, 3)), daemon=True)
        reader.start()
        time.sleep(0.5)  # the stream is open on B
        from_a = emit(a, "a", 3)
        reader.join(15)
        assert [event_id for event_id, _ in received] == from_a
        assert [data["tag"] for _, data in received] == ["a", "a", "a"]
        from_b = emit(b, "b", 2)
        # Resume on A from A's first id: the rest of A's, then B's, in log order.
        resumed = read_sse(a, 4, headers={"last-event-id": from_a[0]})
        assert [event_id for event_id, _ in resumed] == from_a[1:] + from_b[:2]
        # Poll on B after B's first id: only B's second.
        page = httpx.get(
            f"{b}/v1/events", params={"channel": "ticks/#", "after": from_b[0]}, timeout=10
        ).json()
        assert [e["id"] for e in page["events"]] == from_b[1:]


def test_the_bus_wakes_the_other_node_at_once(engine: str, tmp_path: Path) -> None:
    """With the log read only every 60 s, B's subscribers still get each of A's writes
    within a fraction of a second: the engine's bus announced it."""
    import queue
    import threading

    with node(tmp_path, engine, "a", poll=60) as a, node(tmp_path, engine, "b", poll=60) as b:
        arrivals: queue.Queue[tuple[str, float]] = queue.Queue()

        def follow() -> None:
            for event_id, _ in follow_sse(b, 10):
                arrivals.put((event_id, time.monotonic()))

        threading.Thread(target=follow, daemon=True).start()
        time.sleep(0.5)  # the stream is open on B
        delays = []
        for _ in range(10):
            sent = time.monotonic()
            (event_id,) = emit(a, "bus", 1)
            got, at = arrivals.get(timeout=5)
            assert got == event_id
            delays.append(at - sent)
            time.sleep(0.05)
        assert max(delays) < 1.0, delays

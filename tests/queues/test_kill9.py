"""SIGKILL a node while producers send and its consumer runs: no acknowledged message is lost.

Each round starts the node, has several producers send numbered messages
(``POST /v1/queues/work``, 202 = acknowledged) and kills the node with
SIGKILL mid-stream, while handlers are running. After the last round a node
runs until every acknowledged message was handled: at least once, none lost
— and the messages whose handler was cut off by a kill ran again (after
their lease, as another node's would).

A round is not a fixed time: it lasts at least ``MIN_ROUND`` seconds and
until ``ROUND_ACKS`` sends of its own were acknowledged and a handler is
running, so a slow or busy machine gets a longer round, not a round that
proves nothing.
"""

from __future__ import annotations

import contextlib
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
from tests.nodeprocess import node_process

NODE = Path(__file__).with_name("killnode.py")
ROUNDS = 3
PRODUCERS = 4
#: A round lasts at least this long (seconds) before its kill…
MIN_ROUND = 1.5
#: …and until this many of its sends were acknowledged and a handler is running…
ROUND_ACKS = 50
#: …which must happen within this long (seconds), else the node is not working.
ROUND_DEADLINE = 20.0


@contextlib.contextmanager
def node(
    database: Path, log: Path, broker: str | None = None
) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """A node of killnode.py, on ``broker`` (a URL) or the SQLite file's work queue."""
    with node_process(NODE, str(database), str(log), *([broker] if broker else [])) as running:
        yield running


def lines(log: Path, word: str) -> set[int]:
    found = set()
    for line in log.read_text().splitlines():
        kind, _, n = line.partition(" ")
        if kind == word and n.isdigit():
            found.add(int(n))
    return found


def running(log: Path, cut_off: set[int]) -> bool:
    """Whether a handler started in this round is running (the kills before cut off
    ``cut_off``: those never write ``done`` until they run again)."""
    return bool(lines(log, "start") - lines(log, "done") - cut_off)


def test_nothing_acknowledged_is_lost_across_kill_9(tmp_path: Path) -> None:
    kill_rounds(tmp_path, None)


def kill_rounds(tmp_path: Path, broker: str | None) -> None:
    """Kill a producing and consuming node ROUNDS times; then every acknowledged message
    is handled (a broker's kill test calls this with its URL)."""
    database, log = tmp_path / "q.sqlite3", tmp_path / "handled.log"
    acknowledged: set[int] = set()
    lock = threading.Lock()
    counter = iter(range(10**9))
    cut_off: set[int] = set()

    def produce(url: str, stop: threading.Event) -> None:
        with httpx.Client(timeout=5) as client:
            while not stop.is_set():
                with lock:
                    n = next(counter)
                try:
                    answer = client.post(
                        f"{url}/v1/queues/work", json={"n": n}, headers={"idempotency-key": str(n)}
                    )
                except httpx.TimeoutException:
                    continue  # a slow answer (a busy machine): not acknowledged, go on
                except httpx.HTTPError:
                    return  # the node died: this one was never acknowledged
                if answer.status_code == 202:
                    with lock:
                        acknowledged.add(n)

    for _ in range(ROUNDS):
        with node(database, log, broker) as (url, process):
            stop = threading.Event()
            producers = [
                threading.Thread(target=produce, args=(url, stop)) for _ in range(PRODUCERS)
            ]
            with lock:
                before = len(acknowledged)
            for thread in producers:
                thread.start()
            started = time.monotonic()
            time.sleep(MIN_ROUND)
            while len(acknowledged) - before < ROUND_ACKS or not running(log, cut_off):
                assert time.monotonic() - started < ROUND_DEADLINE, (
                    f"in {ROUND_DEADLINE:g} s, {len(acknowledged) - before} sends acknowledged "
                    f"and {'a' if running(log, cut_off) else 'no'} handler running"
                )
                time.sleep(0.01)
            process.kill()  # SIGKILL, mid-stream
            process.wait(10)
            stop.set()
            for thread in producers:
                thread.join(10)
        cut_off |= lines(log, "start") - lines(log, "done")

    assert len(acknowledged) > 100, "the producers barely ran"
    assert cut_off, "no handler was running at a kill: the test proves nothing"
    with node(database, log, broker) as (url, _):
        deadline = time.monotonic() + 60
        while not acknowledged <= lines(log, "done"):
            assert time.monotonic() < deadline, (
                f"{len(acknowledged - lines(log, 'done'))} acknowledged messages never handled"
            )
            time.sleep(0.2)
        stats = httpx.get(f"{url}/v1/queues/work").json()
        assert stats["dead"] == 0
    # Handled at least once; what was cut off ran again.
    assert cut_off <= lines(log, "done")

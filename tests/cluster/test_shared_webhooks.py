"""Outgoing webhooks on three nodes of one engine: a subscription made on one node delivers
every node's events, each once, and survives the node that fanned them out being killed —
on PostgreSQL, Redis and NATS.

A receiver of the test's own (an HTTP server on a free loopback port) counts the
deliveries by their ``webhook-id``.
"""

from __future__ import annotations

import collections
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from tests.cluster.test_nodes_share_events import emit, node, node_process

pytestmark = [pytest.mark.services, pytest.mark.timeout(180)]


class Receiver:
    """Counts the webhooks POSTed to it, by ``webhook-id``."""

    def __init__(self) -> None:
        self.seen: collections.Counter[str] = collections.Counter()
        received = self.seen
        lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", "0")))
                with lock:
                    received[self.headers["webhook-id"]] += 1
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def __enter__(self) -> Receiver:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def wait_for(self, ids: list[str], seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while any(self.seen[i] == 0 for i in ids) and time.monotonic() < deadline:
            time.sleep(0.1)
        missing = [i for i in ids if self.seen[i] == 0]
        assert not missing, f"{len(missing)} of {len(ids)} never delivered"


@pytest.fixture
def private_webhooks(monkeypatch: pytest.MonkeyPatch) -> None:
    """The nodes may POST to loopback (the receiver), and look for work often."""
    monkeypatch.setenv("POLYPORT_WEBHOOKS__ALLOW_PRIVATE", '["127.0.0.0/8"]')
    monkeypatch.setenv("POLYPORT_WEBHOOKS__POLL_INTERVAL", "0.2")


def test_a_subscription_on_one_node_gets_every_nodes_events_once(
    engine: str, tmp_path: Path, private_webhooks: None
) -> None:
    with (
        Receiver() as receiver,
        node_process(tmp_path, engine, "a") as (a, process_a),
        node(tmp_path, engine, "b") as b,
        node(tmp_path, engine, "c") as c,
    ):
        made = httpx.post(
            f"{a}/v1/webhooks",
            json={"url": receiver.url, "event_types": ["ticks.created"]},
            timeout=10,
        )
        assert made.status_code == 201, made.text
        time.sleep(0.5)  # every node's table has it (they look at the version each round)
        ids = [*emit(b, "one", 10), *emit(c, "two", 10), *emit(a, "three", 10)]
        receiver.wait_for(ids, 30)
        time.sleep(1.0)  # a second delivery, if there were one, would show by now
        assert {i: n for i, n in receiver.seen.items() if n != 1} == {}

        # The node it was made on dies (it may be the one fanning out): the others go on.
        process_a.kill()
        process_a.wait(10)
        later = [*emit(b, "four", 10), *emit(c, "five", 10)]
        receiver.wait_for(later, 45)
        assert all(receiver.seen[i] >= 1 for i in ids + later)

"""Two nodes sharing one database: every delivery is attempted by one of them, once."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import httpx

from polyport import Service
from polyport.testing import serve_in_thread

from .conftest import (
    EDGES,
    OrderCreated,
    Received,
    Receiver,
    publish,
    running,
    settings_for,
    subscribe,
    wait_until,
)

#: The second node serves a service of its own (one Service object per node in a process).
twin = Service("hooksout_twin", description="The second node of the lease test.")


@twin.method
async def pong() -> str:
    return "ping"


def test_two_nodes_never_send_the_same_delivery_twice(tmp_path: Path, receiver: Receiver) -> None:
    """Test messages queued through both nodes (unleased rows) are claimed by one node each."""
    settings = settings_for(tmp_path).model_copy(update={"event_log": "memory"})
    with running(settings) as a, serve_in_thread(twin, settings, edges=EDGES) as b:
        endpoint = subscribe(a, receiver.url)
        # B learns of the endpoint from the shared table.
        wait_until(lambda: httpx.get(f"{b.url}/v1/webhooks/{endpoint['id']}").status_code == 200)
        sent = []
        for i in range(40):
            node = a if i % 2 else b
            response = httpx.post(f"{node.url}/v1/webhooks/{endpoint['id']}/test", json={"data": i})
            assert response.status_code == 202, response.text
            sent.append(response.json()["event_id"])
        receiver.wait_count(40)
        wait_until(
            lambda: all(
                d["status"] == "delivered"
                for d in httpx.get(
                    f"{a.url}/v1/webhooks/{endpoint['id']}/deliveries", params={"limit": 100}
                ).json()["items"]
            )
        )
        counts = Counter(r.id for r in receiver.requests)
        assert set(counts) == set(sent)
        assert max(counts.values()) == 1


def test_a_node_stopping_releases_what_it_has_not_sent(tmp_path: Path) -> None:
    """Deliveries queued at a graceful stop are sent by the next node at once,
    not after their lease would have run out (30 s here)."""
    hung: list[str] = []

    def behaviour(r: Received) -> tuple[int, dict[str, str], bytes] | None:
        if not hung:
            hung.append(r.id)
            return None
        return 200, {}, b"ok"

    receiver = Receiver(behaviour).start()
    settings = settings_for(tmp_path, concurrency=1, timeout=1.0, lease_margin=30.0)
    try:
        with running(settings) as node:
            subscribe(node, receiver.url)
            ids = {publish(node, OrderCreated, id=i) for i in range(3)}
            receiver.wait_count(1)
        assert len(receiver.requests) == 1
        with running(settings):
            receiver.wait_for(lambda: receiver.ids() == ids, timeout=20)
    finally:
        receiver.stop()

"""Work shared by the nodes of one engine: jobs run once, by any node, and seen from every
node; a webhook delivery received twice, on two nodes, is handled once — on PostgreSQL,
Redis and NATS, through their work queues.

Each piece of work says, as an event, which node did it: the log counts them.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import httpx
import pytest
from tests.cluster.clusternode import HOOK_SECRET
from tests.cluster.test_nodes_share_events import node

from polyport.webhooks.signing import secret_key, signature_header

pytestmark = [pytest.mark.services, pytest.mark.timeout(120)]


def events(url: str, channel: str) -> list[dict]:
    page = httpx.get(f"{url}/v1/events", params={"channel": channel, "limit": 1000}, timeout=10)
    assert page.status_code == 200, page.text
    found: list[dict] = page.json()["events"]
    return found


def test_jobs_run_once_by_any_node_and_are_seen_from_every_node(
    engine: str, tmp_path: Path
) -> None:
    with node(tmp_path, engine, "a") as a, node(tmp_path, engine, "b") as b:
        tokens = [uuid.uuid4().hex[:12] for _ in range(12)]
        locations = []
        for i, token in enumerate(tokens):
            submitted = httpx.post(
                f"{(a, b)[i % 2]}/v1/jobs/run_once", json={"token": token}, timeout=10
            )
            assert submitted.status_code == 202, submitted.text
            locations.append(submitted.headers["location"])
        for i, location in enumerate(locations):
            # Asked of the node it was *not* submitted to.
            job = httpx.get(f"{(b, a)[i % 2]}{location}", params={"wait": 20}, timeout=30).json()
            assert job["status"] == "complete", job
            assert job["result"] in ("a", "b") and job["attempts"] == 1
        for token in tokens:
            ran = events(a, f"runs/{token}")
            assert len(ran) == 1, ran


def test_a_webhook_delivered_to_two_nodes_is_handled_once(engine: str, tmp_path: Path) -> None:
    with node(tmp_path, engine, "a") as a, node(tmp_path, engine, "b") as b:
        key = secret_key(HOOK_SECRET)
        ids = [f"msg_{uuid.uuid4().hex[:16]}" for _ in range(6)]
        for delivery_id in ids:
            body = b'{"type": "thing.happened", "data": {}}'
            now = int(time.time())
            headers = {
                "content-type": "application/json",
                "webhook-id": delivery_id,
                "webhook-timestamp": str(now),
                "webhook-signature": signature_header([key], delivery_id, now, body),
            }
            for url in (a, b):  # the sender retried, and its retry reached the other node
                answer = httpx.post(f"{url}/hooks/inbound", content=body, headers=headers)
                assert answer.status_code == 200, answer.text
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            handled = [events(a, f"hooked/{i}") for i in ids]
            if all(handled):
                break
            time.sleep(0.2)
        time.sleep(1.5)  # a second handling, if there were one, would show by now
        for delivery_id in ids:
            assert len(events(b, f"hooked/{delivery_id}")) == 1

"""Three nodes behind a real load balancer, on each shared engine: HAProxy in front, round robin.

Writes through the proxy land on every node in turn; an SSE stream and a
WebSocket opened through it get what every node wrote; an id resumes on any
node; and the nodes see the real client, not the proxy.

The harness (``balancer.py``) starts the nodes and HAProxy; this test's
client connects from 127.0.0.2, so the client a node sees is not the proxy
(127.0.0.1, which the nodes trust). One cluster serves every test of an
engine: each test writes on channels of its own.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import orjson
import pytest
from tests.cluster.balancer import CLIENT, LABELS, Cluster, client
from websockets.sync.client import connect

pytestmark = [pytest.mark.services, pytest.mark.timeout(60)]


def emit_at(url: str, tag: str, headers: dict[str, str] | None = None) -> tuple[str, str]:
    """Publish one tick tagged ``tag`` through ``url``: the node that did, and the event's id."""
    with client() as c:
        answer = c.post(f"{url}/v1/emit_at", json={"tag": tag, "n": 1}, headers=headers or {})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    return body["node"], body["ids"][0]


def follow_sse(
    url: str, tag: str, n: int, *, after: str | None = None, opened: threading.Event | None = None
) -> list[str]:
    """The ids of the first ``n`` events on ``ticks/{tag}``, streamed through ``url``."""
    headers = {"last-event-id": after} if after is not None else {}
    ids: list[str] = []
    with (
        client() as c,
        c.stream("GET", f"{url}/v1/events/stream?channel=ticks/{tag}", headers=headers) as answer,
    ):
        assert answer.status_code == 200
        if opened is not None:
            opened.set()
        for line in answer.iter_lines():
            if line.startswith("id: "):
                ids.append(line[4:])
                if len(ids) == n:
                    break
    return ids


def test_writes_through_the_proxy_land_on_every_node_in_turn(cluster: Cluster) -> None:
    """Round robin: each of three writes in a row on another node, then again in that order."""
    served = [emit_at(cluster.url, "turns")[0] for _ in range(6)]
    assert sorted(served[:3]) == LABELS
    assert served[3:] == served[:3]


def test_an_sse_stream_through_the_proxy_gets_what_every_node_wrote(cluster: Cluster) -> None:
    """One stream, on one node; three writes, one on each node; the stream has all three."""
    received: list[str] = []
    opened = threading.Event()
    reader = threading.Thread(
        target=lambda: received.extend(follow_sse(cluster.url, "sse", 3, opened=opened)),
        daemon=True,
    )
    reader.start()
    assert opened.wait(10)
    written = [emit_at(cluster.url, "sse") for _ in range(3)]
    reader.join(15)
    assert sorted(node for node, _ in written) == LABELS
    assert received == [event_id for _, event_id in written]


def test_an_id_from_any_node_resumes_on_every_node(cluster: Cluster) -> None:
    """Last-Event-ID through the proxy, three times over: each node serves the resume once."""
    written = [emit_at(cluster.url, "resume")[1] for _ in range(3)]
    for _ in LABELS:
        assert follow_sse(cluster.url, "resume", 2, after=written[0]) == written[1:]


def test_a_websocket_through_the_proxy_subscribes_and_receives(cluster: Cluster) -> None:
    """The session protocol through HAProxy's tunnel: subscribed, then every node's events."""
    url = cluster.url.replace("http://", "ws://") + "/ws"
    with connect(url, proxy=None, source_address=(CLIENT, 0), open_timeout=10) as ws:
        assert orjson.loads(ws.recv(timeout=10))["type"] == "welcome"
        ws.send(orjson.dumps({"id": 1, "type": "subscribe", "channels": ["ticks/ws"]}))
        answer = orjson.loads(ws.recv(timeout=10))
        assert (answer["id"], answer["type"]) == (1, "subscribed")
        written = [emit_at(cluster.url, "ws") for _ in range(3)]
        events = [orjson.loads(ws.recv(timeout=10)) for _ in written]
    assert sorted(node for node, _ in written) == LABELS
    assert [frame["event"]["id"] for frame in events] == [event_id for _, event_id in written]


def access_log(path: Path) -> list[dict[str, Any]]:
    records = (orjson.loads(line) for line in path.read_text().splitlines() if line[:1] == "{")
    return [r for r in records if r.get("logger") == "polyport.access"]


def test_the_nodes_see_the_real_client_not_the_proxy(cluster: Cluster) -> None:
    """Through the proxy each node logs 127.0.0.2, even when the client names another address
    itself; HAProxy's own health checks are the proxy; straight to a node, the header is ignored."""
    for _ in LABELS:
        emit_at(cluster.url, "client", headers={"x-forwarded-for": "198.51.100.7"})
    emit_at(cluster.nodes["a"], "client", headers={"x-forwarded-for": "198.51.100.7"})
    for label in LABELS:
        records = access_log(cluster.logs[label])
        writes = {r["client"] for r in records if r["message"].startswith("POST /v1/emit_at ")}
        checks = {r["client"] for r in records if r["message"].startswith("GET /healthz ")}
        assert writes == {CLIENT}, label
        assert "127.0.0.1" in checks, label

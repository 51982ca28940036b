"""Refused documents cost the caller's rate limit too, over HTTP and graphql-transport-ws.

A flood of documents the edge refuses (syntax errors, limits) used to be free:
the limit was charged only once a document had been prepared. And anonymous
WebSocket callers shared one bucket whatever their address.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
import websockets
from tests.edges.graphql.conftest import settings, shop

from polyport.testing import RunningNode, serve_in_thread


@pytest.fixture
def strict() -> Iterator[RunningNode]:
    """Three requests, then a slow refill."""
    rate = {"enabled": True, "rate": 0.01, "burst": 3}
    with serve_in_thread(shop, settings(rate_limit=rate), edges=["graphql"]) as running:
        yield running


def test_refused_documents_are_charged_over_http(strict: RunningNode) -> None:
    """Three broken documents spend the bucket; the fourth request is 429 before any parsing."""
    with httpx.Client(base_url=strict.url, timeout=10) as client:
        for _ in range(3):
            answer = client.post("/graphql", json={"query": "{ user(id: 1) { "})
            assert answer.json()["errors"][0]["extensions"]["code"] != "RATE_LIMITED"
        refused = client.post("/graphql", json={"query": "{ user(id: 1) { "})
        assert refused.status_code == 429
        assert refused.json()["errors"][0]["extensions"]["code"] == "RATE_LIMITED"


async def test_websocket_operations_are_charged_to_the_callers_own_address(
    strict: RunningNode,
) -> None:
    """Operations over graphql-transport-ws spend the anonymous bucket of the client's address."""
    url = strict.url.replace("http://", "ws://") + "/graphql"
    async with websockets.connect(url, subprotocols=["graphql-transport-ws"]) as ws:  # type: ignore[list-item]
        await ws.send(json.dumps({"type": "connection_init"}))
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        codes = []
        for n in range(4):
            await ws.send(
                json.dumps({"id": str(n), "type": "subscribe", "payload": {"query": "{ nope"}})
            )
            message = json.loads(await ws.recv())
            assert message["type"] == "error"
            codes.append(message["payload"][0]["extensions"]["code"])
        assert codes[:3] != ["RATE_LIMITED"] * 3 and codes[3] == "RATE_LIMITED"
    # The same address over HTTP: the same bucket, already spent.
    async with httpx.AsyncClient(timeout=10) as client:
        answer = await client.post(f"{strict.url}/graphql", json={"query": "{ __typename }"})
    assert answer.status_code == 429

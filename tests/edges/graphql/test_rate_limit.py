"""The rate limit, on a node of its own (one node serves a service at a time)."""

from __future__ import annotations

import httpx

from polyport.testing import RunningNode


def post(node: RunningNode, query: str) -> httpx.Response:
    with httpx.Client(base_url=node.url, timeout=10) as c:
        return c.post("/graphql", json={"query": query})


def test_the_rate_limit_is_one_charge_per_request(limited: RunningNode) -> None:
    """A document of many fields is one request for the rate limit; past it: 429 + Retry-After."""
    query = "{ a: user(id: 1) { id } b: user(id: 2) { id } c: user(id: 3) { orders { id } } }"
    for _ in range(3):
        assert "errors" not in post(limited, query).json()
    refused = post(limited, query)
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.json()["errors"][0]["extensions"]["code"] == "RATE_LIMITED"

"""``graphql.introspection = false``, on a node of its own (one node serves a service at a time)."""

from __future__ import annotations

import httpx

from polyport.testing import RunningNode


def test_introspection_can_be_turned_off(closed: RunningNode) -> None:
    """graphql.introspection = false: __schema is a validation error, the SDL is gone."""
    with httpx.Client(base_url=closed.url, timeout=10) as c:
        answer = c.post("/graphql", json={"query": "{ __schema { types { name } } }"}).json()
        assert answer["errors"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
        assert c.get("/graphql/schema.graphql").status_code == 404
        assert c.post("/graphql", json={"query": "{ _service }"}).json() == {
            "data": {"_service": "gqlshop"}
        }

"""GraphQL over HTTP: GET and POST, media types, caching, persisted queries, SDL, the IDE."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator

import httpx
import pytest

from polyport.testing import RunningNode

RESPONSE_JSON = "application/graphql-response+json"


@pytest.fixture
def client(node: RunningNode) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=node.url, timeout=10) as c:
        yield c


def test_post_answers_in_the_media_type_asked_for(client: httpx.Client) -> None:
    """application/json without Accept; graphql-response+json when preferred."""
    query = {"query": "{ user(id: 1) { id } }"}
    plain = client.post("/graphql", json=query)
    assert plain.headers["content-type"] == "application/json; charset=utf-8"
    modern = client.post(
        "/graphql", json=query, headers={"accept": f"{RESPONSE_JSON}, application/json;q=0.9"}
    )
    assert modern.status_code == 200
    assert modern.headers["content-type"].startswith(RESPONSE_JSON)
    assert modern.json() == plain.json() == {"data": {"user": {"id": 1}}}
    legacy_first = client.post(
        "/graphql", json=query, headers={"accept": f"application/json, {RESPONSE_JSON};q=0.5"}
    )
    assert legacy_first.headers["content-type"].startswith("application/json")


def test_get_runs_queries_and_is_cacheable(client: httpx.Client) -> None:
    """GET carries the request in the URL; the answer has an ETag and revalidates to 304."""
    params = {
        "query": "query Q($id: Long!) { user(id: $id) { name } }",
        "variables": json.dumps({"id": 2}),
        "operationName": "Q",
    }
    first = client.get("/graphql", params=params)
    assert first.status_code == 200
    assert first.json() == {"data": {"user": {"name": "user 2"}}}
    assert first.headers["cache-control"] == "public, no-cache"
    etag = first.headers["etag"]
    again = client.get("/graphql", params=params, headers={"if-none-match": etag})
    assert again.status_code == 304
    assert again.content == b""


def test_mutations_over_get_are_405(client: httpx.Client) -> None:
    """GET is for queries only: a mutation is refused with Allow: POST and nothing runs."""
    refused = client.get(
        "/graphql", params={"query": 'mutation { updateUser(id: 1, name: "x") { id } }'}
    )
    assert refused.status_code == 405
    assert refused.headers["allow"] == "POST"
    assert client.post("/graphql", json={"query": "{ user(id: 1) { name } }"}).json() == {
        "data": {"user": {"name": "user 1"}}
    }


def test_subscriptions_are_not_served_over_http(client: httpx.Client) -> None:
    """A subscription over POST is a request error pointing at the WebSocket."""
    answer = client.post("/graphql", json={"query": "subscription { countTo(n: 2) }"})
    assert answer.status_code == 400
    assert "graphql-transport-ws" in answer.json()["errors"][0]["message"]


def test_automatic_persisted_queries(client: httpx.Client) -> None:
    """Hash only → PersistedQueryNotFound; hash + query → stored; hash only again → runs."""
    query = "{ user(id: 3) { email } }"
    digest = hashlib.sha256(query.encode()).hexdigest()
    extensions = {"persistedQuery": {"version": 1, "sha256Hash": digest}}
    unknown = client.post("/graphql", json={"extensions": extensions}).json()
    assert unknown["errors"][0]["message"] == "PersistedQueryNotFound"
    assert unknown["errors"][0]["extensions"]["code"] == "PERSISTED_QUERY_NOT_FOUND"
    stored = client.post("/graphql", json={"query": query, "extensions": extensions}).json()
    assert stored == {"data": {"user": {"email": "u3@example.com"}}}
    by_hash = client.get("/graphql", params={"extensions": json.dumps(extensions)})
    assert by_hash.json() == stored
    wrong = {"persistedQuery": {"version": 1, "sha256Hash": "0" * 64}}
    mismatch = client.post("/graphql", json={"query": query, "extensions": wrong}).json()
    assert mismatch["errors"][0]["extensions"]["code"] == "PERSISTED_QUERY_HASH_MISMATCH"
    broken = "{ user(id: 3) {"
    persisted = {"persistedQuery": {"version": 1, "sha256Hash": _sha(broken)}}
    refused = client.post("/graphql", json={"query": broken, "extensions": persisted}).json()
    assert refused["errors"][0]["extensions"]["code"] == "GRAPHQL_PARSE_FAILED"
    never_stored = client.post("/graphql", json={"extensions": persisted}).json()
    assert never_stored["errors"][0]["extensions"]["code"] == "PERSISTED_QUERY_NOT_FOUND"


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_the_sdl_is_served(client: httpx.Client) -> None:
    """GET /graphql/schema.graphql is the schema in SDL, descriptions from docstrings."""
    sdl = client.get("/graphql/schema.graphql")
    assert sdl.status_code == 200
    text = sdl.text
    assert '"""A customer."""\ntype User {' in text
    assert "user(id: Long!): User" in text
    assert "users(first: Int = 20, after: String): UserConnection\n" in text
    assert "orders(limit: Long = 10): [Order!]" in text
    assert "joined: DateTime!" in text and "meta: JSON!" in text
    assert "enum Status {\n  PENDING\n  PAID\n}" in text
    assert "createUser(name: String!, email: String!, tags: [String!]): User" in text
    assert "placeOrder(userId: Long!, items: [ItemInput!]!): Order" in text
    assert "ping: Boolean" in text
    assert "countTo(n: Long!): Long!" in text
    assert "  ordersPlaced(\n" in text and "): OrdersPlacedEvent!" in text
    assert "note: String\n" in text  # Optional → nullable


def test_introspection_is_on_by_default(client: httpx.Client) -> None:
    """The standard introspection query answers (graphql-core runs it beside our plans)."""
    answer = client.post(
        "/graphql",
        json={
            "query": '{ __schema { queryType { name } } __type(name: "User") { name } '
            "user(id: 1) { id } }"
        },
    ).json()
    assert answer == {
        "data": {
            "__schema": {"queryType": {"name": "Query"}},
            "__type": {"name": "User"},
            "user": {"id": 1},
        }
    }


def test_browsers_get_the_ide(client: httpx.Client) -> None:
    """Accept: text/html on GET /graphql serves the bundled IDE page (or says it is missing)."""
    page = client.get("/graphql", headers={"accept": "text/html,application/xhtml+xml"})
    assert page.headers["content-type"].startswith("text/html")
    assert page.status_code in (200, 404)
    if page.status_code == 200:
        assert "<html" in page.text.lower()
    shared_link = client.get(
        "/graphql", params={"query": "{ _service }"}, headers={"accept": "text/html,*/*;q=0.8"}
    )
    assert shared_link.headers["content-type"].startswith("text/html")
    json_first = client.get(
        "/graphql",
        params={"query": "{ _service }"},
        headers={"accept": "application/json, text/html;q=0.5"},
    )
    assert json_first.json() == {"data": {"_service": "gqlshop"}}


def test_the_catalog_names_contract_methods(node: RunningNode) -> None:
    """`polyport routes` and the dashboard see each method and event by its contract name."""
    entries = {(e.target, e.address) for e in node.node.catalog() if e.pattern == "GraphQL"}
    assert ("get_user", "query { user }") in entries
    assert ("list_users", "query { users }") in entries
    assert ("place_order", "mutation { placeOrder }") in entries
    assert ("count_to", "subscription { countTo }") in entries
    assert ("orders.placed", "subscription { ordersPlaced } · ws /graphql") in entries


def test_the_ide_assets_are_served_by_the_edge(client: httpx.Client) -> None:
    """GraphiQL's script and styles come from the package, cacheable with an ETag."""
    script = client.get("/static/graphiql/graphiql.js")
    if script.status_code == 404:
        pytest.skip("the GraphiQL bundle is not part of this installation")
    assert script.headers["content-type"].startswith("text/javascript")
    again = client.get(
        "/static/graphiql/graphiql.js", headers={"if-none-match": script.headers["etag"]}
    )
    assert again.status_code == 304
    styles = client.get("/static/graphiql/graphiql.css")
    assert styles.headers["content-type"].startswith("text/css")
    assert client.get("/static/graphiql/nope.js").status_code == 404

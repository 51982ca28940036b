"""Queries and mutations over HTTP: the compiled executor against the contract's handlers."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from polyport.testing import RunningNode


@pytest.fixture
def client(node: RunningNode) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=node.url, timeout=10) as c:
        yield c


def run(client: httpx.Client, query: str, **variables: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"query": query}
    if variables:
        body["variables"] = variables
    response = client.post("/graphql", json=body)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def test_a_simple_query(client: httpx.Client) -> None:
    """The benchmark's query answers exactly the fields asked for, in their order."""
    answer = run(client, "{ user(id: 1) { email id name } }")
    assert answer == {"data": {"user": {"email": "u1@example.com", "id": 1, "name": "user 1"}}}
    assert list(answer["data"]["user"]) == ["email", "id", "name"]


def test_scalars_enums_lists_and_json(client: httpx.Client) -> None:
    """Custom scalars travel in their documented text forms; enums by name."""
    data = run(
        client,
        "{ user(id: 2) { joined tags meta } order(id: 21) { status items { quantity } note } }",
    )["data"]
    assert data["user"] == {"joined": "2026-01-02T03:04:05Z", "tags": ["a"], "meta": {}}
    assert data["order"] == {
        "status": "PAID",
        "items": [{"quantity": 1}, {"quantity": 2}],
        "note": None,
    }


def test_aliases_fragments_and_typename(client: httpx.Client) -> None:
    """Aliases rename, named and inline fragments merge, __typename names the type."""
    query = """
    query Two {
      first: user(id: 1) { ...Names __typename }
      second: user(id: 2) { id ... on User { email } ...Names }
      __typename
    }
    fragment Names on User { id name }
    """
    data = run(client, query)["data"]
    assert data["first"] == {"id": 1, "name": "user 1", "__typename": "User"}
    assert data["second"] == {"id": 2, "email": "u2@example.com", "name": "user 2"}
    assert data["__typename"] == "Query"


def test_variables_and_directives(client: httpx.Client) -> None:
    """Variables feed arguments and @include/@skip; the same document serves both values."""
    query = """query Q($id: Long!, $full: Boolean!) {
      user(id: $id) { id email @include(if: $full) name @skip(if: $full) }
    }"""
    assert run(client, query, id=3, full=True)["data"]["user"] == {
        "id": 3,
        "email": "u3@example.com",
    }
    assert run(client, query, id=4, full=False)["data"]["user"] == {"id": 4, "name": "user 4"}


def test_operation_name_selects_the_operation(client: httpx.Client) -> None:
    """With several operations, operationName chooses one."""
    doc = "query A { user(id: 1) { id } } query B { user(id: 2) { id } }"
    answer = client.post("/graphql", json={"query": doc, "operationName": "B"}).json()
    assert answer == {"data": {"user": {"id": 2}}}
    missing = client.post("/graphql", json={"query": doc}).json()
    assert missing["errors"][0]["extensions"]["code"] == "OPERATION_RESOLUTION_FAILURE"


def test_mutations_create_update_delete_and_methods(client: httpx.Client) -> None:
    """Resource operations and plain methods are mutations; a method returning nothing is true."""
    created = run(
        client,
        'mutation { createUser(name: "Zoe", email: "z@example.com", tags: ["x"]) '
        "{ id name tags } }",
    )["data"]["createUser"]
    assert created == {"id": 51, "name": "Zoe", "tags": ["x"]}
    renamed = run(client, 'mutation { updateUser(id: 51, name: "Zed") { name } }')
    assert renamed["data"]["updateUser"] == {"name": "Zed"}
    assert run(client, "mutation { deleteUser(id: 51) }")["data"] == {"deleteUser": True}
    assert run(client, "mutation { multiply(a: 6, b: 7) ping }")["data"] == {
        "multiply": 42,
        "ping": True,
    }


def test_input_objects_from_variables(client: httpx.Client) -> None:
    """Input types take camelCase fields and reach the handler as the model's fields."""
    query = """mutation P($items: [ItemInput!]!) {
      placeOrder(userId: 7, items: $items) {
        userId status items { productId quantity product { name } }
      }
    }"""
    order = run(client, query, items=[{"productId": 2, "quantity": 3}])["data"]["placeOrder"]
    assert order == {
        "userId": 7,
        "status": "PENDING",
        "items": [{"productId": 2, "quantity": 3, "product": {"name": "product 2"}}],
    }


def test_connections_page_with_first_and_after(client: httpx.Client) -> None:
    """users(first, after) is a Relay connection over the resource's cursor list."""
    query = """query P($after: String) {
      users(first: 20, after: $after) {
        edges { cursor node { id } } nodes { id } pageInfo { hasNextPage endCursor }
      }
    }"""
    seen: list[int] = []
    after = None
    for _ in range(5):
        page = run(client, query, after=after)["data"]["users"]
        seen += [edge["node"]["id"] for edge in page["edges"]]
        assert [n["id"] for n in page["nodes"]] == [e["node"]["id"] for e in page["edges"]]
        after = page["pageInfo"]["endCursor"]
        if not page["pageInfo"]["hasNextPage"]:
            break
    assert seen == list(range(1, 51))
    # an edge's cursor resumes right after that edge
    first = run(client, "{ users(first: 3) { edges { cursor } } }")["data"]["users"]["edges"]
    rest = run(client, query, after=first[1]["cursor"])["data"]["users"]["nodes"]
    assert rest[0]["id"] == 3


def test_enum_arguments(client: httpx.Client) -> None:
    """Enum arguments are named by member and reach the handler as the enum."""
    data = run(client, "{ orders(first: 100, status: PAID) { nodes { status } } }")["data"]
    statuses = {o["status"] for o in data["orders"]["nodes"]}
    assert statuses == {"PAID"}


def test_nested_relations_are_batched_per_level(client: httpx.Client, calls: Counter[str]) -> None:
    """N+1: 50 users, their orders and each item's product — one call per relation per level."""
    query = """
    { users(first: 50) { nodes { id name orders(limit: 5) {
        id items { quantity product { name price } } user { id }
    } } } }
    """
    users = run(client, query)["data"]["users"]["nodes"]
    assert len(users) == 50
    assert all(len(u["orders"]) == 2 for u in users)
    assert users[4]["orders"][0]["items"][0]["product"] == {"name": "product 1", "price": "1.50"}
    assert users[4]["orders"][1]["user"] == {"id": 5}
    assert calls == {"list_users": 1, "orders_of": 1, "product_of": 1, "user_of": 1}


def test_relation_arguments_from_variables(client: httpx.Client) -> None:
    """A relation's parameters are the field's arguments, variables included."""
    query = "query Q($n: Long) { user(id: 1) { orders(limit: $n) { id } } }"
    assert run(client, query, n=1)["data"]["user"]["orders"] == [{"id": 10}]
    assert len(run(client, query, n=9)["data"]["user"]["orders"]) == 2


def test_errors_null_the_field_and_keep_the_rest(client: httpx.Client) -> None:
    """A NotFound nulls its field only; its error has the path, location and code."""
    answer = run(client, "{ a: user(id: 1) { id } b: user(id: 999) { id } }")
    assert answer["data"] == {"a": {"id": 1}, "b": None}
    (error,) = answer["errors"]
    assert error["path"] == ["b"]
    assert error["extensions"]["code"] == "NOT_FOUND"
    assert error["locations"] == [{"line": 1, "column": 25}]


def test_handler_input_errors_are_bad_user_input(client: httpx.Client) -> None:
    """InvalidArgument from the handler (or its validation) is BAD_USER_INPUT."""
    answer = run(client, 'mutation { createUser(name: "x", email: "nope") { id } }')
    assert answer["data"] == {"createUser": None}
    assert answer["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


def test_service_name_query(client: httpx.Client) -> None:
    assert run(client, "{ _service }")["data"] == {"_service": "gqlshop"}


def test_a_failing_list_nulls_only_its_field(client: httpx.Client) -> None:
    """A page size over the resource's maximum is BAD_USER_INPUT at that field only."""
    answer = run(client, "{ users(first: 2000) { nodes { id } } _service }")
    assert answer["data"] == {"users": None, "_service": "gqlshop"}
    assert answer["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert answer["errors"][0]["path"] == ["users"]


def test_calls_are_counted_per_method_and_relation(client: httpx.Client) -> None:
    """/metrics counts GraphQL calls like every edge's: by method (and relation) and code."""
    run(client, "{ user(id: 1) { orders { id } } missing: user(id: 4242) { id } }")
    metrics = client.get("/metrics").text
    assert 'polyport_calls_total{edge="graphql",method="get_user",code="OK"}' in metrics
    assert 'polyport_calls_total{edge="graphql",method="get_user",code="NOT_FOUND"}' in metrics
    assert 'polyport_calls_total{edge="graphql",method="User.orders",code="OK"}' in metrics

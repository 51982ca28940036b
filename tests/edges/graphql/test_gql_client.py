"""The ``gql`` library (a client polyport did not write) over HTTP: schema fetched, then used."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from gql import Client, GraphQLRequest, gql
from gql.client import SyncClientSession
from gql.transport.exceptions import TransportQueryError
from gql.transport.httpx import HTTPXTransport

from polyport.testing import RunningNode


@pytest.fixture
def client(node: RunningNode) -> Iterator[SyncClientSession]:
    transport = HTTPXTransport(url=f"{node.url}/graphql", timeout=10)
    with Client(transport=transport, fetch_schema_from_transport=True) as session:
        yield session


def test_gql_queries_with_variables_after_introspection(client: SyncClientSession) -> None:
    """gql introspects the schema, validates the document against it, and runs it."""
    query = GraphQLRequest(
        """
        query Profile($id: Long!) {
          user(id: $id) { name orders(limit: 1) { status items { product { name } } } }
        }
        """,
        variable_values={"id": 4},
    )
    result = client.execute(query)
    assert result == {
        "user": {
            "name": "user 4",
            "orders": [{"status": "PENDING", "items": [{"product": {"name": "product 1"}}] * 2}],
        }
    }
    assert client.client.schema is not None
    assert client.client.schema.get_type("UserConnection") is not None


def test_gql_mutations(client: SyncClientSession) -> None:
    """A mutation with an input-object variable; the created row is readable after."""
    mutation = GraphQLRequest(
        """
        mutation Place($items: [ItemInput!]!) {
          placeOrder(userId: 3, items: $items) { id userId items { quantity } }
        }
        """,
        variable_values={"items": [{"productId": 1, "quantity": 4}]},
    )
    placed = client.execute(mutation)
    order = placed["placeOrder"]
    assert order["userId"] == 3 and order["items"] == [{"quantity": 4}]
    read = client.execute(
        GraphQLRequest(
            "query O($id: Long!) { order(id: $id) { id } }", variable_values={"id": order["id"]}
        )
    )
    assert read == {"order": {"id": order["id"]}}


def test_gql_sees_field_errors(client: SyncClientSession) -> None:
    """Errors reach gql with their extensions code."""
    with pytest.raises(TransportQueryError) as failed:
        client.execute(gql("{ user(id: 12345) { id } }"))
    assert failed.value.errors is not None
    assert failed.value.errors[0]["extensions"]["code"] == "NOT_FOUND"

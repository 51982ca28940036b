"""REST ``?expand=``: the contract's relations inlined, one batch call per level."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from polyport.testing import RunningNode


@pytest.fixture
def client(demo: RunningNode) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=demo.url, timeout=10) as c:
        yield c


def test_expand_nested_relations_on_get_and_list(client: httpx.Client) -> None:
    order = client.post(
        "/v1/orders", json={"user_id": 1, "items": [{"product_id": 1, "quantity": 1}]}
    ).json()
    client.post("/v1/orders", json={"user_id": 1, "items": [{"product_id": 3, "quantity": 2}]})
    user = client.get("/v1/users/1", params={"expand": "orders.items.product"}).json()
    assert user["name"] == "Alice"
    assert user["orders"][0]["id"] == order["id"]
    first = user["orders"][0]["items"][0]
    assert first["product"]["name"] == "Mechanical keyboard" and first["product_id"] == 1
    assert "orders" not in client.get("/v1/users/1").json()  # only on request

    page = client.get("/v1/orders", params={"expand": "user,items.product", "limit": 10}).json()
    assert {o["user"]["name"] for o in page["items"]} == {"Alice"}
    assert page["items"][1]["items"][0]["product"]["price"] == "9.50"
    users = client.get("/v1/users", params={"expand": "orders"}).json()["items"]
    assert [len(u["orders"]) for u in users] == [2, 0]


def test_unknown_or_too_deep_expansions_are_422(client: httpx.Client) -> None:
    bad = client.get("/v1/users/1", params={"expand": "orders.nope"})
    assert bad.status_code == 422
    assert "no relation 'nope'" in bad.json()["detail"] and "user" in bad.json()["detail"]
    deep = client.get("/v1/users/1", params={"expand": "orders.user.orders.user.orders"})
    assert deep.status_code == 422
    assert client.get("/v1/products/1", params={"expand": "x"}).status_code == 422


def test_the_openapi_document_lists_the_expansions(client: httpx.Client) -> None:
    doc = client.get("/openapi.json").json()
    params = doc["paths"]["/v1/users/{id}"]["get"]["parameters"]
    expand = next(p for p in params if p["name"] == "expand")
    assert "orders.items.product" in expand["description"]

"""REST's parameters: what the OpenAPI document says is what the server reads.

Each case was a disagreement schemathesis found (``cursor=""``, ``expand=``
values) or one of the same class: a document that allows what the server
refuses, or forbids what it accepts.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from polyport.testing import RunningNode


@pytest.fixture
def client(demo: RunningNode) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=demo.url, timeout=30) as c:
        yield c


@pytest.fixture
def document(client: httpx.Client) -> dict[str, Any]:
    return client.get("/openapi.json").json()  # type: ignore[no-any-return]


def parameters(document: dict[str, Any], path: str) -> dict[str, Any]:
    return {p["name"]: p for p in document["paths"][path]["get"]["parameters"]}


def test_a_cursor_is_the_key_of_the_last_item(
    client: httpx.Client, document: dict[str, Any]
) -> None:
    """The document's cursor pattern is a user id's text; next_cursor matches it, and what
    it refuses (``""``, before: a 422 the document allowed) the server refuses."""
    pattern = parameters(document, "/v1/users")["cursor"]["schema"]["pattern"]
    page = client.get("/v1/users", params={"limit": 1}).json()
    assert re.fullmatch(pattern, page["next_cursor"])
    after = client.get("/v1/users", params={"limit": 1, "cursor": page["next_cursor"]})
    assert after.status_code == 200 and after.json()["items"][0]["id"] > page["items"][0]["id"]
    for cursor in ("", "abc", "01", "-0", "1.5", "9223372036854775808"):
        assert not re.fullmatch(pattern, cursor)
        assert client.get("/v1/users", params={"cursor": cursor}).status_code == 422, cursor


def test_query_parameters_have_no_null(client: httpx.Client, document: dict[str, Any]) -> None:
    """A query string cannot say null: an optional filter is its type, left out for null."""
    user_id = parameters(document, "/v1/orders")["user_id"]
    assert user_id["schema"]["type"] == "integer" and "anyOf" not in user_id["schema"]
    assert user_id["required"] is False
    assert client.get("/v1/orders", params={"user_id": "null"}).status_code == 422
    assert client.get("/v1/orders", params={"user_id": "1"}).status_code == 200


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/v1/users/1", 200),
        ("/v1/users/1.0", 200),  # JSON Schema's integer 1
        ("/v1/users/true", 422),
        ("/v1/users/01", 422),  # not a JSON number; read as 1 before
        ("/v1/users/0x1", 422),
        ("/v1/users/9223372036854775808", 422),
    ],
)
def test_path_values_are_read_as_json_numbers(client: httpx.Client, path: str, status: int) -> None:
    """A path id is read as the JSON integer it spells, nothing more lenient."""
    assert client.get(path).status_code == status


def test_expand_is_an_array_of_the_listed_paths(
    client: httpx.Client, document: dict[str, Any]
) -> None:
    """The document lists every expandable path; the server takes exactly those."""
    expand = parameters(document, "/v1/users/{id}")["expand"]
    assert (expand["style"], expand["explode"]) == ("form", False)
    allowed = expand["schema"]["items"]["enum"]
    assert "orders" in allowed and "orders.items.product" in allowed
    for value in ("orders", "orders,orders.items.product", ",".join(allowed)):
        assert client.get("/v1/users/1", params={"expand": value}).status_code == 200, value


@pytest.mark.parametrize(
    "value",
    [
        "orders, posts",  # a blank was stripped before
        "orders,,posts",  # an empty path was skipped before
        "",  # one empty path, as the form style reads it (an empty list is no parameter)
        "orders.user.orders",  # back to a model it came from: accepted before, not listed
        "nope",
    ],
)
def test_expand_refuses_what_the_document_does_not_list(client: httpx.Client, value: str) -> None:
    """What is not one of the listed paths is a 422 (some of these were answered 200)."""
    response = client.get("/v1/users/1", params={"expand": value})
    assert response.status_code == 422, value
    assert response.json()["detail"].startswith("expand:")


def test_paying_an_order_with_nothing_to_pay_is_a_conflict(client: httpx.Client) -> None:
    """A valid request the order's state refuses is 409, not a 422 the document cannot
    foresee (a free product made the provider refuse a zero amount)."""
    product = client.post("/v1/products", json={"name": "Sample", "price": "0", "stock": 5})
    user = client.post("/v1/users", json={"name": "Zed", "email": "zed@example.com"}).json()
    order = client.post(
        "/v1/orders",
        json={
            "user_id": user["id"],
            "items": [{"product_id": product.json()["id"], "quantity": 1}],
        },
    ).json()
    paid = client.post("/v1/pay_order", json={"order_id": order["id"]})
    assert paid.status_code == 409 and "nothing to pay" in paid.json()["detail"]

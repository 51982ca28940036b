"""The demo shop over SOAP with zeep: every operation, its faults, and the catalog."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import zeep
import zeep.helpers

from polyport import Settings
from polyport.node import Node
from polyport.testing import RunningNode, serve_in_thread


@pytest.fixture(scope="module")
def shop_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningNode]:
    from polyport.demo.shop import shop

    db: Path = tmp_path_factory.mktemp("soap-shop") / "db.sqlite3"
    settings = Settings.model_validate(
        {"dev": True, "database": str(db), "rate_limit": {"enabled": False}}
    )
    with serve_in_thread(shop, settings) as server:
        yield server


@pytest.fixture(scope="module")
def client(shop_node: RunningNode) -> zeep.Client:
    return zeep.Client(f"{shop_node.url}/soap?wsdl")


def _code(fault: zeep.exceptions.Fault) -> str:
    (detail,) = fault.detail
    return str(detail[0].text)


def test_every_operation_of_the_demo_shop(client: zeep.Client) -> None:
    """zeep calls each operation the WSDL lists; the shop behaves as it does over REST."""
    called: set[str] = set()
    service = client.service

    def call(operation: str, /, **kwargs: object) -> Any:
        called.add(operation)
        return getattr(service, operation)(**kwargs)

    user = call("CreateUser", name="Carol", email="carol@example.com")
    assert user.name == "Carol" and user.id > 0
    assert call("GetUser", id=user.id).email == "carol@example.com"
    renamed = call("UpdateUser", id=user.id, name="Caroline", email="carol@example.com")
    assert renamed.name == "Caroline"
    page = call("ListUsers", limit=1)
    assert len(page["items"]) == 1 and page["next_cursor"]
    rest = call("ListUsers", limit=50, cursor=page["next_cursor"])
    assert rest["next_cursor"] is None
    assert [u.id for u in page["items"] + rest["items"]][-1] == user.id

    product = call("CreateProduct", name="Lamp", price=Decimal("19.90"), stock=5)
    assert product.price == Decimal("19.90") and str(product.price) == "19.90"
    assert call("GetProduct", id=product.id).stock == 5
    updated = call(
        "UpdateProduct", id=product.id, name="Desk lamp", price=Decimal("24.00"), description="LED"
    )
    assert updated.description == "LED"
    assert call("AdjustStock", product_id=product.id, delta=3, reason="restock").stock == 8
    products = call("ListProducts", limit=50)
    assert product.id in [p.id for p in products["items"]]

    order = call("CreateOrder", user_id=user.id, items=[{"product_id": product.id, "quantity": 2}])
    assert order.status == "pending" and order.total == Decimal("48.00")
    assert [i.quantity for i in order.items] == [2]
    assert call("GetOrder", id=order.id).user_id == user.id
    orders = call("ListOrders", limit=10, user_id=user.id, status="pending")
    assert [o.id for o in orders["items"]] == [order.id]
    assert call("UpdateOrder", id=order.id, status="cancelled").status == "cancelled"
    report = call("SalesReport", delay=0)
    entries = zeep.helpers.serialize_object(report.by_status, dict)["entry"]
    by_status = {e["key"]: e["value"] for e in entries}
    assert by_status.get("cancelled", 0) >= 1 and report.orders >= 1
    assert call("DeleteOrder", id=order.id) is None
    assert call("DeleteProduct", id=product.id) is None
    assert call("DeleteUser", id=user.id) is None
    assert call("Multiply", a=-7, b=6) == -42

    # the social platform (polyport.demo.social), on the same service
    post = call("CreatePost", user_id=1, title="Over SOAP", body="Hi")
    assert call("GetPost", id=post.id).title == "Over SOAP"
    assert call("UpdatePost", id=post.id, title="Over SOAP 1.1").title == "Over SOAP 1.1"
    assert post.id in [p.id for p in call("ListPosts", limit=50, user_id=1)["items"]]
    comment = call("CreateComment", post_id=post.id, user_id=2, text="Nice")
    assert call("GetComment", id=comment.id).text == "Nice"
    assert [c.id for c in call("ListComments", limit=5, post_id=post.id)["items"]] == [comment.id]
    assert call("DeleteComment", id=comment.id) is None
    assert call("DeletePost", id=post.id) is None

    # the payment flow (polyport.demo.payments): the provider confirms by webhook later
    unpaid = call("CreateOrder", user_id=1, items=[{"product_id": 3, "quantity": 1}])
    payment = call("PayOrder", order_id=unpaid.id)
    assert payment.status == "processing" and payment.amount == unpaid.total
    assert [p.id for p in call("GetPayments", order_id=unpaid.id)] == [payment.id]

    assert called == set(client.service._binding._operations)


def test_shop_faults(client: zeep.Client) -> None:
    """NotFound and Conflict are soap:Client faults with the code in the detail."""
    with pytest.raises(zeep.exceptions.Fault) as missing:
        client.service.GetUser(id=123456)
    assert missing.value.code == "soap:Client" and _code(missing.value) == "NOT_FOUND"
    assert missing.value.message == "no user 123456"
    with pytest.raises(zeep.exceptions.Fault) as taken:
        client.service.CreateUser(name="Again", email="alice@example.com")
    assert taken.value.code == "soap:Client" and _code(taken.value) == "CONFLICT"
    with pytest.raises(zeep.exceptions.Fault) as invalid:
        client.service.CreateUser(name="", email="not-an-email")
    assert _code(invalid.value) == "INVALID_ARGUMENT"


def test_catalog_lists_each_method_and_the_wsdl() -> None:
    """`polyport routes` shows `POST /soap <Operation>` per method and the WSDL."""
    from polyport.demo.shop import shop

    node = Node(shop, Settings(database=":memory:", event_log="memory"), edges=["soap"])
    entries = {(e.target, e.address) for e in node.catalog() if e.pattern == "SOAP"}
    assert ("get_user", "POST /soap GetUser") in entries
    assert ("multiply", "POST /soap Multiply") in entries
    assert ("WSDL", "GET /soap?wsdl") in entries
    assert len(entries) == len(shop.spec().methods) + 1

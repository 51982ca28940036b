"""The demo shop over gRPC, through a reflection client: users, products, orders, events."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import orjson
import pytest

from polyport.testing import RunningNode, serve_in_thread

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def shop(
    tmp_path_factory: pytest.TempPathFactory, usersvc: Any
) -> Iterator[tuple[RunningNode, Any]]:
    from polyport.demo.shop import shop as service

    database = str(tmp_path_factory.mktemp("shop") / "shop.sqlite3")
    settings = usersvc.settings(database=database, event_log="sqlite")
    with serve_in_thread(service, settings) as node:
        target = f"127.0.0.1:{usersvc.grpc_edge(node).port}"
        with grpc.insecure_channel(target) as channel:
            yield node, usersvc.Reflected(channel, "polyport.shop.v1.ShopService")


def test_users_products_orders(shop: tuple[RunningNode, Any], usersvc: Any) -> None:
    """A customer buys a product; stock and order status move; events are streamed."""
    _, rpc = shop
    events = usersvc.Reflected(rpc.channel, "polyport.events.v1.Events")
    inventory = events("Subscribe", {"channels": ["inventory/#"]}, timeout=20)
    assert not next(inventory).events

    user = rpc("CreateUser", {"name": "Grace", "email": "grace@example.com"})
    assert rpc("GetUser", {"id": user.id}).email == "grace@example.com"
    with pytest.raises(grpc.RpcError) as caught:
        rpc("CreateUser", {"name": "Again", "email": "grace@example.com"})
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS

    lamp = rpc("CreateProduct", {"name": "Lamp", "price": "19.90", "stock": 5})
    assert (lamp.price, lamp.stock, lamp.description) == ("19.90", 5, "")
    with pytest.raises(grpc.RpcError) as caught:
        rpc("CreateProduct", {"name": "Bad", "price": "12.345"})
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    order = rpc(
        "CreateOrder",
        {"user_id": user.id, "items": [{"product_id": lamp.id, "quantity": 2}]},
    )
    status = rpc.service.file.enum_types_by_name["OrderStatus"].values_by_name
    assert order.status == status["ORDER_STATUS_PENDING"].number and order.total == "39.80"
    paid = rpc("UpdateOrder", {"id": order.id, "status": status["ORDER_STATUS_PAID"].number})
    assert paid.status == status["ORDER_STATUS_PAID"].number
    assert paid.updated_at.ToSeconds() >= order.created_at.ToSeconds()
    listed = rpc("ListOrders", {"status": status["ORDER_STATUS_PAID"].number})
    assert [o.id for o in listed.items] == [order.id]
    with pytest.raises(grpc.RpcError) as caught:
        rpc("UpdateOrder", {"id": order.id, "status": status["ORDER_STATUS_DELIVERED"].number})
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS  # Conflict: not from paid

    event = next(inventory).events[0]
    inventory.cancel()
    assert event.type == "inventory.changed" and event.channel == f"inventory/{lamp.id}"
    assert orjson.loads(event.data)["delta"] == -2
    assert rpc("GetProduct", {"id": lamp.id}).stock == 3
    assert rpc("Multiply", {"a": 6, "b": 7}).value == 42


def test_pages_and_empty_results(shop: tuple[RunningNode, Any]) -> None:
    """Resource lists page with next_cursor; a delete answers Empty."""
    _, rpc = shop
    for i in range(3):
        rpc("CreateUser", {"name": f"U{i}", "email": f"u{i}@example.com"})
    first = rpc("ListUsers", {"limit": 2})
    assert len(first.items) == 2 and first.HasField("next_cursor")
    second = rpc("ListUsers", {"limit": 2, "cursor": first.next_cursor})
    assert second.items[0].id > first.items[-1].id
    doomed = rpc("CreateUser", {"name": "Gone", "email": "gone@example.com"})
    assert rpc("DeleteUser", {"id": doomed.id}).DESCRIPTOR.full_name == "google.protobuf.Empty"
    with pytest.raises(grpc.RpcError) as caught:
        rpc("GetUser", {"id": doomed.id})
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as caught:
        rpc("ListUsers", {"cursor": "garbage"})
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_proto_and_catalog(shop: tuple[RunningNode, Any], tmp_path: Path) -> None:
    """The node serves the shop's .proto and lists gRPC in its catalog."""
    import httpx

    node, _ = shop
    text = httpx.get(f"{node.url}/grpc/shop.proto").text
    assert "package polyport.shop.v1;" in text and "service ShopService {" in text
    entries = {(e.target, e.pattern): e.address for e in node.node.catalog()}
    assert entries[("multiply", "gRPC")].endswith("polyport.shop.v1.ShopService/Multiply")

"""A small shop for the GraphQL tests: 50 users, their orders and items, counted handler calls."""

from __future__ import annotations

import base64
import datetime as dt
import os
import socket
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from enum import StrEnum
from typing import Any

import pytest
from pydantic import BaseModel

from polyport import InvalidArgument, NotFound, Service, Settings
from polyport.testing import RunningNode, serve_in_thread

#: Handler and relation calls by name, since the node started (reset per test).
CALLS: Counter[str] = Counter()


class Status(StrEnum):
    PENDING = "pending"
    PAID = "paid"


class Product(BaseModel):
    """Something for sale."""

    id: int
    name: str
    price: Decimal


class Item(BaseModel):
    product_id: int
    quantity: int


class Order(BaseModel):
    """An order of a user."""

    id: int
    user_id: int
    status: Status
    items: list[Item]
    note: str | None = None


class User(BaseModel):
    """A customer."""

    id: int
    name: str
    email: str
    joined: dt.datetime
    tags: list[str] = []
    meta: dict[str, Any] = {}


PRODUCTS = {i: Product(id=i, name=f"product {i}", price=Decimal(f"{i}.50")) for i in range(1, 6)}
JOINED = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


def fresh_users() -> dict[int, User]:
    return {
        i: User(id=i, name=f"user {i}", email=f"u{i}@example.com", joined=JOINED, tags=["a"])
        for i in range(1, 51)
    }


def fresh_orders() -> dict[int, Order]:
    orders = {}
    for user_id in range(1, 51):
        for n in range(2):
            oid = user_id * 10 + n
            orders[oid] = Order(
                id=oid,
                user_id=user_id,
                status=Status.PAID if n else Status.PENDING,
                items=[Item(product_id=(oid % 5) + 1, quantity=1), Item(product_id=1, quantity=2)],
            )
    return orders


USERS = fresh_users()
ORDERS = fresh_orders()

shop = Service("gqlshop", description="The GraphQL tests' shop.")
users = shop.resource("users", User)
orders = shop.resource("orders", Order, events=False)
OrderPlaced = shop.event("orders.placed", Order, channel="orders/{user_id}", public=True)


@users.get(public=True)
async def get_user(id: int) -> User:
    """Read one user."""
    CALLS["get_user"] += 1
    if id not in USERS:
        raise NotFound(f"no user {id}")
    return USERS[id]


@users.list(public=True)
async def list_users(limit: int = 20, cursor: str | None = None) -> list[User]:
    """Users by id."""
    CALLS["list_users"] += 1
    after = int(cursor) if cursor else 0
    return [u for k, u in sorted(USERS.items()) if k > after][:limit]


@users.create(public=True)
async def create_user(name: str, email: str, tags: list[str] | None = None) -> User:
    """Register a user."""
    CALLS["create_user"] += 1
    if "@" not in email:
        raise InvalidArgument("an email has an @")
    user = User(
        id=max(USERS) + 1, name=name, email=email, joined=dt.datetime.now(dt.UTC), tags=tags or []
    )
    USERS[user.id] = user
    return user


@users.update(public=True)
async def update_user(id: int, name: str) -> User:
    CALLS["update_user"] += 1
    if id not in USERS:
        raise NotFound(f"no user {id}")
    USERS[id] = USERS[id].model_copy(update={"name": name})
    return USERS[id]


@users.delete(public=True)
async def delete_user(id: int) -> None:
    CALLS["delete_user"] += 1
    USERS.pop(id, None)


@orders.get(public=True)
async def get_order(id: int) -> Order:
    CALLS["get_order"] += 1
    if id not in ORDERS:
        raise NotFound(f"no order {id}")
    return ORDERS[id]


@orders.list(public=True)
async def list_orders(
    limit: int = 20, cursor: str | None = None, status: Status | None = None
) -> list[Order]:
    CALLS["list_orders"] += 1
    after = int(cursor) if cursor else 0
    found = [o for k, o in sorted(ORDERS.items()) if k > after]
    if status is not None:
        found = [o for o in found if o.status is status]
    return found[:limit]


@users.relation("orders", public=True)
async def orders_of(user_ids: list[int], limit: int = 10) -> dict[int, list[Order]]:
    """The user's orders."""
    CALLS["orders_of"] += 1
    out: dict[int, list[Order]] = {}
    for order in ORDERS.values():
        if order.user_id in user_ids:
            out.setdefault(order.user_id, []).append(order)
    return {k: v[:limit] for k, v in out.items()}


@orders.relation("user", via="user_id", public=True)
async def user_of(user_ids: list[int]) -> dict[int, User]:
    CALLS["user_of"] += 1
    return {k: USERS[k] for k in user_ids if k in USERS}


@shop.relation(Item, "product", via="product_id", public=True)
async def product_of(product_ids: list[int]) -> list[Product | None]:
    """The product ordered."""
    CALLS["product_of"] += 1
    return [PRODUCTS.get(k) for k in product_ids]


@users.relation("secret", scopes=["admin"])
async def secret_of(user_ids: list[int]) -> list[str]:
    """Only for admins."""
    CALLS["secret_of"] += 1
    return [f"secret {k}" for k in user_ids]


@shop.method(public=True)
async def multiply(a: int, b: int) -> int:
    """Multiply two numbers."""
    CALLS["multiply"] += 1
    return a * b


@shop.method(public=True)
async def ping() -> None:
    CALLS["ping"] += 1


@shop.method(public=True)
async def place_order(user_id: int, items: list[Item]) -> Order:
    """Place an order and announce it."""
    CALLS["place_order"] += 1
    order = Order(id=max(ORDERS) + 1, user_id=user_id, status=Status.PENDING, items=items)
    ORDERS[order.id] = order
    await shop.publish(OrderPlaced(order))
    return order


@shop.method(scopes=["admin"])
async def wipe() -> int:
    """Admins only."""
    return 0


@shop.method(public=True)
async def slow(seconds: float) -> int:
    import asyncio

    await asyncio.sleep(seconds)
    return 1


@shop.stream(public=True)
async def count_to(n: int) -> AsyncIterator[int]:
    """1, 2, … n."""
    for i in range(1, n + 1):
        yield i


@pytest.fixture(autouse=True)
def _reset() -> None:
    CALLS.clear()
    USERS.clear()
    USERS.update(fresh_users())
    ORDERS.clear()
    ORDERS.update(fresh_orders())


def settings(**extra: Any) -> Settings:
    values: dict[str, Any] = {
        "dev": True,
        "database": ":memory:",
        "event_log": "memory",
        "rate_limit": {"enabled": False},
    }
    values.update(extra)
    return Settings.model_validate(values)


@pytest.fixture(scope="module")
def node() -> Iterator[RunningNode]:
    with serve_in_thread(shop, settings(), edges=["rest", "graphql"]) as running:
        yield running


@pytest.fixture
def calls() -> Counter[str]:
    """Handler and relation calls of the current test."""
    return CALLS


@pytest.fixture(scope="module")
def strict() -> Iterator[RunningNode]:
    """Tight limits, to reach each of them with a small document."""
    limits = {
        "max_depth": 4,
        "max_cost": 200,
        "max_aliases": 3,
        "max_tokens": 120,
        "timeout": 0.3,
    }
    with serve_in_thread(shop, settings(graphql=limits), edges=["graphql"]) as running:
        yield running


@pytest.fixture(scope="module")
def closed() -> Iterator[RunningNode]:
    """Introspection turned off."""
    with serve_in_thread(
        shop, settings(graphql={"introspection": False}), edges=["graphql"]
    ) as running:
        yield running


ADMIN_KEY = "admin-key-0123456789"
USER_KEY = "user-key-0123456789"


@pytest.fixture(scope="module")
def secure() -> Iterator[RunningNode]:
    """Secure mode: credentials needed unless public; an admin and a plain user key."""
    auth = {
        "api_keys": [
            {"key": ADMIN_KEY, "subject": "admin", "scopes": ["admin"]},
            {"key": USER_KEY, "subject": "user"},
        ]
    }
    with serve_in_thread(shop, settings(dev=False, auth=auth), edges=["graphql"]) as running:
        yield running


@pytest.fixture
async def edge() -> AsyncIterator[Any]:
    """The GraphQL edge of a started node, in this test's event loop (no HTTP)."""
    from polyport.node import Node

    node = Node(shop, settings(), edges=["graphql"])
    async with node.running():
        yield node.edges[0]


@pytest.fixture(scope="module")
def limited() -> Iterator[RunningNode]:
    """A rate limit of three requests (and a slow refill)."""
    rate = {"enabled": True, "rate": 0.01, "burst": 3}
    with serve_in_thread(shop, settings(rate_limit=rate), edges=["graphql"]) as running:
        yield running


def raw_graphql_socket(host: str, port: int) -> socket.socket:
    """A client that opens /graphql with the subprotocol, then reads only when told.

    Its receive buffer is tiny, so a test can make it a slow consumer.
    """
    sock = socket.create_connection((host, port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    key = base64.b64encode(os.urandom(16))
    sock.sendall(
        b"GET /graphql HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n"
        b"Sec-WebSocket-Protocol: graphql-transport-ws\r\n\r\n"
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101")
    return sock


def masked_text(payload: bytes) -> bytes:
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    assert len(payload) < 126
    return bytes([0x81, 0x80 | len(payload)]) + mask + masked

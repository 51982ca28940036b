"""The guide's e-commerce system, first form: users, products with inventory, orders.

Serve it with ``polyport demo`` (development mode, everything allowed) or
``polyport serve polyport.demo.shop:shop`` (credentials required; browsing
products is public).
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, Field

from polyport import Conflict, Context, NotFound, Service
from polyport.demo.store import ShopStore, money
from polyport.settings import Settings

Id = Annotated[int, Field(ge=1, le=2**63 - 1)]
Name = Annotated[str, Field(min_length=1, max_length=200)]
# Control characters and spaces spelled out: '\s' means different things in
# JavaScript, Python and Rust regular expressions, and the OpenAPI document
# must agree with the validator.
Email = Annotated[
    str,
    Field(
        min_length=3, max_length=254, pattern=r"^[^@\x00-\x20\x7f-\x9f]+@[^@\x00-\x20\x7f-\x9f]+$"
    ),
]
Price = Annotated[Decimal, Field(ge=0, le=Decimal("1000000"), decimal_places=2)]
Quantity = Annotated[int, Field(ge=1, le=1000)]


class User(BaseModel):
    """A customer of the shop."""

    id: int
    name: str
    email: str
    created_at: datetime


class Product(BaseModel):
    """Something for sale, with the stock on hand."""

    id: int
    name: str
    description: str = ""
    price: Decimal
    stock: int


class OrderStatus(StrEnum):
    """Where an order is in its life."""

    PENDING = "pending"
    PAID = "paid"
    SHIPPED = "shipped"
    DELIVERED = "delivered"
    CANCELLED = "cancelled"


class OrderItem(BaseModel):
    product_id: int
    quantity: int
    unit_price: Decimal


class OrderLine(BaseModel):
    """One line of a new order."""

    product_id: Id
    quantity: Quantity


class Order(BaseModel):
    """An order: its lines, its total and its status."""

    id: int
    user_id: int
    status: OrderStatus
    items: list[OrderItem]
    total: Decimal
    created_at: datetime
    updated_at: datetime


class InventoryChanged(BaseModel):
    """A product's stock went up or down."""

    product_id: int
    stock: int
    delta: int
    reason: str


class ChatMessage(BaseModel):
    """One message in a support chat room."""

    room: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9_-]+$")]
    user: Annotated[str, Field(min_length=1, max_length=64)]
    text: Annotated[str, Field(min_length=1, max_length=2000)]


class SalesReport(BaseModel):
    """Totals over the orders of the shop."""

    orders: int
    revenue: Decimal
    by_status: dict[str, int]
    generated_at: datetime


shop = Service(
    "shop",
    version=1,
    description="The guide's e-commerce example: users, products with inventory, orders.",
)
users = shop.resource("users", User, description="Customers")
products = shop.resource("products", Product, description="The catalogue, with stock")
orders = shop.resource("orders", Order, description="Orders and their status")
InventoryEvent = shop.event(
    "inventory.changed",
    InventoryChanged,
    channel="inventory/{product_id}",
    description="Stock of a product changed (an order, a restock, a correction).",
)

ChatEvent = shop.event(
    "chat.message",
    ChatMessage,
    channel="chat/{room}",
    description="A message in a support chat room (the guide's WebSocket chat example).",
    publish_scopes=["chat"],
    scopes=["chat"],
)

store = ShopStore()

# Which status may follow which: anything else is a Conflict.
TRANSITIONS = {
    OrderStatus.PENDING: {OrderStatus.PAID, OrderStatus.CANCELLED},
    OrderStatus.PAID: {OrderStatus.SHIPPED, OrderStatus.CANCELLED},
    OrderStatus.SHIPPED: {OrderStatus.DELIVERED},
    OrderStatus.DELIVERED: set(),
    OrderStatus.CANCELLED: set(),
}


@shop.on_startup
def _open(settings: Settings) -> None:
    # The shop's own tables live beside polyport's file, not in it: polyport
    # keeps a write transaction open while it groups event appends, and a
    # second connection writing the same file would wait on it.
    database = settings.database
    if database != ":memory:":
        database = str(Path(database).with_suffix("")) + ".shop.sqlite3"
    store.open(database)


@shop.on_shutdown
def _close() -> None:
    store.close()


def _ts(value: float) -> datetime:
    return datetime.fromtimestamp(value, UTC)


# -- users ------------------------------------------------------------------------------


def _user(row: tuple[object, ...] | None, id: int) -> User:
    if row is None:
        raise NotFound(f"no user {id}")
    return User(id=row[0], name=row[1], email=row[2], created_at=_ts(row[3]))  # type: ignore[arg-type]


@users.get
async def get_user(id: Id) -> User:
    """Read one user."""
    return _user(store.one("SELECT id, name, email, created FROM shop_users WHERE id=?", id), id)


@users.list
async def list_users(limit: int = 50, cursor: str | None = None) -> list[User]:
    """List users by id."""
    after = int(cursor) if cursor else 0
    rows = store.all(
        "SELECT id, name, email, created FROM shop_users WHERE id > ? ORDER BY id LIMIT ?",
        after,
        limit,
    )
    return [_user(row, 0) for row in rows]


@users.create
async def create_user(name: Name, email: Email) -> User:
    """Register a user. The email must not be taken."""
    if store.one("SELECT 1 FROM shop_users WHERE email = ?", email):
        raise Conflict(f"email {email} is already registered")
    cursor = store.run(
        "INSERT INTO shop_users (name, email, created) VALUES (?, ?, ?)", name, email, time.time()
    )
    return await get_user(cursor.lastrowid or 0)


@users.update
async def update_user(id: Id, name: Name, email: Email) -> User:
    """Replace a user's name and email."""
    await get_user(id)
    other = store.one("SELECT id FROM shop_users WHERE email = ? AND id != ?", email, id)
    if other:
        raise Conflict(f"email {email} is already registered")
    store.run("UPDATE shop_users SET name=?, email=? WHERE id=?", name, email, id)
    return await get_user(id)


@users.delete
async def delete_user(id: Id) -> None:
    """Delete a user who has no orders."""
    await get_user(id)
    if store.one("SELECT 1 FROM shop_orders WHERE user_id = ?", id):
        raise Conflict(f"user {id} has orders and cannot be deleted")
    store.run("DELETE FROM shop_users WHERE id=?", id)


# -- products -----------------------------------------------------------------------------


def _product(row: tuple[object, ...] | None, id: int) -> Product:
    if row is None:
        raise NotFound(f"no product {id}")
    return Product(
        id=row[0],
        name=row[1],
        description=row[2],
        price=money(row[3]),
        stock=row[4],
    )


_PRODUCT = "SELECT id, name, description, price, stock FROM shop_products"


@products.get(public=True)
async def get_product(id: Id) -> Product:
    """Read one product with its current stock."""
    return _product(store.one(f"{_PRODUCT} WHERE id=?", id), id)


@products.list(public=True)
async def list_products(limit: int = 50, cursor: str | None = None) -> list[Product]:
    """Browse the catalogue."""
    after = int(cursor) if cursor else 0
    rows = store.all(f"{_PRODUCT} WHERE id > ? ORDER BY id LIMIT ?", after, limit)
    return [_product(row, 0) for row in rows]


@products.create(scopes=["catalog:write"])
async def create_product(
    name: Name,
    price: Price,
    stock: Annotated[int, Field(ge=0, le=1_000_000)] = 0,
    description: Annotated[str, Field(max_length=2000)] = "",
) -> Product:
    """Add a product to the catalogue."""
    cursor = store.run(
        "INSERT INTO shop_products (name, description, price, stock) VALUES (?, ?, ?, ?)",
        name,
        description,
        str(money(price)),
        stock,
    )
    return await get_product(cursor.lastrowid or 0)


@products.update(scopes=["catalog:write"])
async def update_product(
    id: Id,
    name: Name,
    price: Price,
    description: Annotated[str, Field(max_length=2000)] = "",
) -> Product:
    """Replace a product's name, price and description (stock changes go through adjust_stock)."""
    await get_product(id)
    store.run(
        "UPDATE shop_products SET name=?, description=?, price=? WHERE id=?",
        name,
        description,
        str(money(price)),
        id,
    )
    return await get_product(id)


@products.delete(scopes=["catalog:write"])
async def delete_product(id: Id) -> None:
    """Remove a product from the catalogue."""
    await get_product(id)
    store.run("DELETE FROM shop_products WHERE id=?", id)


async def _change_stock(product_id: int, delta: int, reason: str) -> Product:
    product = await get_product(product_id)
    if product.stock + delta < 0:
        raise Conflict(f"product {product_id} has only {product.stock} in stock")
    store.run("UPDATE shop_products SET stock = stock + ? WHERE id=?", delta, product_id)
    product = await get_product(product_id)
    await InventoryEvent.publish(
        InventoryChanged(product_id=product_id, stock=product.stock, delta=delta, reason=reason)
    )
    return product


@shop.method(scopes=["catalog:write"])
async def adjust_stock(
    product_id: Id,
    delta: Annotated[int, Field(ge=-1_000_000, le=1_000_000)],
    reason: Annotated[str, Field(min_length=1, max_length=200)] = "correction",
) -> Product:
    """Add (or remove, with a negative delta) stock of a product.

    Args:
        product_id: The product.
        delta: Units to add; negative to remove.
        reason: Why, for the inventory log.
    """
    return await _change_stock(product_id, delta, reason)


# -- orders --------------------------------------------------------------------------------


_ORDER = "SELECT id, user_id, status, total, created, updated FROM shop_orders"


def _marks(values: list[int]) -> str:
    return ",".join("?" * len(values))


def _orders(rows: list[tuple[Any, ...]]) -> list[Order]:
    """Orders from their rows, with every order's lines read in one query."""
    ids = [row[0] for row in rows]
    lines: dict[int, list[OrderItem]] = {i: [] for i in ids}
    if ids:
        sql = (
            "SELECT order_id, product_id, quantity, unit_price FROM shop_order_items "
            f"WHERE order_id IN ({_marks(ids)}) ORDER BY rowid"
        )
        for order_id, product_id, quantity, unit_price in store.all(sql, *ids):
            lines[order_id].append(
                OrderItem(product_id=product_id, quantity=quantity, unit_price=money(unit_price))
            )
    return [
        Order(
            id=row[0],
            user_id=row[1],
            status=OrderStatus(row[2]),
            items=lines[row[0]],
            total=money(row[3]),
            created_at=_ts(row[4]),
            updated_at=_ts(row[5]),
        )
        for row in rows
    ]


def _order(id: int) -> Order:
    row = store.one(f"{_ORDER} WHERE id=?", id)
    if row is None:
        raise NotFound(f"no order {id}")
    return _orders([row])[0]


@orders.get
async def get_order(id: Id) -> Order:
    """Check an order's status."""
    return _order(id)


@orders.list
async def list_orders(
    limit: int = 50,
    cursor: str | None = None,
    user_id: Id | None = None,
    status: OrderStatus | None = None,
) -> list[Order]:
    """List orders, newest last, optionally of one user or in one status."""
    after = int(cursor) if cursor else 0
    sql = f"{_ORDER} WHERE id > ?"
    args: list[object] = [after]
    if user_id is not None:
        sql += " AND user_id = ?"
        args.append(user_id)
    if status is not None:
        sql += " AND status = ?"
        args.append(status.value)
    return _orders(store.all(sql + " ORDER BY id LIMIT ?", *args, limit))


@orders.create
async def create_order(
    user_id: Id, items: Annotated[list[OrderLine], Field(min_length=1, max_length=50)]
) -> Order:
    """Place an order: stock is reserved at once; the order starts as pending."""
    await get_user(user_id)
    lines: dict[int, int] = {}
    for line in items:
        lines[line.product_id] = lines.get(line.product_id, 0) + line.quantity
    priced = []
    for product_id, quantity in lines.items():
        product = await get_product(product_id)
        if product.stock < quantity:
            raise Conflict(f"product {product_id} has only {product.stock} in stock")
        priced.append((product, quantity))
    total = sum((p.price * q for p, q in priced), Decimal("0"))
    now = time.time()
    with store.transaction():  # the order, its lines and the stock: all or nothing
        cursor = store.run(
            "INSERT INTO shop_orders (user_id, status, total, created, updated) "
            "VALUES (?, ?, ?, ?, ?)",
            user_id,
            OrderStatus.PENDING.value,
            str(money(total)),
            now,
            now,
        )
        order_id = cursor.lastrowid or 0
        for product, quantity in priced:
            store.run(
                "INSERT INTO shop_order_items (order_id, product_id, quantity, unit_price) "
                "VALUES (?, ?, ?, ?)",
                order_id,
                product.id,
                quantity,
                str(product.price),
            )
            taken = store.run(
                "UPDATE shop_products SET stock = stock - ? WHERE id = ? AND stock >= ?",
                quantity,
                product.id,
                quantity,
            )
            if taken.rowcount != 1:  # someone bought it meanwhile
                raise Conflict(f"product {product.id} no longer has {quantity} in stock")
    for product, quantity in priced:
        stock = store.one("SELECT stock FROM shop_products WHERE id=?", product.id)
        await InventoryEvent.publish(
            InventoryChanged(
                product_id=product.id,
                stock=stock[0] if stock else 0,
                delta=-quantity,
                reason=f"order {order_id}",
            )
        )
    return _order(order_id)


@orders.update
async def update_order(id: Id, status: OrderStatus) -> Order:
    """Move an order to its next status (pending → paid → shipped → delivered, or cancelled)."""
    order = _order(id)
    if status == order.status:
        return order
    if status not in TRANSITIONS[order.status]:
        raise Conflict(f"an order cannot go from {order.status.value} to {status.value}")
    store.run(
        "UPDATE shop_orders SET status=?, updated=? WHERE id=?", status.value, time.time(), id
    )
    if status == OrderStatus.CANCELLED:
        for item in order.items:
            await _change_stock(item.product_id, item.quantity, f"order {id} cancelled")
    return _order(id)


@orders.delete
async def delete_order(id: Id) -> None:
    """Delete a cancelled or delivered order from the history."""
    order = _order(id)
    if order.status not in (OrderStatus.CANCELLED, OrderStatus.DELIVERED):
        raise Conflict("only cancelled or delivered orders can be deleted; cancel it first")
    store.run("DELETE FROM shop_order_items WHERE order_id=?", id)
    store.run("DELETE FROM shop_orders WHERE id=?", id)


# -- relations: nested reads in one batch per level (GraphQL, REST ?expand=) ---------------


@users.relation("orders")
async def orders_of_users(
    user_ids: list[int], limit: Annotated[int, Field(ge=1, le=100)] = 20
) -> dict[int, list[Order]]:
    """The user's orders, oldest first.

    Args:
        limit: At most this many orders per user.
    """
    rows = store.all(
        "SELECT id, user_id, status, total, created, updated FROM ("
        "  SELECT *, row_number() OVER (PARTITION BY user_id ORDER BY id) AS n"
        f"  FROM shop_orders WHERE user_id IN ({_marks(user_ids)})"
        ") WHERE n <= ? ORDER BY id",
        *user_ids,
        limit,
    )
    by_user: dict[int, list[Order]] = {}
    for order in _orders(rows):
        by_user.setdefault(order.user_id, []).append(order)
    return by_user


@orders.relation("user", via="user_id")
async def users_of_orders(user_ids: list[int]) -> dict[int, User]:
    """Who placed the order."""
    rows = store.all(
        f"SELECT id, name, email, created FROM shop_users WHERE id IN ({_marks(user_ids)})",
        *user_ids,
    )
    return {row[0]: _user(row, 0) for row in rows}


@shop.relation(OrderItem, "product", via="product_id", public=True)
async def products_of_lines(product_ids: list[int]) -> dict[int, Product]:
    """The product ordered (null if it has left the catalogue since)."""
    rows = store.all(f"{_PRODUCT} WHERE id IN ({_marks(product_ids)})", *product_ids)
    return {row[0]: _product(row, 0) for row in rows}


# -- plain methods -------------------------------------------------------------------------


@shop.method(public=True)
async def multiply(a: int, b: int) -> int:
    """The guide's RPC example: multiply two numbers.

    Args:
        a: The first factor.
        b: The second factor.
    """
    return a * b


@shop.method
async def sales_report(
    ctx: Context, delay: Annotated[float, Field(ge=0, le=10)] = 2.0
) -> SalesReport:
    """Totals over all orders — deliberately slow, to show jobs and long polling.

    Args:
        delay: Seconds to spend 'crunching' before answering.
    """
    await asyncio.sleep(delay)
    rows = store.all(
        "SELECT status, count(*), coalesce(sum(CAST(total AS REAL)), 0) "
        "FROM shop_orders GROUP BY status"
    )
    by_status = {status: count for status, count, _ in rows}
    revenue = sum(
        (money(total) for status, _, total in rows if status != OrderStatus.CANCELLED.value),
        Decimal("0"),
    )
    return SalesReport(
        orders=sum(by_status.values()),
        revenue=money(revenue),
        by_status=by_status,
        generated_at=datetime.now(UTC),
    )


# The other examples of the guide, declared on this same service.
from polyport.demo import monitoring, orderflow, payments, social  # noqa: E402, F401

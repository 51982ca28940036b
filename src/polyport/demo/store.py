"""The demo shop's tables, in the node's SQLite file (or memory)."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS shop_users (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT NOT NULL UNIQUE, created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS shop_products (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL, description TEXT NOT NULL DEFAULT '',
    price TEXT NOT NULL, stock INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS shop_orders (
    id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL, status TEXT NOT NULL,
    total TEXT NOT NULL, created REAL NOT NULL, updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS shop_order_items (
    order_id INTEGER NOT NULL, product_id INTEGER NOT NULL, quantity INTEGER NOT NULL,
    unit_price TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS shop_order_items_by_order ON shop_order_items (order_id);
"""

SEED_USERS = [("Alice", "alice@example.com"), ("Bob", "bob@example.com")]
SEED_PRODUCTS = [
    ("Mechanical keyboard", "Tactile switches, USB-C", "89.00", 25),
    ("27-inch monitor", "1440p, 144 Hz", "279.00", 10),
    ("USB-C cable", "2 m, 100 W", "9.50", 200),
]


class ShopStore:
    """Plain SQL for the demo; a real service would bring its own data layer."""

    def __init__(self) -> None:
        self.conn: sqlite3.Connection | None = None

    def open(self, path: str) -> None:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=5000")
        conn.executescript(SCHEMA)
        self.conn = conn
        if conn.execute("SELECT count(*) FROM shop_users").fetchone()[0] == 0:
            now = time.time()
            conn.executemany(
                "INSERT INTO shop_users (name, email, created) VALUES (?, ?, ?)",
                [(n, e, now) for n, e in SEED_USERS],
            )
        if conn.execute("SELECT count(*) FROM shop_products").fetchone()[0] == 0:
            conn.executemany(
                "INSERT INTO shop_products (name, description, price, stock) VALUES (?, ?, ?, ?)",
                SEED_PRODUCTS,
            )

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    @property
    def db(self) -> sqlite3.Connection:
        if self.conn is None:
            raise RuntimeError("the shop store is not open")
        return self.conn

    def one(self, sql: str, *args: Any) -> tuple[Any, ...] | None:
        return self.db.execute(sql, args).fetchone()  # type: ignore[no-any-return]

    def all(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        return self.db.execute(sql, args).fetchall()

    def run(self, sql: str, *args: Any) -> sqlite3.Cursor:
        return self.db.execute(sql, args)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """All or nothing: an order and its stock changes land together."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")


def money(value: Any) -> Decimal:
    return Decimal(str(value)).quantize(Decimal("0.01"))

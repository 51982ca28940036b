"""Schema changes of files written by earlier versions, safe when several nodes open one file."""

from __future__ import annotations

import sqlite3


def add_column(conn: sqlite3.Connection, table: str, name: str, declaration: str) -> None:
    """Add a column an older file lacks (its rows get NULL).

    Two nodes starting on one file may both see it missing; the second
    ``ALTER TABLE`` then fails with "duplicate column", which means done.
    """
    try:
        conn.execute(f"ALTER TABLE {table} ADD COLUMN {name} {declaration}")
    except sqlite3.OperationalError as exc:
        if "duplicate column" not in str(exc):
            raise

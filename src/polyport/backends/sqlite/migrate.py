"""Schema changes of files written by earlier versions, safe when several nodes open one file."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping


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


def add_columns(conn: sqlite3.Connection, added: Mapping[str, Iterable[tuple[str, str]]]) -> None:
    """Add every column of ``added`` (``{table: ((name, declaration), …)}``) a file lacks.

    A name may be quoted (``'"group"'``: a keyword of SQL); it is looked for unquoted.
    """
    for table, columns in added.items():
        present = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        for name, declaration in columns:
            if name.strip('"') not in present:  # a file from before the column
                add_column(conn, table, name, declaration)

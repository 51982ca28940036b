"""One SQLite connection per database file, shared by the stores that live in it.

Statements are small and run on the event loop's thread: handing them to a
worker thread and back would cost more than they do.

**Group commit.** A commit writes the WAL and costs about 40 µs; an insert in
an open transaction about 3 µs. Event appends therefore go through
:meth:`SqliteDatabase.group_write`: the first one of a loop iteration opens a
transaction, later ones join it, and it commits when the iteration yields
(``call_soon``) or after :data:`GROUP_MAX` writes, whichever comes first. The
connection sees its own uncommitted rows, so readers are never behind. What
must be durable before it is acknowledged (a job before its ``202``) uses
:meth:`SqliteDatabase.durable_write`, which commits at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from polyport.core.errors import ConfigError

#: Writes after which an open group transaction commits even if the loop never yields.
GROUP_MAX = 512


class SqliteDatabase:
    """A lazily opened SQLite connection tuned for one writer process."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._conn: sqlite3.Connection | None = None
        self._users = 0
        self._in_group = False
        self._group_writes = 0

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("database is not open")
        return self._conn

    def open(self) -> sqlite3.Connection:
        """Open (or share) the connection; every ``open`` needs a ``close``."""
        if self._conn is None:
            if self.path != ":memory:":
                parent = Path(self.path).parent
                try:
                    parent.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise ConfigError(f"cannot create {parent} for the database: {exc}") from exc
            try:
                conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute("PRAGMA busy_timeout=5000")
            except sqlite3.Error as exc:
                raise ConfigError(f"cannot open database {self.path}: {exc}") from exc
            self._conn = conn
        self._users += 1
        return self._conn

    def _open_group(self) -> bool:
        """Begin a group transaction committed when the loop yields; False without a loop."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return False  # a synchronous tool: every write commits on its own
        self.conn.execute("BEGIN")
        self._in_group = True
        self._group_writes = 0
        loop.call_soon(self.commit)
        return True

    def group_write(self, sql: str, args: tuple[object, ...] = ()) -> sqlite3.Cursor:
        """Execute a write in the current group transaction (opening one if needed)."""
        if not self._in_group and not self._open_group():
            return self.conn.execute(sql, args)
        cursor = self.conn.execute(sql, args)
        self._group_writes += 1
        if self._group_writes >= GROUP_MAX:
            self.commit()
        return cursor

    def group_write_many(self, sql: str, rows: list[Any]) -> None:
        """Execute a write for many rows in the current group transaction."""
        if not self._in_group and not self._open_group():
            self.conn.executemany(sql, rows)
            return
        self.conn.executemany(sql, rows)
        self._group_writes += len(rows)
        if self._group_writes >= GROUP_MAX:
            self.commit()

    def durable_write(self, sql: str, args: tuple[object, ...] = ()) -> sqlite3.Cursor:
        """Execute a write and commit it (with anything the group had pending) now."""
        cursor = self.conn.execute(sql, args)
        self.commit()
        return cursor

    def commit(self) -> None:
        """Commit the open group transaction, if any."""
        if self._in_group and self._conn is not None:
            self._in_group = False
            self._conn.execute("COMMIT")

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Several writes that must land together (inside the group, or on their own)."""
        conn = self.conn
        if self._in_group:
            yield conn
            return
        conn.execute("BEGIN")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def close(self) -> None:
        self._users -= 1
        if self._users <= 0 and self._conn is not None:
            self.commit()
            self._conn.close()
            self._conn = None
            self._users = 0

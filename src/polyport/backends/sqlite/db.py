"""One SQLite connection per database file, shared by the stores that live in it.

Statements are small and run on the event loop's thread: a WAL-mode write
with ``synchronous=NORMAL`` takes tens of microseconds, far less than handing
it to a worker thread and back would cost.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from polyport.core.errors import ConfigError


class SqliteDatabase:
    """A lazily opened SQLite connection tuned for one writer process."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._conn: sqlite3.Connection | None = None
        self._users = 0

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

    def close(self) -> None:
        self._users -= 1
        if self._users <= 0 and self._conn is not None:
            self._conn.close()
            self._conn = None
            self._users = 0

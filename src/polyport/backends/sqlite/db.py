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

**Acknowledged means committed.** A writer that must not answer before its
rows are durable (the event log, before a ``201`` and before fan-out)
registers with :meth:`SqliteDatabase.on_commit`: it is told when the group
holding its rows commits — or that it failed, in which case the group was
rolled back and :meth:`SqliteDatabase.on_rollback` hooks let each store forget
what it had assumed written. In WAL mode with ``synchronous=NORMAL`` a commit
survives the process being killed (SIGKILL); surviving power loss as well
needs ``synchronous=FULL`` (the ``database_sync = "full"`` setting; see
``docs/security.md``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from polyport.core.errors import ConfigError

log = logging.getLogger("polyport.sqlite")

#: Writes after which an open group transaction commits even if the loop never yields.
GROUP_MAX = 512

#: Told the outcome of the group that holds a writer's rows: None, or why it failed.
CommitCallback = Callable[[BaseException | None], None]


class SqliteDatabase:
    """A lazily opened SQLite connection tuned for one writer process."""

    def __init__(self, path: str | Path, *, synchronous: str = "normal") -> None:
        if synchronous not in ("normal", "full"):
            raise ConfigError(f"synchronous must be 'normal' or 'full', not {synchronous!r}")
        self.path = str(path)
        self.synchronous = synchronous
        self._conn: sqlite3.Connection | None = None
        self._users = 0
        self._in_group = False
        self._group_writes = 0
        self._on_commit: list[CommitCallback] = []
        self._on_rollback: list[Callable[[], None]] = []

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
                conn.execute(f"PRAGMA synchronous={self.synchronous.upper()}")
                conn.execute("PRAGMA busy_timeout=5000")
            except sqlite3.Error as exc:
                raise ConfigError(f"cannot open database {self.path}: {exc}") from exc
            self._conn = conn
        self._users += 1
        return self._conn

    def create(self, script: str) -> None:
        """Run a schema script (``CREATE … IF NOT EXISTS``) on the open connection.

        A group transaction still open is committed first, its writers told:
        ``executescript`` would commit it behind the group's back, and the
        group's own commit would then fail (a store opened while others write:
        the webhook edge starting while jobs run).
        """
        self.commit()
        self.conn.executescript(script)

    def _open_group(self) -> bool:
        """Begin a group transaction committed when the loop yields; False without a loop."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return False  # a synchronous tool: every write commits on its own
        self.conn.execute("BEGIN")
        self._in_group = True
        self._group_writes = 0
        loop.call_soon(self._commit_soon)
        return True

    def _commit_soon(self) -> None:
        try:
            self.commit()
        except sqlite3.Error:
            log.exception("a group commit failed; its writers were told and it was rolled back")

    def on_commit(self, callback: CommitCallback) -> None:
        """Call ``callback`` once what has been written so far is committed (or failed).

        With no group open, everything written is already committed: the
        callback runs now.
        """
        if self._in_group:
            self._on_commit.append(callback)
        else:
            callback(None)

    async def committed(self) -> None:
        """Return once what has been written so far is committed.

        Raises the :class:`sqlite3.Error` of the group's commit if it failed
        (its rows were rolled back). Writers that must be durable before they
        answer, and may come many to a loop iteration (a fan-out's enqueues),
        share one commit this way instead of paying one each.
        """
        if not self._in_group:
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def told(error: BaseException | None) -> None:
            if done.done():
                return  # the waiter was cancelled
            if error is None:
                done.set_result(None)
            else:
                done.set_exception(error)

        self._on_commit.append(told)
        await done

    def on_rollback(self, hook: Callable[[], None]) -> None:
        """Call ``hook`` after a failed group commit was rolled back."""
        self._on_rollback.append(hook)

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
        """Commit the open group transaction, if any, and tell its writers.

        Raises the :class:`sqlite3.Error` of a failed commit, after rolling the
        group back, failing its writers and running the rollback hooks.
        """
        if not self._in_group or self._conn is None:
            return
        try:
            self._conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self.rollback(exc)
            raise
        self._in_group = False
        waiting, self._on_commit = self._on_commit, []
        for callback in waiting:
            callback(None)

    @property
    def in_group(self) -> bool:
        """A group transaction is open."""
        return self._in_group

    def rollback(self, error: BaseException) -> None:
        """Undo the open group after ``error``: its writers are failed, the hooks run."""
        self._in_group = False
        waiting, self._on_commit = self._on_commit, []
        if self._conn is not None and self._conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("ROLLBACK")
        for callback in waiting:
            callback(error)
        for hook in self._on_rollback:
            hook()

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

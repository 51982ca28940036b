"""Records in PostgreSQL: the :class:`~polyport.core.records.RecordStore` port, shared by every
node of a cluster.

One row per key in ``{schema}.records``; see :data:`.schema.RECORDS_DDL`. Every
call is one statement in autocommit, committed (and, with
``synchronous_commit=on``, flushed) before it returns, so a write is durable
and seen by every node when its call returns.

**Versions** are drawn from the sequence ``{schema}.record_versions``, which
never hands out a number twice: a key deleted and written again gets a new
one, and a version read before the delete never matches its successor. Each
write draws its version once it holds the key: an ``UPDATE`` (a
compare-and-set) or the ``DO UPDATE`` of an upsert draws it after locking the
row (PostgreSQL evaluates the new row again if another write changed it
meanwhile), so writes of one row draw in the order they commit. An insert,
though, draws before PostgreSQL checks the key is free: between the two,
another node's update of the key could draw a larger version, commit, and
the key be deleted, leaving the insert below a version the key had. Inserts
and deletes of a key therefore take turns on an advisory lock of the key
(transaction-scoped: held for the statement only), taken before the version
is drawn; a delete takes it before it commits.

**Compare and set** is a conditional statement: ``UPDATE … WHERE version =``
the expected one, ``INSERT … ON CONFLICT DO NOTHING`` for :data:`ABSENT`. Of
two writers racing on one version, the second waits for the first's row lock
and then finds the row at another version.

**Scans** read the primary key's index over a range, from the prefix to the
prefix followed by U+10FFFF (which no key holds: it is not printable), after
the cursor. ``COLLATE "C"`` orders the UTF-8 bytes, which is code point order.
No pattern is involved, so ``%`` and ``_`` in a prefix are plain characters.

**Errors** are those of :mod:`.db`: a database away, a connection lost or a
statement timed out is :class:`~polyport.core.errors.Unavailable`. Reads are
tried once more on another connection; writes are not (one whose commit was
lost in transit may have happened). Tables that are gone (the schema dropped)
are created again and the statement run once more; the sequence starts again
with them, as the records it numbered are gone too.
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg

from polyport.backends.postgresql.db import PostgresDatabase
from polyport.backends.postgresql.schema import RECORDS_DDL
from polyport.core.errors import InvalidArgument, Unavailable
from polyport.core.records import ABSENT, Record, check_key

log = logging.getLogger("polyport.postgresql")

#: What a statement meets when the store's schema or table is gone.
_GONE = (
    psycopg.errors.UndefinedTable,
    psycopg.errors.InvalidSchemaName,
    psycopg.errors.UndefinedObject,
)

#: Sorts after every character a key may hold (U+10FFFF is not printable).
_LAST = "\U0010ffff"

_NEXT = "nextval('{schema}.record_versions')"

# The key's turn (see the module docstring): a sub-select of a volatile function
# is neither pulled up nor left out, so it runs before the outer row is made.
_TURN = "(SELECT pg_advisory_xact_lock(hashtextextended('{schema}.records/' || %(key)s::text, 0)))"

_INSERT = f"""
INSERT INTO {{schema}}.records AS r (key, value, version)
SELECT %(key)s::text, %(value)s::bytea, {_NEXT} FROM {_TURN} AS turn
ON CONFLICT (key) DO {{conflict}}
RETURNING r.version
"""

_UPSERT = _INSERT.replace("{conflict}", f"UPDATE SET value = excluded.value, version = {_NEXT}")
_CREATE = _INSERT.replace("{conflict}", "NOTHING")

_SWAP = f"""
UPDATE {{schema}}.records AS r SET value = %(value)s::bytea, version = {_NEXT}
WHERE r.key = %(key)s::text AND r.version = %(expect)s::bigint
RETURNING r.version
"""

_DELETE = f"""
DELETE FROM {{schema}}.records AS r USING {_TURN} AS turn
WHERE r.key = %(key)s::text AND (%(expect)s::bigint IS NULL OR r.version = %(expect)s::bigint)
"""

_GET = "SELECT r.key, r.value, r.version FROM {schema}.records AS r WHERE r.key = %(key)s::text"

_SCAN = """
SELECT r.key, r.value, r.version FROM {schema}.records AS r
WHERE r.key >= %(prefix)s::text AND r.key < %(end)s::text AND r.key > %(after)s::text
ORDER BY r.key LIMIT %(limit)s::bigint
"""


def _storable(key: str) -> bool:
    """Whether ``key`` could be stored (a text value cannot hold NUL, so asking for one fails)."""
    try:
        check_key(key)
    except InvalidArgument:
        return False
    return True


class PostgresRecordStore:
    """The :class:`~polyport.core.records.RecordStore` in a PostgreSQL schema, shared by nodes.

    ``db`` is the node's :class:`PostgresDatabase`, shared with its other
    stores (one pool per node). Each ``open`` opens the database once more and
    each ``close`` closes it once.
    """

    def __init__(self, db: PostgresDatabase) -> None:
        self.db = db

        def sql(text: str) -> str:
            return text.replace("{schema}", db.schema)

        self._upsert_sql = sql(_UPSERT)
        self._create_sql = sql(_CREATE)
        self._swap_sql = sql(_SWAP)
        self._delete_sql = sql(_DELETE)
        self._get_sql = sql(_GET)
        self._scan_sql = sql(_SCAN)

    async def open(self) -> None:
        """Open the database and create the store's table if it is missing."""
        await self.db.open_with(RECORDS_DDL)

    async def close(self) -> None:
        await self.db.close()

    # -- statements -------------------------------------------------------------

    async def _once(self, what: str, sql: str, params: Any) -> tuple[int, list[tuple[Any, ...]]]:
        async with self.db.connection(what) as conn:
            cursor = await conn.execute(sql, params, binary=True)
            rows = await cursor.fetchall() if cursor.description is not None else []
            return cursor.rowcount, rows

    async def _run(
        self, what: str, sql: str, params: Any, *, read: bool = False
    ) -> tuple[int, list[tuple[Any, ...]]]:
        """Run one statement: the rows it changed and the rows it returned. Run again once
        its table was created anew or, for a read, after a lost connection."""
        try:
            return await self._once(what, sql, params)
        except _GONE as exc:
            log.warning(
                "the record store in schema %s is gone (%s): creating it anew", self.db.schema, exc
            )
            await self.db.migrate(RECORDS_DDL)
        except Unavailable:
            if not read:
                raise
        return await self._once(what, sql, params)

    # -- the port ---------------------------------------------------------------

    async def get(self, key: str) -> Record | None:
        if not _storable(key):
            return None
        _, rows = await self._run("reading a record", self._get_sql, {"key": key}, read=True)
        return _record(rows[0]) if rows else None

    async def put(self, key: str, value: bytes, *, expect: int | None = None) -> int | None:
        check_key(key)
        params = {"key": key, "value": bytes(value), "expect": expect}
        if expect is None:
            sql = self._upsert_sql
        elif expect == ABSENT:
            sql = self._create_sql
        else:
            sql = self._swap_sql
        _, rows = await self._run("writing a record", sql, params)
        version: int | None = rows[0][0] if rows else None
        return version

    async def delete(self, key: str, *, expect: int | None = None) -> bool:
        if not _storable(key):
            return False
        params = {"key": key, "expect": expect}
        changed, _ = await self._run("deleting a record", self._delete_sql, params)
        return changed == 1

    async def scan(
        self, prefix: str, *, after: str | None = None, limit: int = 500
    ) -> list[Record]:
        if limit <= 0 or "\x00" in prefix:  # no key holds NUL
            return []
        # Keys after "a\x00…" are the keys after "a": no key holds NUL.
        after = "" if after is None else after.partition("\x00")[0]
        params = {"prefix": prefix, "end": prefix + _LAST, "after": after, "limit": limit}
        _, rows = await self._run("scanning records", self._scan_sql, params, read=True)
        return [_record(row) for row in rows]


def _record(row: tuple[Any, ...]) -> Record:
    key, value, version = row
    return Record(key, bytes(value), version)


__all__ = ["PostgresRecordStore"]

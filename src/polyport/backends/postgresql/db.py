"""One connection pool per PostgreSQL database and schema, shared by the stores in it.

Connections run in autocommit: every store writes with single statements (or
functions called by one statement), so a statement is its own transaction and
no lock is ever held across a network round trip.

Errors are the engine's, translated once here: a database that cannot be
reached, a connection lost or a pool exhausted is :class:`Unavailable` (a 503
with ``Retry-After`` on the edges), with the cause logged and never shown to a
client. The pool reconnects on its own; a node needs no restart when the
database comes back.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from polyport.core.errors import ConfigError, Unavailable

if TYPE_CHECKING:
    Connection = psycopg.AsyncConnection[Any]
    Pool = AsyncConnectionPool[Connection]

log = logging.getLogger("polyport.postgresql")

#: A schema name polyport writes itself into SQL: lowercase, so no quoting can go wrong.
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")

#: Seconds a caller told "unavailable" should wait before trying again.
RETRY_AFTER = 1.0


def unavailable(what: str, exc: BaseException) -> Unavailable:
    """The client's error for a failed database call; the cause goes to the log only."""
    log.warning("PostgreSQL %s failed: %s", what, exc)
    return Unavailable(f"the database is unavailable ({what}); try again", retry_after=RETRY_AFTER)


class PostgresDatabase:
    """A lazily opened pool of autocommit connections to one database, for one schema.

    ``url`` is a libpq connection string or URL (``postgresql://user@host/db``).
    Every ``open`` needs a ``close``: stores sharing one database share the pool.
    """

    def __init__(
        self,
        url: str,
        *,
        schema: str = "polyport",
        min_size: int = 1,
        max_size: int = 8,
        timeout: float = 5.0,
        statement_timeout: float = 30.0,
    ) -> None:
        if not _SCHEMA_NAME.fullmatch(schema):
            raise ConfigError(
                f"invalid PostgreSQL schema name {schema[:80]!r}: use lowercase letters, "
                "digits and _ (at most 63, not starting with a digit)"
            )
        self.url = url
        self.schema = schema
        self.timeout = timeout
        self._min_size = min_size
        self._max_size = max_size
        # A statement stuck behind a lock fails (Unavailable) instead of hanging a caller
        # forever. JIT is off: the stores' statements are short, and a plan with a costly
        # branch that never runs (the event log's reads have one) took 40-80 ms to compile.
        # Prepared statements (psycopg prepares a query from its fifth run on a connection)
        # keep their generic plan: left to choose, PostgreSQL planned the event log's read
        # anew on every run (0.9 ms of planning for 0.3 ms of work at a channel's head).
        # synchronous_commit=on whatever the database or role says: a commit returns
        # once its WAL is flushed, which is what "acknowledged means durable" needs (a
        # database set to off would acknowledge events a crash can still take back).
        self._options = (
            f"-c statement_timeout={int(statement_timeout * 1000)} -c jit=off "
            "-c plan_cache_mode=force_generic_plan -c synchronous_commit=on"
        )
        self._pool: Pool | None = None
        self._users = 0

    @property
    def pool(self) -> Pool:
        if self._pool is None:
            raise RuntimeError("database is not open")
        return self._pool

    async def open(self) -> None:
        """Open (or share) the pool; fail with :class:`Unavailable` if the database is away."""
        if self._pool is None:
            pool: Pool = AsyncConnectionPool(
                self.url,
                kwargs={
                    "autocommit": True,
                    "options": self._options,
                    # Names the node's connections in pg_stat_activity.
                    "application_name": f"polyport:{self.schema}",
                },
                min_size=self._min_size,
                max_size=self._max_size,
                timeout=self.timeout,
                open=False,
                name=f"polyport-{self.schema}",
            )
            try:
                await pool.open(wait=True, timeout=self.timeout)
            except psycopg.Error as exc:
                await pool.close()
                raise unavailable("connecting", exc) from exc
            self._pool = pool
        self._users += 1

    async def close(self) -> None:
        self._users -= 1
        if self._users <= 0 and self._pool is not None:
            pool, self._pool = self._pool, None
            self._users = 0
            await pool.close()

    @contextlib.asynccontextmanager
    async def connection(self, what: str) -> AsyncIterator[Connection]:
        """A pooled connection; a database failure inside is :class:`Unavailable`.

        ``what`` names the operation in the log line and the client's message.
        """
        try:
            async with self.pool.connection() as conn:
                yield conn
        except psycopg.OperationalError as exc:  # unreachable, connection lost, pool timeout
            raise unavailable(what, exc) from exc

    async def open_with(self, ddl: str) -> None:
        """Open the pool (see :meth:`open`) and create what ``ddl`` makes if it is missing;
        a failed creation closes what it opened."""
        await self.open()
        try:
            await self.migrate(ddl)
        except BaseException:
            await self.close()
            raise

    async def migrate(self, ddl: str) -> None:
        """Run ``ddl`` (statements without parameters) in one transaction.

        Nodes starting together would race on ``CREATE … IF NOT EXISTS`` (the
        catalogs' unique indexes make one of them fail): a transaction-scoped
        advisory lock on the schema's name makes them take turns.
        """
        async with self.connection("creating the schema") as conn, conn.transaction():
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                [f"polyport:{self.schema}"],
            )
            await conn.execute("SET LOCAL client_min_messages = warning")  # no "already exists"
            await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {self.schema}")
            await conn.execute(ddl.replace("{schema}", self.schema))

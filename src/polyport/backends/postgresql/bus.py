"""The bus on PostgreSQL ``LISTEN``/``NOTIFY``: nodes of one log wake each other.

The channel is named from the log's schema (``{schema}.bus``; a schema name
too long for that is shortened and given a hash, as a channel name has at most
63 bytes), so logs in different schemas never hear each other, and
notifications never cross databases.

**What announces appends is the log, not this bus.** Nodes of one cluster
share the log and the bus in one database, so each append notifies on this
channel itself, in its own transaction (see
:mod:`~polyport.backends.postgresql.eventlog`): one commit stores and
announces, and nothing is announced that is not committed. The hub announces
nothing on this bus then
(:attr:`~polyport.core.eventlog.EventLog.announces_appends`); the bus listens
for the other nodes' commits. :meth:`PostgresBus.announce` still sends, for a
caller that announces anything else.

**Connections of its own, outside the pool.** A listening session must stay
idle outside any transaction to receive (PostgreSQL delivers a notification
between transactions), and the pool lends its connections for one statement
at a time — so the bus listens on a dedicated connection. What
:meth:`PostgresBus.announce` sends goes on a second one, made at the first
send (so never on a node), in autocommit, with ``synchronous_commit=off``: a
transaction that only notifies needs no WAL flush before it is delivered (the
events it announces were flushed by their own commit), and a lost
notification only waits for the tail's next read. A send is one statement,
``pg_notify`` over an array of messages, so several messages leave in one
transaction, in order.

**Payloads** are shorter than 8000 bytes (``NOTIFY``'s limit with the default
8 kB block size), the log's as this bus's; more pairs go as more messages.
They are ASCII text, valid in any server encoding. PostgreSQL drops a
notification that repeats one of the same transaction; a message never
repeats another of its send.

**Liveness.** A listener that has heard nothing for ``heartbeat`` seconds
runs ``SELECT 1``, and one that gets no answer in as long again takes the
connection for dead (a host gone, a network cut, which no reset announces). A
terminated backend (``pg_terminate_backend``, a restart) is noticed at once.
Notifications sent while the listener was away are lost; the node's tail
reads the log at an interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from typing import Any

import psycopg
from psycopg import sql

from polyport.backends.enginebus import TIMEOUT, EngineBus
from polyport.backends.postgresql.db import PostgresDatabase, unavailable

#: Bytes in a channel name at most (NAMEDATALEN - 1).
_NAME_MAX = 63
#: NOTIFY's payload must be shorter than this many bytes.
_PAYLOAD_LIMIT = 8000

_NOTIFY = "SELECT pg_notify(%s, message) FROM unnest(%s::text[]) AS message"


def channel_name(schema: str) -> str:
    """The notification channel of the log in ``schema``: ``{schema}.bus``, at most 63 bytes."""
    name = f"{schema}.bus"
    if len(name) <= _NAME_MAX:
        return name
    digest = hashlib.blake2b(schema.encode(), digest_size=8).hexdigest()
    return f"{schema[: _NAME_MAX - len(digest) - 5]}.bus.{digest}"


class PostgresBus(EngineBus):
    """A :class:`~polyport.core.bus.Bus` on ``LISTEN``/``NOTIFY``, for the log in ``db``'s schema.

    ``db`` is the :class:`PostgresDatabase` of the log (only its URL, schema and
    timeout are used: the bus has connections of its own) or a connection URL.
    """

    engine = "PostgreSQL"
    frame_limit = _PAYLOAD_LIMIT - 1

    def __init__(self, db: PostgresDatabase | str) -> None:
        self.db = db if isinstance(db, PostgresDatabase) else PostgresDatabase(db)
        self.channel = channel_name(self.db.schema)
        super().__init__(f"channel {self.channel}")
        self._listen_sql = sql.SQL("LISTEN {}").format(sql.Identifier(self.channel))
        self._listener: psycopg.AsyncConnection[Any] | None = None
        self._notifier: psycopg.AsyncConnection[Any] | None = None

    async def _dial(self, role: str, options: str) -> psycopg.AsyncConnection[Any]:
        return await psycopg.AsyncConnection.connect(
            self.db.url,
            autocommit=True,
            connect_timeout=max(2, int(self.db.timeout)),
            # Names the bus's connections in pg_stat_activity.
            application_name=f"polyport:{self.db.schema} bus {role}",
            options=options,
        )

    async def _connect(self) -> None:
        # The notifier connects at the first send: a node's appends announce themselves,
        # so on a node it never does.
        try:
            await self._subscribe()
        except psycopg.OperationalError as exc:
            raise unavailable("connecting the bus", exc) from exc

    async def _notifier_connection(self) -> psycopg.AsyncConnection[Any]:
        timeout = int(TIMEOUT * 1000)
        return await self._dial(
            "notify", f"-c synchronous_commit=off -c statement_timeout={timeout}"
        )

    async def _subscribe(self) -> None:
        conn = self._listener = await self._dial("listen", "")
        await conn.execute(self._listen_sql)

    async def _receive(self) -> None:
        conn = self._listener
        assert conn is not None
        while True:
            heard = False
            try:
                async for notify in conn.notifies(timeout=self.heartbeat):
                    heard = True
                    self._heard(notify.payload)
            except UnicodeDecodeError:  # not text in the connection's encoding: not ours
                self._heard(b"")
                continue
            if not heard:
                await self._probe(conn)

    async def _probe(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """``SELECT 1`` answered within a heartbeat, or the connection is closed as dead."""
        probe = asyncio.ensure_future(conn.execute("SELECT 1"))
        probe.add_done_callback(_outcome_read)
        done, _ = await asyncio.wait({probe}, timeout=self.heartbeat)
        if probe in done:
            probe.result()
            return
        # Closed at once, not cancelled: psycopg would first ask the server to cancel
        # the query and wait for it to end, up to 10 s more of a server that is silent.
        await conn.close()
        raise TimeoutError(f"PostgreSQL did not answer a probe in {self.heartbeat:g} s")

    async def _resubscribe(self) -> None:
        await _close(self._listener)
        self._listener = None
        await self._subscribe()

    async def _send(self, messages: list[bytes]) -> None:
        conn = self._notifier
        if conn is None or conn.closed:
            conn = self._notifier = await self._notifier_connection()
        try:
            await conn.execute(_NOTIFY, (self.channel, [m.decode("ascii") for m in messages]))
        except BaseException:
            # Whatever state it is in now (a statement cancelled mid-way, a dead
            # server), the next send begins with a new connection.
            self._notifier = None
            await _close(conn)
            raise

    async def _disconnect(self) -> None:
        listener, notifier = self._listener, self._notifier
        self._listener = self._notifier = None
        await _close(listener)
        await _close(notifier)


def _outcome_read(task: asyncio.Future[Any]) -> None:
    """A probe given up on ends in an error on its closed connection: nobody needs it."""
    if not task.cancelled():
        task.exception()


async def _close(conn: psycopg.AsyncConnection[Any] | None) -> None:
    if conn is not None:
        with contextlib.suppress(Exception):
            await conn.close()


__all__ = ["PostgresBus", "channel_name"]

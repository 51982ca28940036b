"""The engines of ``polyport bench cluster``: their URLs, a namespace per run, and cleaning up.

Every run — polyport's nodes, or a bare client's — gets a namespace of its
own on the engine (a PostgreSQL schema, a Redis key prefix, a JetStream
stream name), made fresh and removed afterwards, so runs never see each
other's events and nothing is left behind on a server others share.

* polyport's namespace is the engine URL's own option (``?schema=``,
  ``?prefix=``, ``?name=``): the nodes make what they need in it;
* a bare client's is made here (:func:`create_bare`): a schema with one
  table, nothing (Redis makes a stream on its first ``XADD``), or a stream of
  ``{name}.>`` stored on file as polyport's.

Both are removed by :func:`drop`: ``DROP SCHEMA … CASCADE``, every key of the
``{name}`` hash tag, or the stream ``name`` and every ``KV_{name}-…`` (the
namespace's KV buckets).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import uuid
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

#: The engines, in the order the bench measures them.
ENGINES = ("postgresql", "redis", "nats")
#: Where each engine is unless told otherwise: the loopback services of a development machine.
DEFAULT_URLS = {
    "postgresql": "postgresql://postgres@127.0.0.1:5432/test",
    "redis": "redis://127.0.0.1:6379/0",
    "nats": "nats://127.0.0.1:4222",
}
#: The URL option that names polyport's namespace on each engine.
NAMESPACE_OPTION = {"postgresql": "schema", "redis": "prefix", "nats": "name"}
_DEFAULT_PORTS = {"postgresql": 5432, "redis": 6379, "nats": 4222}


def new_namespace(kind: str) -> str:
    """A fresh name, valid as a schema, a key prefix and a stream name: ``ppbench_…``."""
    return f"pp{kind}_{uuid.uuid4().hex[:10]}"


def namespaced(engine: str, url: str, name: str) -> str:
    """``url`` with polyport's namespace option set to ``name``."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != NAMESPACE_OPTION[engine]]
    query.append((NAMESPACE_OPTION[engine], name))
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), ""))


def unreachable(engine: str, url: str) -> str | None:
    """Why the engine at ``url`` cannot be reached (a TCP connect, 1 s), or None."""
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or _DEFAULT_PORTS[engine]
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return None
    except OSError as exc:
        return f"{engine} is not reachable on {host}:{port}: {exc.strerror or exc}"


def bare_url(engine: str, url: str) -> str:
    """The URL the engine's own client connects with: polyport's options removed."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != NAMESPACE_OPTION[engine]]
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), ""))


def pg_table(name: str) -> str:
    """The bare PostgreSQL client's table."""
    return f"{name}.ticks"


def redis_key(name: str, lane: str) -> str:
    """The bare Redis client's stream of one lane (under the ``{name}`` hash tag)."""
    return "{" + name + "}:" + lane


def nats_subject(name: str, lane: str) -> str:
    """The bare NATS client's subject of one lane."""
    return f"{name}.{lane}"


async def create_bare(engine: str, url: str, name: str) -> None:
    """Make what the bare client of ``engine`` writes to, in the namespace ``name``."""
    if engine == "postgresql":
        import psycopg

        async with await psycopg.AsyncConnection.connect(bare_url(engine, url)) as conn:
            await conn.set_autocommit(True)
            await conn.execute(f"CREATE SCHEMA {name}")
            await conn.execute(
                f"CREATE TABLE {pg_table(name)} (id bigserial PRIMARY KEY, data text NOT NULL)"
            )
    elif engine == "nats":
        import nats
        from nats.js.api import StorageType, StreamConfig

        connection = await nats.connect(bare_url(engine, url))
        try:
            config = StreamConfig(
                name=name, subjects=[f"{name}.>"], storage=StorageType.FILE, num_replicas=1
            )
            await connection.jetstream().add_stream(config)
        finally:
            await connection.close()


async def drop(engine: str, url: str, name: str) -> None:
    """Remove everything in the namespace ``name``, polyport's or a bare client's."""
    if engine == "postgresql":
        import psycopg

        async with await psycopg.AsyncConnection.connect(bare_url(engine, url)) as conn:
            await conn.set_autocommit(True)
            await conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
    elif engine == "redis":
        from redis.asyncio import Redis

        client = Redis.from_url(bare_url(engine, url))
        try:
            keys = [k async for k in client.scan_iter(match="{" + name + "}*", count=1000)]
            for start in range(0, len(keys), 1000):
                await client.delete(*keys[start : start + 1000])
        finally:
            await client.aclose()
    else:
        import nats
        from nats.js.errors import NotFoundError

        connection = await nats.connect(bare_url(engine, url))
        try:
            js = connection.jetstream()
            # The log's stream and every KV bucket of the namespace (meta, wq, rec, …).
            for info in await js.streams_info():
                stream = info.config.name
                if stream is not None and (stream == name or stream.startswith(f"KV_{name}-")):
                    with contextlib.suppress(NotFoundError):
                        await js.delete_stream(stream)
        finally:
            await connection.close()


def server_version(engine: str, url: str) -> str | None:
    """The engine server's version, for the record; None when it cannot be asked."""
    try:
        return asyncio.run(_server_version(engine, bare_url(engine, url)))
    except Exception:
        return None


async def _server_version(engine: str, url: str) -> str:
    if engine == "postgresql":
        import psycopg

        async with await psycopg.AsyncConnection.connect(url, connect_timeout=5) as conn:
            row = await (await conn.execute("SHOW server_version")).fetchone()
            return f"PostgreSQL {row[0] if row else '?'}"
    if engine == "redis":
        from redis.asyncio import Redis

        client = Redis.from_url(url, socket_timeout=5)
        try:
            info = await client.info("server")
            return f"Redis {info.get('redis_version', '?')}"
        finally:
            await client.aclose()
    import nats

    connection = await nats.connect(url, connect_timeout=5, max_reconnect_attempts=0)
    try:
        return f"NATS {connection.connected_server_version}"
    finally:
        await connection.close()

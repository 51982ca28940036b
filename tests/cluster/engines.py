"""Shared engines for the cluster tests: PostgreSQL, Redis and NATS, a namespace per use.

:func:`shared_engine` gives an engine URL with a fresh namespace (a schema, a
key prefix, a stream name) and removes the namespace afterwards. The
``engine`` fixture (``conftest.py``) runs a test once per engine with it; a
module that keeps one cluster for several tests calls it from a fixture of
its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable, Iterator

from tests.conftest import require_service

ENGINES = ["postgresql", "redis", "nats"]


async def _drop_schema(name: str) -> None:
    import psycopg

    url = "postgresql://postgres@127.0.0.1:5432/test"
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")


async def _drop_keys(prefix: str) -> None:
    from redis.asyncio import Redis

    client = Redis.from_url("redis://127.0.0.1:6379/0")
    try:
        keys = [k async for k in client.scan_iter(match="{" + prefix + "}*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


async def _drop_streams(name: str) -> None:
    import nats
    from nats.js.errors import NotFoundError

    nc = await nats.connect("nats://127.0.0.1:4222")
    try:
        for stream in (name, f"KV_{name}-meta", f"KV_{name}-wq", f"KV_{name}-rec"):
            with contextlib.suppress(NotFoundError):
                await nc.jetstream().delete_stream(stream)
    finally:
        await nc.close()


@contextlib.contextmanager
def shared_engine(kind: str) -> Iterator[str]:
    """The URL of engine ``kind`` with a namespace of its own, removed afterwards.

    Skips (fails under ``POLYPORT_REQUIRE_SERVICES=1``) when the engine is not reachable.
    """
    name = f"pp_cluster_{uuid.uuid4().hex[:10]}"
    drop: Callable[[str], Awaitable[None]]
    if kind == "postgresql":
        require_service("PostgreSQL", 5432)
        url, drop = f"postgresql://postgres@127.0.0.1:5432/test?schema={name}", _drop_schema
    elif kind == "redis":
        require_service("Redis", 6379)
        url, drop = f"redis://127.0.0.1:6379/0?prefix={name}", _drop_keys
    else:
        require_service("NATS", 4222)
        url, drop = f"nats://127.0.0.1:4222?name={name}", _drop_streams
    try:
        yield url
    finally:
        # A loop of its own, never made current: asyncio.run() would unset the
        # thread's event loop, which pytest-asyncio may still be using.
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(drop(name))
        finally:
            loop.close()


__all__ = ["ENGINES", "shared_engine"]

"""Shared engines for the cluster tests: a namespace of each test's own on PostgreSQL, Redis, NATS.

:func:`shared_engine` gives an engine URL with a fresh namespace (a schema, a
key prefix, a stream name) and removes the namespace afterwards; the
``engine`` fixture runs each test once per engine with one of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable, Iterator

import pytest
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
        for stream in (name, f"KV_{name}-meta"):
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
        asyncio.run(drop(name))


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> Iterator[str]:
    """A shared engine URL with a namespace of this test's own."""
    with shared_engine(request.param) as url:
        yield url

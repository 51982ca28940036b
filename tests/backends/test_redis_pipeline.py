"""Script calls gathered into pipelines (the Redis backends' ScriptPipeline), on the real Redis.

Each test's scripts touch only a key of its own, deleted afterwards; no script
cache is flushed (other tests share this Redis), so each test makes scripts
Redis has never seen by giving them a fresh comment.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from tests.conftest import require_service
from tests.contract.private_servers import closed_port

from polyport.backends.redis.client import Script
from polyport.backends.redis.pipeline import ScriptPipeline
from polyport.core.errors import Unavailable

pytestmark = [pytest.mark.services, pytest.mark.timeout(30)]

URL = "redis://127.0.0.1:6379/0"


def fresh(source: str) -> Script:
    """``source`` as a script Redis has not loaded yet."""
    return Script(f"-- {uuid.uuid4().hex}\n{source}")


@pytest.fixture
async def key() -> AsyncIterator[str]:
    require_service("Redis", 6379)
    from redis.asyncio import Redis

    name = f"{{polyport-test-{uuid.uuid4().hex}}}:n"
    yield name
    client = Redis.from_url(URL)
    try:
        await client.delete(name)
    finally:
        await client.aclose()


@pytest.fixture
async def calls() -> AsyncIterator[ScriptPipeline]:
    from polyport.backends.redis.client import connect

    client = connect(URL)
    pipeline = ScriptPipeline(client, "the test")
    yield pipeline
    await pipeline.wait_idle()
    await client.aclose()


async def test_calls_made_during_a_round_trip_share_the_next_one(
    calls: ScriptPipeline, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One call goes at once, the 49 made meanwhile in one pipeline; each gets its own
    reply, in the order made."""
    incr = fresh("return redis.call('INCRBY', KEYS[1], ARGV[1])")
    pipelines: list[int] = []
    send = ScriptPipeline._pipeline

    async def counted(self: ScriptPipeline, batch: list[Any]) -> list[Any]:
        pipelines.append(len(batch))
        return await send(self, batch)

    monkeypatch.setattr(ScriptPipeline, "_pipeline", counted)
    replies = await asyncio.gather(*(calls(incr, 1, key, 1) for _ in range(50)))
    assert replies == list(range(1, 51))
    assert pipelines == [49]


async def test_scripts_redis_has_not_seen_are_loaded_within_a_pipeline(
    calls: ScriptPipeline, key: str
) -> None:
    """Gathered calls of scripts Redis does not know yet are refused by SHA1, loaded, and
    sent again (after the calls that ran): each runs once."""
    incr = [fresh(f"return redis.call('INCRBY', KEYS[1], {n})") for n in (1, 10, 100)]
    replies = await asyncio.gather(*(calls(script, 1, key) for script in incr * 2))
    assert replies[0] == 1 and len(set(replies)) == 6
    assert max(replies) == 222


async def test_one_calls_error_is_its_own(calls: ScriptPipeline, key: str) -> None:
    """A script that fails in a pipeline fails its caller only; the calls around it run."""
    from redis.exceptions import ResponseError

    incr = fresh("return redis.call('INCR', KEYS[1])")
    broken = fresh("return redis.call('NO-SUCH-COMMAND')")
    replies = await asyncio.gather(
        calls(incr, 1, key), calls(incr, 1, key), calls(broken, 0), calls(incr, 1, key),
        return_exceptions=True,
    )  # fmt: skip
    assert replies[:2] == [1, 2] and replies[3] == 3
    assert isinstance(replies[2], ResponseError)


async def test_a_call_cancelled_while_it_waits_is_never_sent(
    calls: ScriptPipeline, key: str
) -> None:
    incr = fresh("return redis.call('INCR', KEYS[1])")
    first = asyncio.create_task(calls(incr, 1, key))
    await asyncio.sleep(0)  # in flight
    waiting = [asyncio.create_task(calls(incr, 1, key)) for _ in range(3)]
    await asyncio.sleep(0)
    waiting[1].cancel()
    assert await first == 1
    assert sorted(await asyncio.gather(waiting[0], waiting[2])) == [2, 3]
    assert waiting[1].cancelled()
    assert await calls(incr, 1, key) == 4


async def test_an_unreachable_redis_fails_every_waiting_call() -> None:
    """The call in flight and the pipeline after it both answer Unavailable."""
    from polyport.backends.redis.client import connect

    client = connect(f"redis://127.0.0.1:{closed_port()}/0")
    calls = ScriptPipeline(client, "the test")
    try:
        script = fresh("return 1")
        results = await asyncio.gather(
            *(calls(script, 0) for _ in range(5)), return_exceptions=True
        )
        assert all(isinstance(result, Unavailable) for result in results)
    finally:
        await calls.wait_idle()
        await client.aclose()

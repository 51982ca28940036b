"""Request and reply over NATS JetStream queues: a node's reply queue is JetStream's too.

Two nodes on one prefix: one calls (``queue.call``), the other's consumer
answers on the caller's reply queue — a queue of the caller's own, with its
three streams; stopping the caller purges it, and nothing of it stays.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydantic import BaseModel
from tests.conftest import require_service
from tests.contract.test_broker_nats_jetstream import URL, delete_streams

from polyport import Service, Settings
from polyport.core.errors import Internal
from polyport.core.queues import Backoff, Queue
from polyport.node import Node

pytestmark = [pytest.mark.services, pytest.mark.timeout(60)]


class Ask(BaseModel):
    n: int


class Answer(BaseModel):
    twice: int


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    require_service("NATS", 4222)
    name = f"pptest-calls-{uuid.uuid4().hex[:12]}"
    yield name
    await delete_streams(name)


async def stream_names(prefix: str) -> list[str]:
    import nats

    nc = await nats.connect(URL)
    try:
        return sorted(
            info.config.name or ""
            for info in await nc.jetstream().streams_info()
            if (info.config.name or "").startswith(f"{prefix}_")
        )
    finally:
        await nc.close()


def service(*, answering: bool) -> tuple[Service, Queue]:
    svc = Service("maths")
    asks = svc.queue("asks", Ask)
    if answering:

        @asks.consumer(max_attempts=2, backoff=Backoff(initial=0.01, max=0.01))
        async def double(ask: Ask) -> Answer:
            if ask.n == 13:
                raise ValueError("unlucky")
            return Answer(twice=2 * ask.n)

    return svc, asks


async def test_a_call_is_answered_by_another_node_and_its_reply_queue_goes(
    tmp_path: Path, prefix: str
) -> None:
    """The answer comes back on the caller's reply queue; a failed call says dead letter;
    once the caller stops, its reply queue's streams are gone."""

    def settings(name: str) -> Settings:
        return Settings(
            dev=True,
            database=str(tmp_path / f"{name}.sqlite3"),
            queues={"broker": f"{URL}?prefix={prefix}", "poll_interval": 0.1},
        )

    answering, _ = service(answering=True)
    calling, asks = service(answering=False)
    worker = Node(answering, settings("worker"), edges=[])
    caller = Node(calling, settings("caller"), edges=[])
    async with worker.running():
        async with caller.running():
            with caller.publishing():
                # The caller has no consumer of its own, so no model to read the answer with.
                assert await asks.call({"n": 21}, timeout=10) == {"twice": 42}
                with pytest.raises(Internal, match="dead letter"):
                    await asks.call({"n": 13}, timeout=10)
            replies = [name for name in await stream_names(prefix) if "replies-" in name]
            assert len(replies) == 3
        assert [name for name in await stream_names(prefix) if "replies-" in name] == []

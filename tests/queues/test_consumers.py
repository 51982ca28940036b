"""Queues on a node: send, consume, retry with backoff, dead letters, redrive, validation."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from polyport import Service, Settings
from polyport.core.context import Context
from polyport.core.errors import ContractError, DeadlineExceeded, Internal, InvalidArgument
from polyport.core.queues import Backoff, QueueMessage
from polyport.node import Node


class Payment(BaseModel):
    order: int
    cents: int


def make_service() -> tuple[Service, dict[str, list]]:
    svc = Service("shop")
    seen: dict[str, list] = {"paid": [], "messages": [], "fail": []}
    payments = svc.queue("payments", Payment)

    @payments.consumer(concurrency=2, max_attempts=3, backoff=Backoff(initial=0.05, max=0.1))
    async def pay(p: Payment, ctx: Context, message: QueueMessage) -> None:
        seen["messages"].append(message)
        if p.order in seen["fail"]:
            raise RuntimeError(f"card declined for {p.order}")
        seen["paid"].append(p.order)

    return svc, seen


async def wait_for(predicate: Any) -> None:
    async with asyncio.timeout(5):
        while not predicate():
            await asyncio.sleep(0.01)


def settings(tmp_path: Path) -> Settings:
    return Settings(dev=True, database=str(tmp_path / "db.sqlite3"), queues={"poll_interval": 0.2})


async def test_send_and_consume(tmp_path: Path) -> None:
    svc, seen = make_service()
    node = Node(svc, settings(tmp_path), edges=[])
    async with node.running():
        with node.publishing():
            sent = await svc.queues["payments"].send(Payment(order=1, cents=100))
            again = await svc.queues["payments"].send({"order": 2, "cents": 5}, id="o-2")
            dup = await svc.queues["payments"].send({"order": 2, "cents": 5}, id="o-2")
        assert not sent.duplicate and not again.duplicate and dup.duplicate
        await wait_for(lambda: sorted(seen["paid"]) == [1, 2])
        message = next(m for m in seen["messages"] if m.id == "o-2")
        assert message.attempt == 1 and message.queue == "payments"
        assert message.headers["type"] == "shop.payments"
        stats = await node.runtime.queues.stats("payments")
        assert stats.waiting == 0 and stats.in_flight == 0 and stats.dead == 0


async def test_retry_then_dead_letter_then_redrive(tmp_path: Path) -> None:
    svc, seen = make_service()
    seen["fail"].append(7)
    node = Node(svc, settings(tmp_path), edges=[])
    async with node.running():
        with node.publishing():
            await svc.queues["payments"].send({"order": 7, "cents": 1}, id="seven")
        runner = node.runtime.queues
        await wait_for(lambda: len(seen["messages"]) == 3)
        async with asyncio.timeout(5):
            while (await runner.stats("payments")).dead != 1:
                await asyncio.sleep(0.02)
        [dead] = await runner.dead("payments")
        assert dead.id == "seven" and dead.attempts == 3
        assert dead.error is not None and "card declined for 7" in dead.error
        assert [m.attempt for m in seen["messages"]] == [1, 2, 3]
        assert seen["messages"][1].error is not None
        seen["fail"].clear()
        assert await runner.redrive("payments") == 1
        await wait_for(lambda: seen["paid"] == [7])
        assert seen["messages"][-1].attempt == 1


async def test_invalid_message_goes_to_dead_letters(tmp_path: Path) -> None:
    svc, seen = make_service()
    node = Node(svc, settings(tmp_path), edges=[])
    async with node.running():
        runner = node.runtime.queues
        binding = runner.bindings["payments"]
        # As another client writing straight to the broker would.
        await runner.send_encoded(binding, b'{"order": "x"}', id="bad")
        async with asyncio.timeout(5):
            while (await runner.stats("payments")).dead != 1:
                await asyncio.sleep(0.02)
        [dead] = await runner.dead("payments")
        assert dead.error is not None and dead.error.startswith("invalid message")
        assert seen["messages"] == []
        with node.publishing(), pytest.raises(InvalidArgument):
            await svc.queues["payments"].send({"order": "x"})


async def test_delay(tmp_path: Path) -> None:
    svc, seen = make_service()
    node = Node(svc, settings(tmp_path), edges=[])
    async with node.running():
        loop = asyncio.get_running_loop()
        start = loop.time()
        with node.publishing():
            await svc.queues["payments"].send({"order": 3, "cents": 1}, delay=0.3)
        await wait_for(lambda: seen["paid"] == [3])
        assert loop.time() - start >= 0.3


def test_declaration_errors() -> None:
    svc = Service("s")
    q = svc.queue("jobs", Payment)
    with pytest.raises(ContractError):
        svc.queue("jobs", Payment)
    with pytest.raises(ContractError):
        svc.queue("Bad.Name", Payment)

    @q.consumer
    async def one(p: Payment) -> None: ...

    with pytest.raises(ContractError):
        q.consumer(one)
    with pytest.raises(ContractError):
        svc.queue("other", Payment).consumer(concurrency=4, prefetch=2)


class Quote(BaseModel):
    cents: int


async def test_call_returns_the_consumers_result(tmp_path: Path) -> None:
    """RPC over the broker: reply-to and correlation-id, the consumer's result comes back."""
    svc = Service("pricing")
    quotes = svc.queue("quotes", Payment)
    seen: list[QueueMessage] = []

    @quotes.consumer(max_attempts=2, backoff=Backoff(initial=0.01, max=0.01))
    async def price(p: Payment, message: QueueMessage) -> Quote:
        seen.append(message)
        if p.order == 13:
            raise ValueError("unlucky")
        return Quote(cents=p.cents * 2)

    node = Node(svc, settings(tmp_path), edges=[])
    async with node.running():
        with node.publishing():
            results = await asyncio.gather(
                *(quotes.call({"order": n, "cents": n}, timeout=5) for n in range(5))
            )
            assert results == [Quote(cents=2 * n) for n in range(5)]
            assert seen[0].headers["reply-to"].startswith("replies-")
            with pytest.raises(Internal, match="dead letter"):
                await quotes.call({"order": 13, "cents": 1}, timeout=5)
            with pytest.raises(InvalidArgument):
                await quotes.call({"order": 1, "cents": 1}, timeout=0)


async def test_a_call_nobody_answers_times_out(tmp_path: Path) -> None:
    svc = Service("pricing")
    quotes = svc.queue("quotes", Payment)  # no consumer
    node = Node(svc, settings(tmp_path), edges=[])
    async with node.running():
        with node.publishing(), pytest.raises(DeadlineExceeded):
            await quotes.call({"order": 1, "cents": 1}, timeout=0.3)


def test_traceparent_helpers() -> None:
    from polyport.core.queues import trace_id_of, traceparent_of

    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    made = traceparent_of(trace)
    assert made is not None and trace_id_of(made) == trace
    assert traceparent_of("not-hex") is None and traceparent_of(None) is None
    assert trace_id_of("00-XYZ-1-01") is None and trace_id_of(None) is None


async def test_a_reply_to_a_queue_that_is_gone_does_not_fail_the_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The caller's node stopped and its reply queue went with it: the request is done,
    not retried (nobody waits for the reply)."""
    from polyport.core.errors import NotFound

    svc = Service("pricing")
    quotes = svc.queue("quotes", Payment)
    runs: list[int] = []

    @quotes.consumer
    async def price(p: Payment) -> Quote:
        runs.append(p.order)
        return Quote(cents=1)

    node = Node(svc, settings(tmp_path), edges=[])
    broker = node.runtime.queues.broker
    send = broker.send

    async def refusing(queue: str, messages: Any) -> list[bool]:
        if queue.startswith("gone-"):
            raise NotFound(f"no queue {queue}")
        return await send(queue, messages)

    monkeypatch.setattr(broker, "send", refusing)
    async with node.running():
        runner = node.runtime.queues
        await runner.send_encoded(
            runner.bindings["quotes"], b'{"order": 1, "cents": 1}', headers={"reply-to": "gone-1"}
        )
        await wait_for(lambda: runs == [1])
        async with asyncio.timeout(5):
            while (await runner.stats("quotes")).in_flight:
                await asyncio.sleep(0.02)
        assert (await runner.stats("quotes")).dead == 0 and runs == [1]

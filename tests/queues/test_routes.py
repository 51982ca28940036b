"""Events routed to queues: each event of a routed type becomes one message of each queue,
from the log, whichever node published it, across restarts."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from polyport import Service, Settings
from polyport.core.errors import ContractError
from polyport.core.queues import QueueMessage
from polyport.node import Node


class User(BaseModel):
    id: int
    email: str


class Welcome(BaseModel):
    to: str


def make_service() -> tuple[Service, Any, dict[str, list[Any]]]:
    svc = Service("accounts")
    created = svc.event("users.created", User)
    seen: dict[str, list[Any]] = {"audit": [], "welcome": []}
    audit = svc.queue("audit", User)
    audit.route(created)
    welcome = svc.queue("welcome", Welcome)
    welcome.route(created, transform=lambda user: {"to": user["email"]})

    @audit.consumer
    async def record(user: User, message: QueueMessage) -> None:
        seen["audit"].append((user.id, message))

    @welcome.consumer
    async def greet(mail: Welcome) -> None:
        seen["welcome"].append(mail.to)

    return svc, created, seen


async def wait_for(predicate: Any) -> None:
    async with asyncio.timeout(10):
        while not predicate():
            await asyncio.sleep(0.01)


def settings(tmp_path: Path) -> Settings:
    return Settings(dev=True, database=str(tmp_path / "db.sqlite3"), queues={"poll_interval": 0.1})


async def test_one_event_reaches_every_routed_queue_once(tmp_path: Path) -> None:
    svc, created, seen = make_service()
    node = Node(svc, settings(tmp_path), edges=[])
    async with node.running():
        with node.publishing():
            events = [await created.publish({"id": n, "email": f"u{n}@x.org"}) for n in range(3)]
        await wait_for(lambda: len(seen["audit"]) == 3 and len(seen["welcome"]) == 3)
        await asyncio.sleep(0.3)
        assert sorted(user_id for user_id, _ in seen["audit"]) == [0, 1, 2]
        assert sorted(seen["welcome"]) == ["u0@x.org", "u1@x.org", "u2@x.org"]
        first = next(m for user_id, m in seen["audit"] if user_id == 0)
        assert first.id == events[0].id
        assert first.headers["event-type"] == "users.created"


async def test_events_published_while_no_node_routed_are_routed_at_the_next_start(
    tmp_path: Path,
) -> None:
    svc, created, seen = make_service()
    # A first start sets the cursor; events of before it are not routed.
    async with Node(svc, settings(tmp_path), edges=[]).running() as node:
        with node.publishing():
            await created.publish({"id": 1, "email": "a@x.org"})
        await wait_for(lambda: len(seen["audit"]) == 1)

    # Events the log holds but no router saw: a node with the event only, as one whose
    # router was killed before its turn, on the same file.
    bare = Service("accounts")
    bare_created = bare.event("users.created", User)
    async with Node(bare, settings(tmp_path), edges=[]).running() as node:
        with node.publishing():
            for n in (2, 3):
                await bare_created.publish({"id": n, "email": f"u{n}@x.org"})

    async with Node(svc, settings(tmp_path), edges=[]).running():
        await wait_for(lambda: len(seen["audit"]) == 3 and len(seen["welcome"]) == 3)
        await asyncio.sleep(0.3)
    assert sorted(user_id for user_id, _ in seen["audit"]) == [1, 2, 3]


def test_a_route_needs_the_queues_model_or_a_transform() -> None:
    svc = Service("s")
    created = svc.event("users.created", User)
    with pytest.raises(ContractError, match="transform"):
        svc.queue("mail", Welcome).route(created)
    other = Service("t")
    with pytest.raises(ContractError, match="another service"):
        other.queue("q", User).route(created)
    queue = svc.queue("q", User)
    queue.route(created)
    with pytest.raises(ContractError, match="twice"):
        queue.route(created)

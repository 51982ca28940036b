"""Several nodes serving one Service object in one process: each call publishes to its own node."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import BaseModel

from polyport import Context, Service
from polyport.core.dispatch import Caller
from polyport.node import Node
from polyport.settings import Settings
from polyport.testing import serve_in_thread


class Shipment(BaseModel):
    order: int
    by: str


class Parcel(BaseModel):
    id: int
    label: str


def shipping_service() -> Service:
    """Methods that publish each way a handler can: the event type, the context, a stream, CRUD."""
    service = Service("shipping")
    shipped = service.event("shipments.sent", Shipment, channel="shipments", public=True)
    parcels = service.resource("parcels", Parcel, public=True)
    stored: dict[int, Parcel] = {}

    @service.method(public=True)
    async def ship(order: int) -> int:
        await shipped.publish(Shipment(order=order, by="event type"))
        return order

    @service.method(public=True)
    async def ship_with_context(order: int, ctx: Context) -> int:
        await ctx.publish(shipped, Shipment(order=order, by="context"))
        return order

    @service.stream(public=True)
    async def ship_each(orders: list[int]) -> AsyncIterator[int]:
        for order in orders:
            await shipped.publish(Shipment(order=order, by="stream"))
            yield order

    @parcels.create
    async def create_parcel(label: str) -> Parcel:
        parcel = Parcel(id=len(stored) + 1, label=label)
        stored[parcel.id] = parcel
        return parcel

    @service.on_startup
    async def announce() -> None:
        # A start-up hook runs once per node, as that node's.
        await shipped.publish(Shipment(order=0, by="start-up"))

    return service


def settings(database: Path | str) -> Settings:
    return Settings(dev=True, database=str(database), event_log="sqlite", grpc={"port": 0})


def shipments(url: str) -> list[dict[str, Any]]:
    """The events in one node's log, as its polling endpoint answers."""
    answer = httpx.get(f"{url}/v1/events", params={"channel": "shipments"}, timeout=10)
    answer.raise_for_status()
    return [event["data"] for event in answer.json()["events"]]


def test_two_nodes_of_one_service_each_serve_and_publish_to_their_own_log(
    tmp_path: Path,
) -> None:
    """Node A's calls land in A's log and B's in B's; stopping B leaves A serving.

    Each node has its own free port and its own SQLite file, and its own
    thread and event loop, as two serve_in_thread blocks give them.
    """
    service = shipping_service()
    edges = ["rest", "poll"]
    with serve_in_thread(service, settings(tmp_path / "a.sqlite3"), edges=edges) as a:
        with serve_in_thread(service, settings(tmp_path / "b.sqlite3"), edges=edges) as b:
            assert a.port != b.port
            assert httpx.post(f"{a.url}/v1/ship", json={"order": 1}).json() == 1
            assert httpx.post(f"{a.url}/v1/ship_with_context", json={"order": 2}).status_code == 200
            assert httpx.post(f"{b.url}/v1/ship", json={"order": 3}).json() == 3
            made = httpx.post(f"{b.url}/v1/parcels", json={"label": "fragile"})
            assert made.status_code == 201
            assert shipments(a.url) == [
                {"order": 0, "by": "start-up"},
                {"order": 1, "by": "event type"},
                {"order": 2, "by": "context"},
            ]
            assert shipments(b.url) == [
                {"order": 0, "by": "start-up"},
                {"order": 3, "by": "event type"},
            ]
            created = httpx.get(f"{b.url}/v1/events", params={"channel": "parcels/created"})
            assert [e["data"]["label"] for e in created.json()["events"]] == ["fragile"]
            nothing = httpx.get(f"{a.url}/v1/events", params={"channel": "parcels/created"})
            assert nothing.json()["events"] == []
        # B stopped: A still serves, and still publishes to its own log.
        assert httpx.post(f"{a.url}/v1/ship", json={"order": 4}).json() == 4
        assert shipments(a.url)[-1] == {"order": 4, "by": "event type"}
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{b.url}/healthz", timeout=2)


def test_publishing_outside_a_call_names_the_node_to_choose(tmp_path: Path) -> None:
    """With two nodes and no call to go by, a publish is refused with the way to choose.

    ``node.publishing()`` (what RunningNode.call uses) chooses; once only one
    node serves the service, a publish outside a call goes to that one.
    """
    service = shipping_service()
    shipped = service.events["shipments.sent"]
    edges = ["rest", "poll"]
    with serve_in_thread(service, settings(tmp_path / "a.sqlite3"), edges=edges) as a:
        with serve_in_thread(service, settings(tmp_path / "b.sqlite3"), edges=edges) as b:
            loose = asyncio.run_coroutine_threadsafe(
                shipped.publish(Shipment(order=5, by="nobody")), a.loop
            )
            with pytest.raises(RuntimeError, match=r"served by 2 nodes.*node\.publishing\(\)"):
                loose.result(10)
            with pytest.raises(RuntimeError, match="served by 2 nodes"):
                b.call(asyncio.sleep(0, result=service.hub))  # nothing chosen: the hub itself
            b.call(shipped.publish(Shipment(order=6, by="b's test")))
            assert shipments(b.url)[-1] == {"order": 6, "by": "b's test"}
            assert all(s["order"] != 6 for s in shipments(a.url))
        alone = asyncio.run_coroutine_threadsafe(
            service.publish(shipped, Shipment(order=7, by="the one left")), a.loop
        )
        alone.result(10)
        assert shipments(a.url)[-1] == {"order": 7, "by": "the one left"}


async def test_handlers_streams_and_jobs_publish_to_the_node_that_ran_them() -> None:
    """Two nodes on one event loop: a stream, a job and a hook's task each publish to their node."""
    service = shipping_service()
    shipped = service.events["shipments.sent"]
    background: list[asyncio.Task[Any]] = []

    @service.on_startup
    def producer() -> None:
        # A task started by a start-up hook keeps publishing to its node.
        background.append(asyncio.create_task(shipped.publish(Shipment(order=9, by="task"))))

    memory = Settings(dev=True, database=":memory:", event_log="memory", grpc={"port": 0})
    first = Node(service, memory, edges=["rest"], announce=False)
    second = Node(service, memory, edges=["rest"], announce=False)
    async with first.running(), second.running():
        await asyncio.gather(*background)
        counts = [first.runtime.hub.published, second.runtime.hub.published]
        assert counts == [2, 2]  # the hook's event and its task's, on each node

        dispatcher = second.runtime.dispatcher
        items = await dispatcher.open_stream(
            dispatcher.binding("ship_each"), {"orders": [10, 11]}, Caller("test")
        )
        assert [item async for item in items] == [10, 11]
        assert second.runtime.hub.published == 4
        assert first.runtime.hub.published == 2

        jobs, caller = first.runtime.jobs, Caller("jobs")
        job = await jobs.submit(first.runtime.dispatcher.binding("ship"), b'{"order": 12}', caller)
        assert (await jobs.wait(job.id, caller, 10)).done
        assert first.runtime.hub.published == 3
        assert second.runtime.hub.published == 4

        with pytest.raises(RuntimeError, match=r"node\.publishing"):
            await shipped.publish(Shipment(order=13, by="nobody"))
        with second.publishing():
            await shipped.publish(Shipment(order=14, by="second"))
        assert second.runtime.hub.published == 5
    assert service._hubs == []

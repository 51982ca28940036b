"""The push contract, run against SSE, WebSocket and long polling alike.

The same publish sequence arrives complete and in order; a disconnect and a
resume in the middle lose nothing and duplicate nothing; a cursor older than
the history gives recovery failed. Clients are real ones: httpx streaming for
SSE and long polling, the ``websockets`` library for WebSocket.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import orjson
import pytest
import websockets
from pydantic import BaseModel

from polyport import Service, Settings
from polyport.testing import RunningNode, serve_in_thread


class Tick(BaseModel):
    n: int


svc = Service("pushsvc")
TickEvent = svc.event("ticks.tick", Tick, channel="ticks/{n}", public=True)
OtherEvent = svc.event("other.thing", Tick, channel="other", public=True)


@svc.method(public=True)
async def emit(start: int, count: int) -> int:
    """Publish ticks start … start+count-1, alternating between two channels."""
    for n in range(start, start + count):
        await svc.publish(TickEvent, Tick(n=n), channel=f"ticks/{n % 2}")
        await svc.publish(OtherEvent, Tick(n=-n))  # noise on a channel nobody asked for
    return count


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningNode]:
    db = tmp_path_factory.mktemp("push") / "db.sqlite3"
    settings = Settings.model_validate(
        {"database": str(db), "rate_limit": {"enabled": False}, "history": {"max_events": 40}}
    )
    with serve_in_thread(svc, settings) as server:
        yield server


class PushClient:
    """One subscriber to ``ticks/+`` through one pattern; collects envelopes."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.events: list[dict[str, Any]] = []
        self.recovery_failed = False
        self._task: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()

    async def start(self, after: str | None) -> None:
        self._task = asyncio.create_task(self.run(after))
        await asyncio.wait_for(self.ready.wait(), 10)

    async def run(self, after: str | None) -> None:
        raise NotImplementedError

    async def wait_for(self, count: int) -> list[dict[str, Any]]:
        async with asyncio.timeout(20):
            while len(self.events) < count:
                await asyncio.sleep(0.01)
        return self.events

    async def until_recovery_failed(self) -> bool:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(10):
                while not self.recovery_failed:
                    await asyncio.sleep(0.01)
        return self.recovery_failed

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    @property
    def last_id(self) -> str:
        return str(self.events[-1]["id"])


class SseClient(PushClient):
    async def run(self, after: str | None) -> None:
        headers = {"last-event-id": after} if after else {}
        async with (
            httpx.AsyncClient(base_url=self.url, timeout=None) as client,
            client.stream(
                "GET", "/v1/events/stream", params={"channel": "ticks/+"}, headers=headers
            ) as response,
        ):
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            self.ready.set()
            kind = data = None
            async for line in response.aiter_lines():
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: "):
                    data = line[6:]
                elif line == "" and kind is not None:
                    if kind == "recovery-failed":
                        self.recovery_failed = True
                    else:
                        self.events.append(orjson.loads(data or "null"))
                    kind = data = None


class WsClient(PushClient):
    async def run(self, after: str | None) -> None:
        url = self.url.replace("http://", "ws://") + "/ws"
        async with websockets.connect(url, subprotocols=["polyport.v1"]) as ws:  # type: ignore[list-item]
            assert orjson.loads(await ws.recv())["type"] == "welcome"
            frame: dict[str, Any] = {"id": 1, "type": "subscribe", "channels": ["ticks/+"]}
            if after:
                frame["after"] = after
            await ws.send(orjson.dumps(frame).decode())
            answer = orjson.loads(await ws.recv())
            assert answer["type"] == "subscribed", answer
            self.recovery_failed = not answer["recovered"]
            self.ready.set()
            async for message in ws:
                frame = orjson.loads(message)
                if frame["type"] == "event":
                    self.events.append(frame["event"])


class LongPollClient(PushClient):
    async def run(self, after: str | None) -> None:
        cursor = after or "now"
        async with httpx.AsyncClient(base_url=self.url, timeout=30) as client:
            first = True
            while True:
                response = await client.get(
                    "/v1/events",
                    params={"channel": "ticks/+", "after": cursor, "wait": 0 if first else 5},
                )
                if response.status_code == 410:
                    self.recovery_failed = True
                    cursor = "now"
                    self.ready.set()
                    continue
                assert response.status_code == 200, response.text
                body = response.json()
                self.events.extend(body["events"])
                cursor = body["next"]
                if first:
                    first = False
                    self.ready.set()


CLIENTS = {"sse": SseClient, "ws": WsClient, "long-poll": LongPollClient}


@pytest.fixture(params=list(CLIENTS))
async def make_client(request: pytest.FixtureRequest, node: RunningNode) -> AsyncIterator[Any]:
    made: list[PushClient] = []

    async def make(after: str | None = None) -> PushClient:
        client = CLIENTS[request.param](node.url)
        made.append(client)
        await client.start(after)
        return client

    yield make
    for client in made:
        await client.stop()


async def emit_ticks(node: RunningNode, start: int, count: int) -> None:
    async with httpx.AsyncClient(base_url=node.url) as client:
        response = await client.post("/v1/emit", json={"start": start, "count": count})
        assert response.status_code == 200


def ticks(events: list[dict[str, Any]]) -> list[int]:
    return [e["data"]["n"] for e in events]


async def test_a_sequence_arrives_complete_and_in_order(
    make_client: Any, node: RunningNode
) -> None:
    """Everything published after subscribing arrives once, in publish order."""
    client = await make_client()
    await emit_ticks(node, 1000, 30)
    events = await client.wait_for(30)
    assert ticks(events) == list(range(1000, 1030))
    assert all(
        e["type"] == "ticks.tick" and e["channel"] == f"ticks/{e['data']['n'] % 2}" for e in events
    )
    await asyncio.sleep(0.2)
    assert len(client.events) == 30  # nothing extra (the noise channel stayed out)


async def test_resume_after_a_disconnect_loses_and_repeats_nothing(
    make_client: Any, node: RunningNode
) -> None:
    """Close mid-sequence, publish more while away, resume from the last id seen."""
    first = await make_client()
    await emit_ticks(node, 2000, 10)
    await first.wait_for(10)
    last = first.last_id
    await first.stop()
    await emit_ticks(node, 2010, 10)  # missed while away
    second = await make_client(after=last)
    await emit_ticks(node, 2020, 5)
    events = await second.wait_for(15)
    assert ticks(events) == list(range(2010, 2025))
    assert not second.recovery_failed
    await asyncio.sleep(0.2)
    assert len(second.events) == 15


async def test_a_cursor_older_than_history_is_recovery_failed(
    make_client: Any, node: RunningNode
) -> None:
    """History keeps 40 events per channel; a cursor from before that fails explicitly."""
    first = await make_client()
    await emit_ticks(node, 3000, 2)
    await first.wait_for(2)
    stale = first.events[0]["id"]
    await first.stop()
    await emit_ticks(node, 3002, 120)  # pushes the cursor out of both channels' history
    second = await make_client(after=stale)
    assert await second.until_recovery_failed()
    await emit_ticks(node, 4000, 3)  # …and the subscription carries on live
    events = await second.wait_for(3)
    assert ticks(events)[-3:] == [4000, 4001, 4002]

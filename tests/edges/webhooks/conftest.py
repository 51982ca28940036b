"""A service that publishes events, a scriptable local receiver, and a node serving both."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from pydantic import BaseModel

from polyport import Service, Settings
from polyport.testing import RunningNode, serve_in_thread

#: The edges these tests serve: REST (for the OpenAPI document) and the webhooks.
EDGES = ["rest", "webhooks"]
#: A schedule short enough to watch: the first attempt at once, then 0.2 s, 0.2 s.
SCHEDULE = [0.0, 0.2, 0.2]

service = Service("hooksout", description="Publishes events for the webhook edge tests.")


class Order(BaseModel):
    id: int
    total: int = 0


class Note(BaseModel):
    text: str


OrderCreated = service.event("orders.created", Order, channel="orders")
OrderPaid = service.event("orders.paid", Order, channel="orders")
NoteAdded = service.event("notes.added", Note, channel="notes")


@service.method
async def ping() -> str:
    return "pong"


@dataclass
class Received:
    """One request the receiver got."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def id(self) -> str:
        return self.headers["webhook-id"]

    def json(self) -> Any:
        return orjson.loads(self.body)


#: Given a request, the answer: ``(status, headers, body)``; or None to never answer.
Behaviour = Callable[[Received], "tuple[int, dict[str, str], bytes] | None"]


def ok(_: Received) -> tuple[int, dict[str, str], bytes]:
    return 200, {}, b"ok"


@dataclass
class Receiver:
    """An HTTP/1.1 server on 127.0.0.1 (keep-alive), in its own thread and loop."""

    behaviour: Behaviour = ok
    requests: list[Received] = field(default_factory=list)
    connections: int = 0
    active: int = 0
    most_active: int = 0
    port: int = 0
    delay: float = 0.0
    tls: ssl.SSLContext | None = None

    def __post_init__(self) -> None:
        self._changed = threading.Condition()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="receiver")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> Receiver:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def _run(self) -> None:
        loop = self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._server = loop.run_until_complete(
            asyncio.start_server(self._serve, "127.0.0.1", self.port, ssl=self.tls)
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        loop.run_forever()
        self._server.close()
        tasks = asyncio.all_tasks(loop)
        for task in tasks:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        loop.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with self._changed:
            self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if line:
                        name, _, value = line.partition(":")
                        headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                request = Received(method, path, headers, body, time.time())
                with self._changed:
                    self.requests.append(request)
                    self.active += 1
                    self.most_active = max(self.most_active, self.active)
                    self._changed.notify_all()
                try:
                    if self.delay:
                        await asyncio.sleep(self.delay)
                    answer = self.behaviour(request)
                    if answer is None:
                        await asyncio.sleep(3600)
                        return
                finally:
                    with self._changed:
                        self.active -= 1
                status, extra, content = answer
                out = [f"HTTP/1.1 {status} X", f"content-length: {len(content)}"]
                out += [f"{k}: {v}" for k, v in extra.items()]
                writer.write(("\r\n".join(out) + "\r\n\r\n").encode() + content)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        except asyncio.CancelledError:
            pass
        finally:
            writer.close()

    # -- from the test's thread -----------------------------------------------------------

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    pytest.fail(f"gave up waiting; {len(self.requests)} requests so far")
                self._changed.wait(min(left, 0.05))

    def wait_count(self, n: int, timeout: float = 15.0) -> list[Received]:
        self.wait_for(lambda: len(self.requests) >= n, timeout)
        return list(self.requests)

    def ids(self) -> set[str]:
        with self._changed:
            return {r.id for r in self.requests}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    yield r
    r.stop()


def settings_for(tmp_path: Path, **webhooks: Any) -> Settings:
    options: dict[str, Any] = {
        "allow_private": ["127.0.0.1/32"],
        "retry_schedule": SCHEDULE,
        "jitter": 0.0,
        "poll_interval": 0.05,
        "timeout": 2.0,
        "lease_margin": 0.5,
    }
    options.update(webhooks)
    return Settings(dev=True, database=str(tmp_path / "db.sqlite3"), webhooks=options)


@contextlib.contextmanager
def running(settings: Settings) -> Iterator[RunningNode]:
    with serve_in_thread(service, settings, edges=EDGES) as node:
        yield node


@pytest.fixture
def node(tmp_path: Path) -> Iterator[RunningNode]:
    with running(settings_for(tmp_path)) as n:
        yield n


def publish(node: RunningNode, event: Any, **data: Any) -> str:
    """Publish one event on the node's loop; its id."""
    published = node.call(service.publish(event, data))
    return str(published.id)


def subscribe(node: RunningNode, url: str, **fields: Any) -> dict[str, Any]:
    response = httpx.post(f"{node.url}/v1/webhooks", json={"url": url, **fields}, timeout=10)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def deliveries(node: RunningNode, endpoint_id: str, **query: Any) -> list[dict[str, Any]]:
    response = httpx.get(
        f"{node.url}/v1/webhooks/{endpoint_id}/deliveries", params=query, timeout=10
    )
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def wait_until(predicate: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail("gave up waiting")
        time.sleep(0.02)


def stored_endpoint(database: Path, endpoint_id: str) -> dict[str, Any]:
    """An endpoint's fields as the node's SQLite file holds them (its record's JSON)."""
    key = f"webhooks/endpoints/{endpoint_id}"
    with contextlib.closing(sqlite3.connect(database)) as conn:
        row = conn.execute("SELECT value FROM polyport_records WHERE key = ?", (key,)).fetchone()
    fields: dict[str, Any] = orjson.loads(row[0])
    return fields


def overwrite_stored_endpoint(database: Path, endpoint_id: str, **fields: Any) -> None:
    """Change an endpoint's stored fields behind the node's back (a node is not running)."""
    changed = {**stored_endpoint(database, endpoint_id), **fields}
    with contextlib.closing(sqlite3.connect(database)) as conn, conn:
        conn.execute(
            "UPDATE polyport_records SET value = ? WHERE key = ?",
            (orjson.dumps(changed), f"webhooks/endpoints/{endpoint_id}"),
        )

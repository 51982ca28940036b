"""Queues over HTTP: send (202, dedup, validation, limits, auth), and the admin routes."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from pydantic import BaseModel, Field

from polyport import Service, Settings
from polyport.core.queues import Backoff, QueueMessage
from polyport.testing import RunningNode, serve_in_thread


class Order(BaseModel):
    order: int
    note: str = Field(default="", max_length=10_000)


def make_service(handled: list[QueueMessage], failing: set[int]) -> Service:
    svc = Service("shop")
    orders = svc.queue("orders", Order, scopes=("orders:send",))

    @orders.consumer(max_attempts=2, backoff=Backoff(initial=0.01, max=0.01))
    async def handle(order: Order, message: QueueMessage) -> None:
        handled.append(message)
        if order.order in failing:
            raise ValueError(f"no stock for {order.order}")

    svc.queue("open", Order, public=True)  # no consumer: messages wait
    return svc


KEYS = {
    "auth": {
        "api_keys": [
            {"key": "k-send", "subject": "shopfront", "scopes": ["orders:send"]},
            {"key": "k-other", "subject": "other", "scopes": []},
            {"key": "k-admin", "subject": "ops", "scopes": ["queues:admin"]},
            {"key": "k-metrics", "subject": "prometheus", "scopes": ["metrics"]},
        ]
    }
}


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[RunningNode, list[QueueMessage], set[int]]]:
    handled: list[QueueMessage] = []
    failing: set[int] = set()
    settings = Settings(
        database=str(tmp_path / "db.sqlite3"),
        queues={"poll_interval": 0.1, "max_message": 2048},
        **KEYS,  # type: ignore[arg-type]
    )
    with serve_in_thread(make_service(handled, failing), settings) as node:
        yield node, handled, failing


def wait_until(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


SEND = {"x-api-key": "k-send"}
ADMIN = {"x-api-key": "k-admin"}
ADMIN_METRICS = {"x-api-key": "k-metrics"}


def test_send_is_accepted_durable_and_deduplicated(served: Any) -> None:
    node, handled, _ = served
    url = f"{node.url}/v1/queues/orders"
    first = httpx.post(url, json={"order": 1}, headers={**SEND, "idempotency-key": "o-1"})
    assert first.status_code == 202
    assert first.json() == {"id": "o-1", "queue": "orders", "duplicate": False}
    again = httpx.post(url, json={"order": 1}, headers={**SEND, "idempotency-key": "o-1"})
    assert again.status_code == 202 and again.json()["duplicate"] is True
    fresh = httpx.post(url, json={"order": 2}, headers=SEND)
    assert fresh.status_code == 202 and len(fresh.json()["id"]) == 32
    wait_until(lambda: len(handled) == 2)
    assert sorted(m.id for m in handled) == sorted(["o-1", fresh.json()["id"]])


def test_send_refuses_bad_input_with_problems(served: Any) -> None:
    node, handled, _ = served
    url = f"{node.url}/v1/queues/orders"
    bad = httpx.post(url, json={"order": "x"}, headers=SEND)
    assert bad.status_code == 422
    assert bad.headers["content-type"].startswith("application/problem+json")
    assert bad.json()["errors"][0]["field"] == "order"
    unreadable = httpx.post(
        url, content=b"{nope", headers={**SEND, "content-type": "application/json"}
    )
    assert unreadable.status_code == 400
    xml = httpx.post(url, content=b"<a/>", headers={**SEND, "content-type": "text/xml"})
    assert xml.status_code == 415
    big = httpx.post(url, json={"order": 1, "note": "x" * 4000}, headers=SEND)
    assert big.status_code == 413
    for delay in ("-1", "nan", "1e9", "soon"):
        r = httpx.post(f"{url}?delay={delay}", json={"order": 1}, headers=SEND)
        assert r.status_code == 422, delay
    long_key = httpx.post(url, json={"order": 1}, headers={**SEND, "idempotency-key": "k" * 201})
    assert long_key.status_code == 422
    unknown = httpx.post(f"{node.url}/v1/queues/nope", json={}, headers=SEND)
    assert unknown.status_code == 404
    time.sleep(0.2)
    assert handled == []


def test_send_needs_the_queue_scopes(served: Any) -> None:
    node, _, _ = served
    url = f"{node.url}/v1/queues/orders"
    assert httpx.post(url, json={"order": 1}).status_code == 401
    assert httpx.post(url, json={"order": 1}, headers={"x-api-key": "k-other"}).status_code == 403
    public = httpx.post(f"{node.url}/v1/queues/open", json={"order": 1})
    assert public.status_code == 202


def test_admin_routes(served: Any) -> None:
    node, handled, failing = served
    failing.add(9)
    base = f"{node.url}/v1/queues"
    assert httpx.get(base).status_code == 401
    assert httpx.get(base, headers=SEND).status_code == 403
    httpx.post(f"{base}/orders", json={"order": 9}, headers={**SEND, "idempotency-key": "nine"})
    httpx.post(f"{base}/open", json={"order": 5}, headers={"idempotency-key": "five"})

    def dead() -> list[dict[str, Any]]:
        return httpx.get(f"{base}/orders/dead", headers=ADMIN).json()["items"]

    wait_until(lambda: len(dead()) == 1)
    [letter] = dead()
    assert letter["id"] == "nine" and letter["attempts"] == 2 and letter["state"] == "dead"
    assert "no stock for 9" in letter["error"] and letter["body"] == {"order": 9, "note": ""}
    listing = httpx.get(base, headers=ADMIN).json()
    counts = {q["name"]: q for q in listing["queues"]}
    assert listing["broker"] == "sqlite"
    assert counts["orders"]["dead"] == 1 and counts["open"]["waiting"] == 1
    info = httpx.get(f"{base}/orders", headers=ADMIN).json()
    assert info["consumer"]["max_attempts"] == 2
    waiting = httpx.get(f"{base}/open/messages", headers=ADMIN).json()["items"]
    assert [m["id"] for m in waiting] == ["five"] and waiting[0]["state"] == "waiting"

    failing.clear()
    bad = httpx.post(f"{base}/orders/redrive", json={"ids": "nine"}, headers=ADMIN)
    assert bad.status_code == 422
    redriven = httpx.post(f"{base}/orders/redrive", json={"ids": ["nine", "zzz"]}, headers=ADMIN)
    assert redriven.json() == {"redriven": 1}
    wait_until(lambda: len(handled) == 3 and not dead())
    assert handled[-1].attempt == 1

    refused = httpx.delete(f"{base}/open/messages", headers=ADMIN)
    assert refused.status_code == 422
    purged = httpx.delete(f"{base}/open/messages?confirm=open", headers=ADMIN)
    assert purged.json() == {"deleted": 1}


def test_openapi_describes_the_queues(served: Any) -> None:
    node, _, _ = served
    doc = orjson.loads(httpx.get(f"{node.url}/openapi.json").content)
    send = doc["paths"]["/v1/queues/orders"]["post"]
    schema = send["requestBody"]["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/Order"}
    assert "Order" in doc["components"]["schemas"]
    assert {p["name"] for p in send["parameters"]} == {"Idempotency-Key", "key", "delay"}
    assert set(doc["paths"]["/v1/queues/orders/redrive"]) == {"post"}


def test_asyncapi_describes_the_queues(served: Any) -> None:
    """Each queue is a channel the node receives on, its message the model's schema; the
    whole document is checked by AsyncAPI's own parser in tests/http/test_asyncapi.py."""
    node, _, _ = served
    doc = orjson.loads(httpx.get(f"{node.url}/asyncapi.json").content)
    channel = doc["channels"]["queue.orders"]
    assert channel["address"] == "orders"
    assert channel["servers"] == [{"$ref": "#/servers/queues"}]
    assert doc["servers"]["queues"]["pathname"] == "/v1/queues"
    message = doc["components"]["messages"]["queue.orders"]
    assert message["payload"] == {"$ref": "#/components/schemas/Order"}
    send = doc["operations"]["queues.orders.send"]
    assert send["action"] == "receive" and send["x-polyport-scopes"] == ["orders:send"]
    assert "security" not in doc["operations"]["queues.open.send"]  # a public queue


def test_call_waits_for_the_reply(served: Any) -> None:
    node, handled, failing = served
    base = f"{node.url}/v1/queues"
    done = httpx.post(f"{base}/orders/call", json={"order": 4}, headers=SEND, timeout=10)
    assert done.status_code == 200 and done.json() is None  # the consumer returns nothing
    assert handled[-1].headers["reply-to"].startswith("replies-")
    failing.add(5)
    failed = httpx.post(f"{base}/orders/call", json={"order": 5}, headers=SEND, timeout=10)
    assert failed.status_code == 500
    assert "dead letter" in failed.json()["detail"] and "no stock" not in failed.text
    nobody = httpx.post(f"{base}/open/call?timeout=0.3", json={"order": 1}, timeout=10)
    assert nobody.status_code == 504
    bad = httpx.post(f"{base}/open/call?timeout=0", json={"order": 1}, timeout=10)
    assert bad.status_code == 422
    assert httpx.post(f"{base}/orders/call", json={"order": 1}).status_code == 401


def test_metrics_count_messages_by_queue_and_state(served: Any) -> None:
    node, handled, failing = served
    failing.add(3)
    httpx.post(f"{node.url}/v1/queues/orders", json={"order": 3}, headers=SEND)
    httpx.post(f"{node.url}/v1/queues/open", json={"order": 1})
    wait_until(lambda: len(handled) == 2)
    wait_until(
        lambda: (
            'polyport_queue_messages{queue="orders",state="dead"} 1'
            in httpx.get(f"{node.url}/metrics", headers=ADMIN_METRICS).text
        )
    )
    text = httpx.get(f"{node.url}/metrics", headers=ADMIN_METRICS).text
    assert 'polyport_queue_messages{queue="open",state="waiting"} 1' in text
    assert 'polyport_queue_messages_total{outcome="dead",queue="orders"} 1' in text
    assert 'polyport_queue_messages_total{outcome="retry",queue="orders"} 1' in text


def test_a_requests_trace_goes_on_with_its_message(served: Any) -> None:
    """W3C traceparent: the message carries the request's trace id (a new span)."""
    node, handled, _ = served
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    httpx.post(
        f"{node.url}/v1/queues/orders",
        json={"order": 6},
        headers={**SEND, "traceparent": f"00-{trace}-00f067aa0ba902b7-01"},
    )
    wait_until(lambda: handled)
    version, trace_id, span, flags = handled[-1].headers["traceparent"].split("-")
    assert (version, trace_id, flags) == ("00", trace, "01") and span != "00f067aa0ba902b7"


def test_a_consumers_service_error_reaches_the_caller_as_it_is() -> None:
    """NotFound raised by the consumer is the caller's 404, as a method's would be."""
    svc = Service("lookup")
    finds = svc.queue("finds", Order, public=True)

    @finds.consumer(max_attempts=1)
    async def find(order: Order) -> Order:
        from polyport.core.errors import NotFound

        raise NotFound(f"no order {order.order}")

    with serve_in_thread(svc, Settings(dev=True, database=":memory:")) as node:
        answer = httpx.post(f"{node.url}/v1/queues/finds/call", json={"order": 8}, timeout=10)
    assert answer.status_code == 404 and answer.json()["detail"] == "no order 8"

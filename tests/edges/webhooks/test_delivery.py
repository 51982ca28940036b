"""Delivery: Standard Webhooks headers, signatures checked by the reference library, filters."""

from __future__ import annotations

import httpx
from standardwebhooks.webhooks import Webhook

from polyport.testing import RunningNode

from .conftest import (
    NoteAdded,
    OrderCreated,
    OrderPaid,
    Receiver,
    deliveries,
    publish,
    subscribe,
    wait_until,
)


def test_an_event_arrives_signed_and_the_reference_library_verifies_it(
    node: RunningNode, receiver: Receiver
) -> None:
    """The webhook carries the event envelope; standardwebhooks accepts its signature."""
    endpoint = subscribe(node, receiver.url, event_types=["orders.*"])
    assert endpoint["secret"].startswith("whsec_")
    event_id = publish(node, OrderCreated, id=7, total=42)
    (request,) = receiver.wait_count(1)
    assert request.method == "POST" and request.path == "/hook"
    assert request.headers["webhook-id"] == event_id
    assert request.headers["content-type"] == "application/json"
    payload = Webhook(endpoint["secret"]).verify(request.body, request.headers)
    assert payload["type"] == "orders.created"
    assert payload["id"] == event_id
    assert payload["data"] == {"id": 7, "total": 42}
    assert payload["channel"] == "orders"


def test_filters_choose_the_event_types(node: RunningNode, receiver: Receiver) -> None:
    """An endpoint gets only the types its filters match; one without filters gets all."""
    subscribe(node, receiver.url + "?who=paid", event_types=["orders.paid"])
    subscribe(node, receiver.url + "?who=notes", event_types=["notes.+"])
    subscribe(node, receiver.url + "?who=all")
    publish(node, OrderCreated, id=1)
    publish(node, OrderPaid, id=1)
    publish(node, NoteAdded, text="hi")
    received = receiver.wait_count(5)
    got = sorted((r.path.split("=")[1], r.json()["type"]) for r in received)
    assert got == [
        ("all", "notes.added"),
        ("all", "orders.created"),
        ("all", "orders.paid"),
        ("notes", "notes.added"),
        ("paid", "orders.paid"),
    ]


def test_the_delivery_log_shows_the_outcome(node: RunningNode, receiver: Receiver) -> None:
    """After a 2xx the delivery is delivered, with its code, latency and body."""
    endpoint = subscribe(node, receiver.url)
    event_id = publish(node, OrderCreated, id=3)
    receiver.wait_count(1)

    def delivered() -> bool:
        items = deliveries(node, endpoint["id"])
        return bool(items) and items[0]["status"] == "delivered"

    wait_until(delivered)
    (item,) = deliveries(node, endpoint["id"])
    assert item["event_id"] == event_id and item["attempts"] == 1
    assert item["response_code"] == 200 and item["response_body"] == "ok"
    assert item["latency_ms"] >= 0
    one = httpx.get(f"{node.url}/v1/webhooks/{endpoint['id']}/deliveries/{event_id}").json()
    assert [a["response_code"] for a in one["history"]] == [200]


def test_connections_are_kept_alive(node: RunningNode, receiver: Receiver) -> None:
    """Consecutive deliveries to one endpoint reuse a pooled connection."""
    endpoint = subscribe(node, receiver.url)
    for i in range(5):
        publish(node, OrderCreated, id=i)
        # Answered and back in the pool before the next one goes.
        wait_until(
            lambda n=i + 1: (
                sum(d["status"] == "delivered" for d in deliveries(node, endpoint["id"])) == n
            )
        )
    assert receiver.connections == 1


def test_the_client_posts_under_uvloop(receiver: Receiver) -> None:
    """uvloop's transports are not asyncio.Transport subclasses; the client copes."""
    import uvloop

    from polyport.edges.webhooks.client import ConnectionPool
    from polyport.edges.webhooks.ssrf import AddressPolicy, parse_url

    async def post() -> int:
        pool = ConnectionPool(parse_url(receiver.url), AddressPolicy(["127.0.0.1"]), keep=64)
        try:
            answer = await pool.post([(b"webhook-id", b"x")], b"{}")
            return answer.status
        finally:
            pool.close()

    assert uvloop.run(post()) == 200
    assert receiver.requests[0].id == "x"

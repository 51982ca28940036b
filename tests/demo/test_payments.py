"""The demo's payment flow end to end: pay → provider → signed webhook → paid → orders.paid."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from polyport import Settings
from polyport.demo import payments
from polyport.demo.shop import shop
from polyport.testing import RunningNode, serve_in_thread

EDGES = ["rest", "poll", "sse", "hooks"]


@pytest.fixture
def demo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RunningNode]:
    """The demo shop with its payment provider, settling payments in 50 ms."""
    monkeypatch.setattr(payments, "SETTLE_DELAY", 0.05)
    settings = Settings.model_validate(
        {
            "dev": True,
            "database": str(tmp_path / "demo.sqlite3"),
            "rate_limit": {"enabled": False},
            "hooks": {"poll_interval": 0.05},
        }
    )
    with serve_in_thread(shop, settings, edges=EDGES) as node:
        yield node


def new_order(client: httpx.Client, quantity: int = 2) -> dict[str, Any]:
    response = client.post(
        "/v1/orders", json={"user_id": 1, "items": [{"product_id": 3, "quantity": quantity}]}
    )
    assert response.status_code == 201, response.text
    order: dict[str, Any] = response.json()
    return order


def wait_for(check: Any, timeout: float = 15.0) -> Any:
    """Poll ``check()`` until it returns something truthy (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.02)
    pytest.fail("gave up waiting")


def test_paying_an_order_marks_it_paid_and_publishes_orders_paid(demo: RunningNode) -> None:
    """The provider answers "processing"; its webhook pays the order; the log and SSE see it."""
    with httpx.Client(base_url=demo.url, timeout=10) as client:
        order = new_order(client)
        start = client.get("/v1/events", params={"channel": "orders/paid", "after": "now"})
        after = start.json()["next"]

        seen: list[dict[str, Any]] = []
        opened = threading.Event()

        def listen() -> None:
            with httpx.stream(
                "GET",
                f"{demo.url}/v1/events/stream",
                params={"channel": "orders/paid"},
                timeout=15,
            ) as stream:
                opened.set()
                for line in stream.iter_lines():
                    if line.startswith("data:"):
                        seen.append(orjson.loads(line[5:]))
                        return

        listener = threading.Thread(target=listen, daemon=True)
        listener.start()
        assert opened.wait(10)

        started = client.post("/v1/pay_order", json={"order_id": order["id"]})
        assert started.status_code == 200, started.text
        payment = started.json()
        assert payment["status"] == "processing" and payment["id"].startswith("pay_")
        assert payment["amount"] == order["total"]
        # Not paid yet: that is the provider's webhook's business.
        assert client.get(f"/v1/orders/{order['id']}").json()["status"] == "pending"

        found = client.get(
            "/v1/events", params={"channel": "orders/paid", "after": after, "wait": 10}
        ).json()["events"]
        assert [e["type"] for e in found] == ["orders.paid"]
        paid = found[0]["data"]
        assert paid["order_id"] == order["id"] and paid["payment_id"] == payment["id"]
        assert paid["amount"] == order["total"] and paid["currency"] == "EUR"
        assert client.get(f"/v1/orders/{order['id']}").json()["status"] == "paid"

        listener.join(15)
        assert seen and seen[0]["type"] == "orders.paid"
        assert seen[0]["data"]["order_id"] == order["id"]

        payments_of = client.post("/v1/get_payments", json={"order_id": order["id"]}).json()
        assert [(p["id"], p["status"]) for p in payments_of] == [(payment["id"], "succeeded")]
        # The receiver's log holds the provider's delivery, processed once.
        log = client.get("/hooks/payments/deliveries").json()
        assert log["counts"]["done"] == 1 and log["items"][0]["event_type"] == "payment.succeeded"
        # A paid order cannot be paid again.
        again = client.post("/v1/pay_order", json={"order_id": order["id"]})
        assert again.status_code == 409


def test_a_declined_card_leaves_the_order_pending(demo: RunningNode) -> None:
    """payment.failed is recorded on the payment; the order waits for another attempt."""
    with httpx.Client(base_url=demo.url, timeout=10) as client:
        order = new_order(client, quantity=1)
        declined = client.post(
            "/v1/pay_order", json={"order_id": order["id"], "card": "4000 0000 0000 0002"}
        )
        assert declined.status_code == 200
        # While it is processing, a second payment is refused.
        assert client.post("/v1/pay_order", json={"order_id": order["id"]}).status_code == 409

        def settled() -> list[dict[str, Any]] | None:
            found: list[dict[str, Any]] = client.post(
                "/v1/get_payments", json={"order_id": order["id"]}
            ).json()
            return found if found[0]["status"] != "processing" else None

        first = wait_for(settled)[0]
        assert first["status"] == "failed" and first["failure_reason"] == "card_declined"
        assert client.get(f"/v1/orders/{order['id']}").json()["status"] == "pending"
        # Another card works.
        assert client.post("/v1/pay_order", json={"order_id": order["id"]}).status_code == 200
        wait_for(lambda: client.get(f"/v1/orders/{order['id']}").json()["status"] == "paid")


def test_the_shop_refuses_webhooks_not_signed_by_the_provider(demo: RunningNode) -> None:
    """A "payment.succeeded" someone else signed gets 401, and nothing is paid."""
    from standardwebhooks.webhooks import Webhook

    from polyport.webhooks import new_secret

    with httpx.Client(base_url=demo.url, timeout=10) as client:
        order = new_order(client, quantity=1)
        body = orjson.dumps(
            {
                "type": "payment.succeeded",
                "timestamp": "2026-01-01T00:00:00Z",
                "data": {
                    "id": "pay_forged",
                    "amount": order["total"],
                    "currency": "EUR",
                    "reference": f"order-{order['id']}",
                    "status": "succeeded",
                },
            }
        )
        now = int(time.time())
        from datetime import UTC, datetime

        signature = Webhook(new_secret()).sign(
            "msg_forged", datetime.fromtimestamp(now, UTC), body.decode()
        )
        response = client.post(
            "/hooks/payments",
            content=body,
            headers={
                "webhook-id": "msg_forged",
                "webhook-timestamp": str(now),
                "webhook-signature": signature,
                "content-type": "application/json",
            },
        )
        assert response.status_code == 401
        assert client.get(f"/v1/orders/{order['id']}").json()["status"] == "pending"
        # The shop's own secret, used with the reference library, is accepted.
        signature = Webhook(payments.provider.secret).sign(
            "msg_real", datetime.fromtimestamp(now, UTC), body.decode()
        )
        response = client.post(
            "/hooks/payments",
            content=body,
            headers={
                "webhook-id": "msg_real",
                "webhook-timestamp": str(now),
                "webhook-signature": signature,
                "content-type": "application/json",
            },
        )
        assert response.status_code == 200
        wait_for(lambda: client.get(f"/v1/orders/{order['id']}").json()["status"] == "paid")


def test_orders_paid_reaches_a_webhook_subscriber(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The whole loop: provider → /hooks/payments → orders.paid → the outbound webhook a
    subscriber registered, signed so that the ``standardwebhooks`` library accepts it."""
    import http.server

    from standardwebhooks.webhooks import Webhook

    received: list[tuple[dict[str, str], bytes]] = []
    arrived = threading.Event()

    class Subscriber(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            received.append(({k.lower(): v for k, v in self.headers.items()}, body))
            arrived.set()
            self.send_response(204)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    subscriber = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Subscriber)
    threading.Thread(target=subscriber.serve_forever, daemon=True).start()
    monkeypatch.setattr(payments, "SETTLE_DELAY", 0.05)
    settings = Settings.model_validate(
        {
            "dev": True,
            "database": str(tmp_path / "demo.sqlite3"),
            "rate_limit": {"enabled": False},
            "hooks": {"poll_interval": 0.05},
            "webhooks": {"allow_private": ["127.0.0.1"], "retry_schedule": [0, 0.1, 0.1]},
        }
    )
    try:
        with (
            serve_in_thread(shop, settings, edges=[*EDGES, "webhooks"]) as node,
            httpx.Client(base_url=node.url, timeout=10) as client,
        ):
            url = f"http://127.0.0.1:{subscriber.server_address[1]}/shop-events"
            created = client.post("/v1/webhooks", json={"url": url, "event_types": ["orders.paid"]})
            assert created.status_code == 201, created.text
            secret = created.json()["secret"]
            order = new_order(client, quantity=1)
            assert client.post("/v1/pay_order", json={"order_id": order["id"]}).status_code == 200
            assert arrived.wait(15), "the subscriber got nothing"
    finally:
        subscriber.shutdown()
        subscriber.server_close()
    headers, body = received[0]
    event = Webhook(secret).verify(body, headers)
    assert event["type"] == "orders.paid" and event["data"]["order_id"] == order["id"]

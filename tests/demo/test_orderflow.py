"""The demo's order flow on queues: payments → provider → webhook → notifications."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests.demo.test_payments import wait_for

from polyport import Settings
from polyport.demo import orderflow, payments
from polyport.demo.shop import shop, store
from polyport.testing import RunningNode, serve_in_thread

EDGES = ["rest", "hooks", "queues"]


@pytest.fixture
def demo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RunningNode]:
    monkeypatch.setattr(payments, "SETTLE_DELAY", 0.05)
    settings = Settings.model_validate(
        {
            "dev": True,
            "database": str(tmp_path / "demo.sqlite3"),
            "rate_limit": {"enabled": False},
            "hooks": {"poll_interval": 0.05},
            "queues": {"poll_interval": 0.05},
        }
    )
    with serve_in_thread(shop, settings, edges=EDGES) as node:
        yield node


def test_a_queued_payment_pays_the_order_and_sends_one_receipt(demo: RunningNode) -> None:
    with httpx.Client(base_url=demo.url, timeout=10) as client:
        created = client.post(
            "/v1/orders", json={"user_id": 2, "items": [{"product_id": 3, "quantity": 1}]}
        ).json()
        order_id = created["id"]
        for _ in range(2):  # a producer that retries its request: charged once
            sent = client.post(
                "/v1/queues/payments",
                json={"order_id": order_id},
                headers={"idempotency-key": f"pay-order-{order_id}"},
            )
            assert sent.status_code == 202
        assert sent.json()["duplicate"] is True
        wait_for(lambda: client.get(f"/v1/orders/{order_id}").json()["status"] == "paid")
        rows = wait_for(
            lambda: store.all(
                "SELECT user_id, text FROM shop_notifications WHERE order_id=?", order_id
            )
        )
        assert rows == [(2, f"Order {order_id} is paid.")]
        payments_made = client.post("/v1/get_payments", json={"order_id": order_id}).json()
        assert len(payments_made) == 1
        # The payment's message leaves once its consumer saw the order paid.
        wait_for(
            lambda: all(
                q["dead"] == 0 and q["in_flight"] == 0 and q["waiting"] == 0
                for q in client.get("/v1/queues").json()["queues"]
            )
        )


def test_a_payment_for_no_order_ends_as_a_dead_letter(demo: RunningNode) -> None:
    with httpx.Client(base_url=demo.url, timeout=10) as client:
        sent = client.post("/v1/queues/payments", json={"order_id": 999_999})
        assert sent.status_code == 202
        dead = wait_for(lambda: client.get("/v1/queues/payments/dead").json()["items"])
        assert dead[0]["id"] == sent.json()["id"] and dead[0]["attempts"] == 3
        assert "999999" in dead[0]["error"]


def test_the_queues_are_in_the_contract() -> None:
    assert set(shop.queues) == {"payments", "notifications"}
    assert orderflow.payments.handler is not None

"""The guide's order flow survives SIGKILL: every payment the queue accepted ends with its
order paid, though the node — and the simulated provider inside it — died mid-flow."""

from __future__ import annotations

import contextlib
import subprocess
import time
from pathlib import Path

import httpx
from tests.nodeprocess import node_process

NODE = Path(__file__).with_name("demonode.py")
ORDERS = 12


def demo(database: Path) -> contextlib.AbstractContextManager[tuple[str, subprocess.Popen[str]]]:
    return node_process(NODE, str(database))


def test_no_accepted_payment_is_lost_when_the_node_is_killed_mid_flow(tmp_path: Path) -> None:
    database = tmp_path / "demo.sqlite3"
    accepted: list[int] = []
    with demo(database) as (url, process), httpx.Client(base_url=url, timeout=10) as client:
        for n in range(ORDERS):
            order = client.post(
                "/v1/orders",
                json={"user_id": 1 + n % 2, "items": [{"product_id": 3, "quantity": 1}]},
            ).json()
            sent = client.post(
                "/v1/queues/payments",
                json={"order_id": order["id"]},
                headers={"idempotency-key": f"pay-order-{order['id']}"},
            )
            assert sent.status_code == 202
            accepted.append(order["id"])
        time.sleep(0.3)  # charges made, webhooks on their way: kill it now
        pending = [
            order_id
            for order_id in accepted
            if client.get(f"/v1/orders/{order_id}").json()["status"] == "pending"
        ]
        process.kill()
        process.wait(10)

    assert pending, "every order was paid before the kill: the test proves nothing"
    with demo(database) as (url, _), httpx.Client(base_url=url, timeout=10) as client:

        def unpaid() -> list[int]:
            return [
                order_id
                for order_id in accepted
                if client.get(f"/v1/orders/{order_id}").json()["status"] != "paid"
            ]

        deadline = time.monotonic() + 60
        while unpaid():
            assert time.monotonic() < deadline, f"orders never paid: {unpaid()}"
            time.sleep(0.2)
        listing = client.get("/v1/queues/payments/dead").json()
        assert listing["items"] == []

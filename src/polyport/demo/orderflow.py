"""The guide's order flow on message queues: payments, then notifications.

    POST /v1/queues/payments {"order_id": 7}      (or ctx.enqueue(payments, …) in a handler)
        └─▶ payments consumer: charges the order with the provider and holds the
            message until the provider settled it (retried with backoff while the
            provider cannot be reached; a request that can never succeed — no such
            order — ends as a dead letter after 3 attempts)
              └─▶ provider ──signed webhook──▶ /hooks/payments: the order is paid
                    └─▶ notifications queue ──▶ notifications consumer: "sends" the
                        receipt (records it; a real shop would mail it)

Both queues live in the node's broker (the SQLite file by default): a node
killed mid-flow finds every accepted message there when it starts again, and
the messages its consumers held come back after their lease. Message ids make
each step once: ``pay-order-7`` is charged once however often it is sent, and
``receipt-{payment}`` sent once however often the provider calls back.
"""

from __future__ import annotations

import asyncio
import logging
import time

from pydantic import BaseModel, Field

from polyport.core.queues import Backoff
from polyport.demo.shop import Id, OrderStatus, _order, shop, store

log = logging.getLogger("polyport.demo.orderflow")

SCHEMA = """
CREATE TABLE IF NOT EXISTS shop_notifications (
    id TEXT PRIMARY KEY, user_id INTEGER NOT NULL, order_id INTEGER NOT NULL,
    text TEXT NOT NULL, sent REAL NOT NULL
);
"""


class PaymentRequest(BaseModel):
    """Charge an order: what the payments queue carries."""

    order_id: Id
    card: str = Field(default="4242 4242 4242 4242", pattern=r"^[0-9 ]{12,23}$")


class Notification(BaseModel):
    """A message for a customer: what the notifications queue carries."""

    user_id: Id
    order_id: Id
    text: str = Field(max_length=500)


payments = shop.queue(
    "payments",
    PaymentRequest,
    description="Charge an order with the payment provider",
    scopes=("payments:send",),
)
notifications = shop.queue(
    "notifications", Notification, description="Tell a customer what happened to an order"
)


@shop.on_startup
async def _tables() -> None:
    store.db.executescript(SCHEMA)


#: Seconds a payment consumer waits for the provider's webhook before it tries again later.
SETTLE_WAIT = 10.0


@payments.consumer(
    concurrency=4,
    max_attempts=3,
    backoff=Backoff(initial=0.5, max=5),
    timeout=SETTLE_WAIT + 20,
    lease=5,  # a killed node's payments are taken up again after 5 s
)
async def process_payment(request: PaymentRequest) -> None:
    """Charge the order, and hold the message until the provider settled the payment.

    Done when the order is paid (or no longer pending), or when its payment
    was declined (the customer must pay another way). A payment still
    ``processing`` that the provider no longer knows (the node and its
    simulated provider were killed mid-flow) is marked failed and charged
    again; one it still knows is waited for. So a message leaves the queue
    only once its order's fate is known, and a crash anywhere loses no order.
    """
    from polyport.demo.payments import charge

    order_id = request.order_id
    _order(order_id)  # NotFound: retried, then a dead letter
    if await _settled(order_id):
        return
    processing = store.one(
        "SELECT id FROM shop_payments WHERE order_id=? AND status='processing'", order_id
    )
    if processing is not None and not await _provider_knows(processing[0]):
        log.warning("payment %s of order %d was lost by the provider", processing[0], order_id)
        store.run(
            "UPDATE shop_payments SET status='failed', failure_reason='provider_lost', "
            "updated=? WHERE id=? AND status='processing'",
            time.time(),
            processing[0],
        )
        processing = None
    if processing is None:
        await charge(order_id, request.card)
    deadline = time.monotonic() + SETTLE_WAIT
    while time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        if await _settled(order_id):
            return
    raise TimeoutError(f"order {order_id}: the provider has not settled its payment yet")


async def _settled(order_id: int) -> bool:
    """Whether the order's payment is over: the order is no longer pending, or declined."""
    if _order(order_id).status != OrderStatus.PENDING:
        return True
    declined = store.one(
        "SELECT 1 FROM shop_payments WHERE order_id=? AND status='failed' "
        "AND failure_reason IS NOT 'provider_lost'",
        order_id,
    )
    return declined is not None


async def _provider_knows(payment_id: str) -> bool:
    from polyport.demo.payments import provider
    from polyport.demo.provider import request

    running = provider.running
    if running is None:
        return False
    status, _ = await request("GET", f"{running.url}/v1/payments/{payment_id}", b"", {})
    return status == 200


async def notify_paid(user_id: int, order_id: int, payment_id: str) -> None:
    """Queue the receipt of a paid order (once per payment, whoever calls)."""
    await notifications.send(
        Notification(user_id=user_id, order_id=order_id, text=f"Order {order_id} is paid."),
        id=f"receipt-{payment_id}",
        key=f"user-{user_id}",
    )


@notifications.consumer(concurrency=2)
async def send_notification(note: Notification) -> None:
    """Deliver a notification: here, record it (a real shop would mail or push it)."""
    store.run(
        "INSERT OR IGNORE INTO shop_notifications (id, user_id, order_id, text, sent) "
        "VALUES (?, ?, ?, ?, ?)",
        f"{note.order_id}-{note.user_id}",
        note.user_id,
        note.order_id,
        note.text,
        time.time(),
    )
    log.info("notified user %d: %s", note.user_id, note.text)

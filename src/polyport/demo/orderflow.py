"""The guide's order flow on message queues: payments, then notifications.

    POST /v1/queues/payments {"order_id": 7}      (or ctx.enqueue(payments, …) in a handler)
        └─▶ payments consumer: charges the order with the provider (retried with
            backoff while the provider cannot be reached; a request that can never
            succeed — no such order — ends as a dead letter after 3 attempts)
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


@payments.consumer(concurrency=4, max_attempts=3, backoff=Backoff(initial=0.5, max=5))
async def process_payment(request: PaymentRequest) -> None:
    """Charge the order, unless it is paid already or a payment is under way (a repeat)."""
    from polyport.demo.payments import charge

    order = _order(request.order_id)  # NotFound: retried, then a dead letter
    if order.status != OrderStatus.PENDING:
        log.info("order %d is %s: nothing to charge", order.id, order.status.value)
        return
    if store.one(
        "SELECT 1 FROM shop_payments WHERE order_id=? AND status IN ('processing', 'succeeded')",
        order.id,
    ):
        return
    await charge(order.id, request.card)


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

"""The guide's payment flow, on the demo service: a payment provider that calls back.

Imported by :mod:`polyport.demo.shop` so that one service carries both examples::

    client ──pay_order(7)──▶ shop ──POST /v1/payments──▶ provider (loopback, own port)
                               ▲                            │ a moment later
                               └── POST /hooks/payments ◀───┘ Standard Webhooks, signed
    shop: order 7 pending → paid, publishes orders.updated and orders.paid
          ──▶ every subscriber: SSE, WebSocket, polling, and outbound webhooks (/v1/webhooks)

The provider (:mod:`polyport.demo.provider`) is started by the shop's start-up
hook on an ephemeral loopback port and stopped with the node. The secret both
sides share is ``hooks.secrets.payments`` when set, else a fresh ``whsec_…``
per process (printed nowhere: nobody else needs it).
"""

from __future__ import annotations

import logging
import time
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

import orjson
from pydantic import BaseModel, Field

from polyport import Conflict, InvalidArgument, Unavailable
from polyport.demo import orderflow
from polyport.demo.provider import PaymentProvider, post
from polyport.demo.shop import Id, OrderStatus, _order, _ts, orders, shop, store
from polyport.demo.store import money
from polyport.settings import Settings
from polyport.webhooks import StandardWebhooks, WebhookDelivery, new_secret

log = logging.getLogger("polyport.demo.payments")

RECEIVER = "payments"
CURRENCY = "EUR"
#: Seconds the provider takes to settle a payment (tests shorten it).
SETTLE_DELAY = 0.5

SCHEMA = """
CREATE TABLE IF NOT EXISTS shop_payments (
    id TEXT PRIMARY KEY, order_id INTEGER NOT NULL, status TEXT NOT NULL,
    amount TEXT NOT NULL, currency TEXT NOT NULL, failure_reason TEXT,
    created REAL NOT NULL, updated REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS shop_payments_by_order ON shop_payments (order_id);
"""

Card = Annotated[str, Field(pattern=r"^[0-9 ]{12,23}$")]


class Payment(BaseModel):
    """A payment of an order, as the shop records it."""

    id: str
    order_id: int
    status: Literal["processing", "succeeded", "failed"]
    amount: Decimal
    currency: str
    failure_reason: str | None = None
    created_at: datetime


class OrderPaid(BaseModel):
    """An order was paid: the provider confirmed the payment."""

    order_id: int
    user_id: int
    payment_id: str
    amount: Decimal
    currency: str
    paid_at: datetime


class PaymentData(BaseModel):
    """The provider's payment, in its webhook."""

    id: str
    amount: Decimal
    currency: str
    reference: str
    status: str
    failure_reason: str | None = None


class PaymentWebhook(BaseModel):
    """What the provider posts to ``/hooks/payments`` (Standard Webhooks' payload shape)."""

    type: Literal["payment.succeeded", "payment.failed"]
    timestamp: datetime
    data: PaymentData


OrderPaidEvent = shop.event(
    "orders.paid",
    OrderPaid,
    description="An order was paid (the payment provider's webhook confirmed it).",
)


class _Provider:
    """The running provider and the shop's secret for it, set by the start-up hook."""

    def __init__(self) -> None:
        self.secret = new_secret()
        self.running: PaymentProvider | None = None
        self.webhook_url = ""

    def current_secret(self) -> str:
        return self.secret


provider = _Provider()


@shop.on_startup
async def _start_provider(settings: Settings) -> None:
    store.db.executescript(SCHEMA)
    configured = settings.hooks.secrets.get(RECEIVER)
    provider.secret = configured.get_secret_value() if configured else new_secret()
    running = PaymentProvider(provider.secret, delay=SETTLE_DELAY)
    await running.start()
    provider.running = running
    host = settings.host if settings.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
    shown = f"[{host}]" if ":" in host else host
    provider.webhook_url = f"http://{shown}:{settings.port}/hooks/{RECEIVER}"
    log.info("payment provider at %s calls back %s", running.url, provider.webhook_url)


@shop.on_shutdown
async def _stop_provider() -> None:
    if provider.running is not None:
        await provider.running.stop()
        provider.running = None


def _payment(row: tuple[object, ...]) -> Payment:
    return Payment(
        id=row[0],
        order_id=row[1],
        status=row[2],
        amount=money(row[3]),
        currency=row[4],
        failure_reason=row[5],
        created_at=_ts(row[6]),  # type: ignore[arg-type]
    )


_PAYMENT = (
    "SELECT id, order_id, status, amount, currency, failure_reason, created FROM shop_payments"
)


@shop.method
async def pay_order(order_id: Id, card: Card = "4242 4242 4242 4242") -> Payment:
    """Pay a pending order with the (simulated) payment provider.

    The answer says ``processing``: the provider confirms a moment later with a
    signed webhook to ``/hooks/payments``, and only then is the order paid
    (``orders.paid``). The card 4000 0000 0000 0002 is declined.

    Args:
        order_id: The order to pay.
        card: A test card number.
    """
    order = _order(order_id)
    if order.status != OrderStatus.PENDING:
        raise Conflict(f"order {order_id} is {order.status.value}, not pending")
    if store.one(f"{_PAYMENT} WHERE order_id=? AND status='processing'", order_id):
        raise Conflict(f"order {order_id} already has a payment in progress")
    return await charge(order_id, card)


async def charge(order_id: int, card: str) -> Payment:
    """Ask the provider to charge a pending order; the payment starts ``processing``."""
    order = _order(order_id)
    if order.total <= 0:
        # Nothing to charge (its products cost nothing): the order's state, not the request.
        raise Conflict(f"order {order_id} has nothing to pay")
    running = provider.running
    if running is None:
        raise Unavailable("the payment provider is not running")
    request = {
        "amount": str(order.total),
        "currency": CURRENCY,
        "reference": f"order-{order_id}",
        "webhook_url": provider.webhook_url,
        "card": card,
    }
    try:
        status, answer = await post(
            f"{running.url}/v1/payments",
            orjson.dumps(request),
            {"content-type": "application/json"},
            within=10,
        )
    except (OSError, TimeoutError, ValueError) as exc:
        raise Unavailable(f"the payment provider cannot be reached: {exc}") from exc
    if status != 201:
        raise InvalidArgument(f"the payment provider refused the payment ({status})")
    created = orjson.loads(answer)
    now = time.time()
    store.run(
        "INSERT INTO shop_payments (id, order_id, status, amount, currency, created, updated) "
        "VALUES (?, ?, 'processing', ?, ?, ?, ?)",
        created["id"],
        order_id,
        str(order.total),
        CURRENCY,
        now,
        now,
    )
    row = store.one(f"{_PAYMENT} WHERE id=?", created["id"])
    assert row is not None
    return _payment(row)


@shop.method
async def get_payments(order_id: Id) -> list[Payment]:
    """The payments attempted for an order, oldest first.

    Args:
        order_id: The order.
    """
    _order(order_id)
    return [_payment(r) for r in store.all(f"{_PAYMENT} WHERE order_id=? ORDER BY rowid", order_id)]


@shop.webhook_receiver(
    RECEIVER,
    verify=StandardWebhooks(provider.current_secret),
    max_attempts=8,
    description="Payment results from the (simulated) payment provider",
)
async def payment_webhook(event: PaymentWebhook, delivery: WebhookDelivery) -> None:
    """Record the payment's outcome; a success marks the order paid and publishes it.

    Runs from the receiver's inbox, once per delivery id. The updates are
    conditional, so a provider that sends the same outcome under two ids
    (it happens) still pays an order once.
    """
    payment = event.data
    if not payment.reference.startswith("order-") or not payment.reference[6:].isdigit():
        log.warning("payment webhook %s names no order: %r", delivery.id, payment.reference)
        return
    order_id = int(payment.reference[6:])
    now = time.time()
    store.run(
        "UPDATE shop_payments SET status=?, failure_reason=?, updated=? "
        "WHERE id=? AND status='processing'",
        payment.status,
        payment.failure_reason,
        now,
        payment.id,
    )
    if event.type == "payment.failed":
        log.info("payment %s of order %d failed: %s", payment.id, order_id, payment.failure_reason)
        return
    order = _order(order_id)
    if money(payment.amount) != order.total:
        # Raised: the delivery is retried, then kept as a dead letter for a human.
        raise ValueError(
            f"payment {payment.id} is {payment.amount}, order {order_id} {order.total}"
        )
    marked = store.run(
        "UPDATE shop_orders SET status=?, updated=? WHERE id=? AND status=?",
        OrderStatus.PAID.value,
        now,
        order_id,
        OrderStatus.PENDING.value,
    )
    if marked.rowcount != 1:
        # Already paid (a second notice), or cancelled meanwhile: a real shop refunds.
        log.warning("payment %s: order %d is %s", payment.id, order_id, order.status.value)
        return
    paid = _order(order_id)
    await orderflow.notify_paid(paid.user_id, order_id, payment.id)
    await orders.events["updated"].publish(paid)
    await OrderPaidEvent.publish(
        OrderPaid(
            order_id=order_id,
            user_id=paid.user_id,
            payment_id=payment.id,
            amount=paid.total,
            currency=payment.currency,
            paid_at=_ts(now),
        )
    )

"""A service with one receiver per scheme and behaviour, and helpers to sign for it."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import threading
import time
import types
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import BaseModel, Field
from standardwebhooks.webhooks import Webhook

from polyport import Context, Service, Settings
from polyport.testing import RunningNode, serve_in_thread
from polyport.webhooks import GitHub, StandardWebhooks, Stripe, WebhookDelivery

STD_SECRET = "whsec_" + base64.b64encode(b"polyport-test-secret-32-bytes!!!").decode()
OTHER_SECRET = "whsec_" + base64.b64encode(b"another-secret-of-thirty-two-by!").decode()
GITHUB_SECRET = "It's a Secret to Everybody"
STRIPE_SECRET = "whsec_stripe_endpoint_secret_for_tests"
#: The edges these tests serve: the receivers, and REST for the OpenAPI document.
EDGES = ["rest", "hooks"]


class Recorder:
    """What the handlers saw, from the node's thread; waited on from the test's."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any, WebhookDelivery | None]] = []
        self.failures: dict[str, int] = {}
        self.gate = threading.Event()
        self.gate.set()
        self.active = 0
        self.most_active = 0
        self._changed = threading.Condition()

    def reset(self) -> None:
        with self._changed:
            self.calls.clear()
            self.failures.clear()
            self.gate.set()
            self.active = self.most_active = 0

    def record(self, receiver: str, body: Any, delivery: WebhookDelivery | None) -> None:
        with self._changed:
            self.calls.append((receiver, body, delivery))
            self._changed.notify_all()

    def of(self, receiver: str) -> list[tuple[str, Any, WebhookDelivery | None]]:
        with self._changed:
            return [c for c in self.calls if c[0] == receiver]

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 15.0) -> None:
        """Block until ``predicate()`` holds; fail the test if it never does."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    pytest.fail(f"gave up waiting; calls so far: {self.calls}")
                self._changed.wait(min(left, 0.05))


recorder = Recorder()
service = Service("hooklab", description="Receivers for the hooks edge tests.")


class Payment(BaseModel):
    type: str = Field(pattern=r"^payment\.")
    amount: int = Field(ge=0)


@service.method(public=True)
async def ping() -> str:
    """Something for REST to serve."""
    return "pong"


@service.webhook_receiver("std", verify=StandardWebhooks(STD_SECRET))
async def std_hook(body: dict[str, Any], delivery: WebhookDelivery, ctx: Context) -> None:
    assert ctx.edge == "hooks" and ctx.request_id == delivery.id
    recorder.record("std", body, delivery)


@service.webhook_receiver("rotating", verify=StandardWebhooks([OTHER_SECRET, STD_SECRET]))
def rotating_hook(body: Any) -> None:
    """A synchronous handler (runs in a thread) behind a verifier with two secrets."""
    recorder.record("rotating", body, None)


@service.webhook_receiver("typed", verify=StandardWebhooks(STD_SECRET))
async def typed_hook(payment: Payment) -> None:
    recorder.record("typed", payment, None)


@service.webhook_receiver("flaky", verify=StandardWebhooks(STD_SECRET), max_attempts=5)
async def flaky_hook(body: dict[str, Any], delivery: WebhookDelivery) -> None:
    """Waits for the gate, then fails while failures are owed, then records."""
    while not recorder.gate.is_set():  # cancellable, unlike a thread blocked on the event
        await asyncio.sleep(0.01)
    owed = recorder.failures.get(delivery.id, 0)
    if owed > 0:
        recorder.failures[delivery.id] = owed - 1
        raise RuntimeError(f"planned failure, {owed - 1} more to come")
    recorder.record("flaky", body, delivery)


@service.webhook_receiver("doomed", verify=StandardWebhooks(STD_SECRET), max_attempts=2)
async def doomed_hook(body: dict[str, Any], delivery: WebhookDelivery) -> None:
    if recorder.failures.get("doomed", 0) > 0:
        raise ValueError("this handler always fails")
    recorder.record("doomed", body, delivery)


@service.webhook_receiver("busy", verify=StandardWebhooks(STD_SECRET))
async def busy_hook(body: dict[str, Any], delivery: WebhookDelivery) -> None:
    """Holds the gate like ``flaky``, and counts how many of it run at once."""
    recorder.active += 1
    recorder.most_active = max(recorder.most_active, recorder.active)
    try:
        while not recorder.gate.is_set():
            await asyncio.sleep(0.01)
        recorder.record("busy", body, delivery)
    finally:
        recorder.active -= 1


@service.webhook_receiver("github", verify=GitHub(GITHUB_SECRET))
async def github_hook(body: dict[str, Any], delivery: WebhookDelivery) -> None:
    recorder.record("github", body, delivery)


@service.webhook_receiver("stripe", verify=Stripe(STRIPE_SECRET))
async def stripe_hook(event: dict[str, Any], delivery: WebhookDelivery) -> None:
    recorder.record("stripe", event, delivery)


@service.webhook_receiver("configured", verify=StandardWebhooks())
async def configured_hook(body: Any) -> None:
    """Its secret comes from the settings: hooks.secrets.configured."""
    recorder.record("configured", body, None)


def settings(db_path: str, **extra: Any) -> Settings:
    """Fast retries and polls, so that waiting for an outcome is short."""
    hooks = {
        "retry_base": 0.01,
        "retry_max": 0.05,
        "poll_interval": 0.05,
        "secrets": {"configured": STD_SECRET},
    } | extra.pop("hooks", {})
    return Settings.model_validate(
        {"dev": True, "database": db_path, "hooks": hooks, "rate_limit": {"enabled": False}} | extra
    )


@contextlib.contextmanager
def serve(db_path: str, **extra: Any) -> Iterator[RunningNode]:
    with serve_in_thread(service, settings(db_path, **extra), edges=EDGES) as node:
        yield node


def standard_headers(
    body: bytes,
    *,
    msg_id: str = "msg_1",
    secret: str = STD_SECRET,
    timestamp: datetime | None = None,
) -> dict[str, str]:
    """Headers signed by the reference ``standardwebhooks`` library."""
    when = timestamp or datetime.now(tz=UTC)
    signature = Webhook(secret).sign(msg_id=msg_id, timestamp=when, data=body.decode())
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(when.timestamp())),
        "webhook-signature": signature,
        "content-type": "application/json",
    }


def github_signature(secret: str, body: bytes) -> str:
    """``X-Hub-Signature-256`` as GitHub's documentation computes it."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def stripe_signature(secret: str, body: bytes, timestamp: int) -> str:
    """The ``v1`` of ``Stripe-Signature`` as Stripe's documentation computes it."""
    signed_payload = f"{timestamp}.".encode() + body
    return hmac.new(secret.encode("utf-8"), signed_payload, hashlib.sha256).hexdigest()


@pytest.fixture
def lab() -> Iterator[types.SimpleNamespace]:
    """This module's service, recorder and signing helpers (conftest is no package)."""
    recorder.reset()
    yield types.SimpleNamespace(**globals())
    recorder.reset()

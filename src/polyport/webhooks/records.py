"""What the webhook outbox stores: endpoints, messages, deliveries and attempts.

The types the webhooks edge and its store share. A **message** is one event
as it will be POSTed (its envelope, kept apart from the event log, which
trims); a **delivery** is one message owed to one endpoint, identified by
``(endpoint_id, event_id)`` — the event id is also the ``webhook-id``, so
every attempt of a delivery carries the same id. An **attempt** is one POST.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

DeliveryStatus = Literal["pending", "delivered", "failed"]


@dataclass(frozen=True, slots=True)
class Secret:
    """A ``whsec_…`` signing secret; ``expires`` is set once a newer one replaced it."""

    value: str
    expires: float | None = None


#: How an owner authenticated: an API key of the configuration (whose scopes are read
#: again at delivery), a token (JWT or ticket: the scopes it carried), or none.
OwnerVia = Literal["key", "token", "anonymous"]


@dataclass(frozen=True, slots=True)
class Owner:
    """Who created (or last re-aimed) a subscription: its deliveries are what they may read."""

    subject: str
    scopes: tuple[str, ...]
    via: OwnerVia


@dataclass(slots=True)
class WebhookEndpoint:
    """A subscription: where to POST which event types, and its health."""

    id: str
    url: str
    description: str
    event_types: tuple[str, ...]  # patterns; empty: every event type
    secrets: tuple[Secret, ...]  # newest first
    enabled: bool
    created: float
    updated: float
    disabled_reason: str | None = None
    disabled_at: float | None = None
    failing_since: float | None = None
    #: None: created before owners were recorded (see ``docs/webhooks.md``).
    owner: Owner | None = None


@dataclass(frozen=True, slots=True)
class Message:
    """One event as POSTed: ``body`` is the JSON envelope, signed as is."""

    event_id: str
    type: str
    time: float
    body: bytes


@dataclass(slots=True)
class Delivery:
    """One message owed to one endpoint, and how its last attempt went."""

    endpoint_id: str
    event_id: str
    type: str
    created: float
    status: DeliveryStatus
    attempts: int
    retry_base: int  # attempts made before the current round (a replay starts a new one)
    next_at: float | None
    last_at: float | None = None
    response_code: int | None = None
    latency: float | None = None
    response_body: str | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Attempt:
    """One POST of a delivery: what came back, or why nothing did."""

    number: int
    time: float
    response_code: int | None
    latency: float | None
    error: str | None
    response_body: str | None


@dataclass(frozen=True, slots=True)
class Claim:
    """A delivery this node holds a lease on and is about to attempt."""

    endpoint_id: str
    event_id: str
    attempts: int
    retry_base: int
    lease_until: float


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """The outcome of one attempt, as the store records it.

    ``status`` is the delivery's status afterwards and ``next_at`` its next
    attempt when still pending.
    """

    endpoint_id: str
    event_id: str
    number: int
    time: float
    status: DeliveryStatus
    next_at: float | None
    response_code: int | None
    latency: float | None
    error: str | None
    response_body: str | None

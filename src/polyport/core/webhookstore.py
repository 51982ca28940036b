"""The webhook store port: endpoints and their secrets, the outbox, leases, the delivery log.

What the webhooks edge keeps, and every backend (SQLite now; PostgreSQL,
Redis, NATS later) implements. Backends pass the one contract suite in
``tests/contract/webhookstore_contract.py``.

The records: an **endpoint** is a subscription (where to POST which event
types, signed with which secrets). A **message** is one event as it will be
POSTed — its envelope, kept apart from the event log, which trims. A
**delivery** is one message owed to one endpoint, named by
``(endpoint_id, event_id)``; the event id is also the ``webhook-id``, so every
attempt of a delivery carries the same id. An **attempt** is one POST.

The store is split by who needs what (:class:`WebhookEndpoints`,
:class:`DeliveryOutbox`, :class:`DeliveryLeases`, :class:`DeliveryLog`);
:class:`WebhookStore` is all four, opened and closed as one.

Guarantees every backend gives (the contract suite checks each):

* **After the events, never before.** Deliveries recorded by
  :meth:`DeliveryOutbox.fan_out` become durable together with the events they
  derive from or after them, never before: a backend sharing a transaction
  with the event log writes them after the events' rows; one that does not,
  writes them only once the events are durable. No receiver is ever sent an
  event a crash then took back.
* **A claim is a lease.** Only deliveries that are pending, due, and leased
  to no one (or whose lease has passed) are claimed, and one claim wins: two
  nodes never hold the same delivery. A holder that dies leaves leases that
  simply expire.
* **Final states never change** through delivery: an outcome is written only
  by the lease's holder over a pending delivery, so a node whose lease ran out
  cannot overwrite the node that took over. ``delivered`` and ``failed``
  leave only by an explicit :meth:`DeliveryLog.requeue` or
  :meth:`DeliveryLog.recover` (the endpoint owner's replay), which starts a
  new round of attempts and keeps the earlier ones in the history.

Writes documented as "durable when this returns" are so at once; the others
(claims' outcomes, lease extensions, the fan-out) are durable, and seen by
other nodes, by the time the caller next yields to its event loop (SQLite
commits them with that loop iteration's other writes). One lost to a crash
leaves its delivery pending and leased: attempted again once the lease has
passed — at least once, never lost. Failures of the backend itself (a lost
connection, a full disk) propagate as the backend's exceptions: the world's
fault, not the caller's.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple, Protocol

DeliveryStatus = Literal["pending", "delivered", "failed"]
DELIVERY_STATUSES: tuple[DeliveryStatus, ...] = ("pending", "delivered", "failed")


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


class Owed(NamedTuple):
    """A delivery the fan-out records: ``event_id`` (of type ``type``) owed to an endpoint."""

    endpoint_id: str
    event_id: str
    type: str
    created: float


#: A delivery's name: ``(endpoint_id, event_id)``.
DeliveryKey = tuple[str, str]


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
    """A delivery its claimer holds a lease on and is about to attempt."""

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


class WebhookEndpoints(Protocol):
    """Subscriptions, shared by every node of a store, their secrets sealed at rest.

    Unknown ids are not errors: reads answer None, changes answer False or 0.
    """

    async def endpoints_version(self) -> int:
        """A number that every endpoint change (by any node) moves: reload when it does."""
        ...

    async def endpoint(self, endpoint_id: str) -> WebhookEndpoint | None: ...

    async def endpoints(
        self, limit: int | None = None, after: str | None = None
    ) -> list[WebhookEndpoint]:
        """Endpoints ordered by id: ``limit`` of them (None: all) after the id ``after``.

        Raises :class:`~polyport.webhooks.encryption.SecretsLocked` when a
        stored endpoint's secrets open with none of the configured keys.
        """
        ...

    async def save_endpoint(self, endpoint: WebhookEndpoint, *, new: bool = False) -> None:
        """Insert (``new``) or replace an endpoint; durable when this returns.

        Raises :class:`~polyport.core.errors.Conflict` when ``new`` and the id is taken.
        """
        ...

    async def delete_endpoint(self, endpoint_id: str) -> bool:
        """Forget an endpoint with its deliveries and their attempts; False if unknown."""
        ...

    async def set_failing_since(self, endpoint_id: str, since: float | None) -> None:
        """Record when the endpoint's current run of failures began (None: it succeeds)."""
        ...

    async def disable(self, endpoint_id: str, reason: str, at: float) -> int:
        """Disable an endpoint: its pending deliveries fail, together; how many did.

        :meth:`DeliveryLog.recover` brings them back once it is enabled again.
        """
        ...

    async def reseal(self) -> int:
        """Seal every endpoint's secrets under the current key; how many changed.

        Run at start: secrets stored in plain text (before a key was
        configured) or under an older key of the list are rewritten. Raises
        :class:`~polyport.webhooks.encryption.SecretsLocked` when a stored
        value opens with no configured key.
        """
        ...

    async def plaintext_count(self) -> int:
        """How many endpoints keep their secrets unencrypted."""
        ...


class DeliveryOutbox(Protocol):
    """Messages and the deliveries they owe, recorded as events are published."""

    @property
    def follows_log(self) -> bool:
        """Whether the store keeps a fan-out cursor into the node's event log.

        True when the store and the log outlive the process together (the
        SQLite store built over the SQLite log of the same file): the outbox
        then records with each fan-out the ``seq`` of the last event it
        covered, and at start fans out again the events after it — those a
        crash caught between the events' commit and their deliveries'. False
        when the log forgets its events at a restart (memory), where a stored
        ``seq`` would name nothing.
        """
        ...

    async def fan_out(
        self,
        messages: Iterable[Message],
        owed: Sequence[Owed],
        *,
        owner: str | None,
        lease_until: float | None,
        cursor: int | None,
    ) -> None:
        """Record messages and the deliveries they owe, and move the fan-out cursor.

        All or nothing: the deliveries and the cursor that says they exist
        are durable together, and never before the events they derive from
        (see the module's guarantees). Deliveries are due at once, leased to
        ``owner`` until ``lease_until`` (None: to whoever claims them first).
        A message or delivery that exists already is kept as it is, so the
        same events may be fanned out again safely. ``cursor`` (an event
        ``seq``; None: unchanged) only ever moves forward.
        """
        ...

    async def fanout_cursor(self) -> int:
        """The ``seq`` of the last logged event whose deliveries were recorded (0: none)."""
        ...

    async def add_single(self, message: Message, endpoint_id: str, now: float) -> None:
        """A message for one endpoint only (a test event), due now, durable when this returns."""
        ...

    async def messages(self, event_ids: Iterable[str]) -> dict[str, Message]:
        """The stored messages of these events, by event id (purged ones are absent)."""
        ...

    async def purge(self, before: float) -> int:
        """Drop finished deliveries created before ``before``, and messages nobody owes.

        Pending deliveries are never purged. Answers how many deliveries were dropped.
        """
        ...


class DeliveryLeases(Protocol):
    """Claiming due deliveries, holding them, and recording their outcomes.

    ``owner`` names the holder of a lease (one per node process, distinct
    between nodes sharing a store). Times are Unix seconds, given by the
    caller, so the store keeps no clock of its own.
    """

    async def claim_due(self, owner: str, now: float, limit: int, until: float) -> list[Claim]:
        """Lease to ``owner`` until ``until`` the ``limit`` deliveries due longest, at most.

        Only pending deliveries due by ``now`` whose lease is absent or passed
        are claimed; of claims racing for one delivery, exactly one wins.
        """
        ...

    async def extend_leases(self, owner: str, until: float) -> int:
        """Push every lease ``owner`` holds on a pending delivery to ``until``; how many.

        A node extends the leases of deliveries waiting in its memory for a
        free slot as well as those in flight, so none is taken over meanwhile.
        """
        ...

    async def release(self, owner: str, keys: Iterable[DeliveryKey]) -> None:
        """Give up ``owner``'s leases on these deliveries: due to anyone at once."""
        ...

    async def record(self, owner: str, results: Sequence[AttemptResult]) -> int:
        """Write attempt outcomes, each only if ``owner`` still leases a pending delivery.

        Each written outcome sets the delivery's status, next attempt and last
        answer, ends the lease, and adds the attempt to the history. An
        outcome whose lease was lost (it ran out and another node claimed the
        delivery) or whose delivery is final is dropped: final states never
        change here. Answers how many were written.
        """
        ...


class DeliveryLog(Protocol):
    """What was sent where, and the owner's ways back: replay and recovery."""

    async def deliveries(
        self,
        endpoint_id: str,
        *,
        status: DeliveryStatus | None = None,
        limit: int = 50,
        before: tuple[float, str] | None = None,
    ) -> list[Delivery]:
        """An endpoint's deliveries, newest first (by ``created``, then event id).

        ``before`` is the ``(created, event_id)`` of the last one of a previous page.
        """
        ...

    async def delivery(self, endpoint_id: str, event_id: str) -> Delivery | None: ...

    async def attempts(self, endpoint_id: str, event_id: str) -> list[Attempt]:
        """Every attempt of a delivery so far, over every round, oldest first."""
        ...

    async def requeue(self, endpoint_id: str, event_id: str, now: float) -> bool:
        """Replay: make a delivery due ``now`` as a fresh round of attempts.

        False when it is unknown, or pending and leased: being attempted, or held
        by a node that has not given it back yet (its lease must pass first).
        """
        ...

    async def recover(self, endpoint_id: str, since: float, until: float, now: float) -> int:
        """Requeue every failed delivery of an endpoint created in ``[since, until)``; how many."""
        ...


class WebhookStore(WebhookEndpoints, DeliveryOutbox, DeliveryLeases, DeliveryLog, Protocol):
    """Everything the webhooks edge keeps, opened once and closed once.

    The node builds it (choosing the backend) and hands it to the edge
    through :class:`~polyport.core.runtime.Runtime`; the edge opens it when
    it starts and closes it when it stops.
    """

    async def open(self) -> None:
        """Connect and create what is missing (tables, indexes, columns of older files)."""
        ...

    async def close(self) -> None:
        """Write what is pending and let go of the backend."""
        ...

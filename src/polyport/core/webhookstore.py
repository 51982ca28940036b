"""The webhook store port: endpoints and their secrets, the outbox, leases, the delivery log.

What the webhooks edge keeps. It is a composition over two ports every
engine implements — :class:`~polyport.core.webhookqueue.QueuedWebhookStore`
keeps deliveries on the leased :class:`~polyport.core.workqueue.WorkQueue`
and the rest (endpoints, attempt histories, the fan-out cursor) in a
:class:`~polyport.core.records.RecordStore` — and passes the one contract
suite in ``tests/contract/webhookstore_contract.py`` over each backend pair.

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
  :meth:`DeliveryOutbox.fan_out` become durable only once the events they
  derive from are: the store waits for the event log to say so before it
  writes them. No receiver is ever sent an event a crash then took back.
* **A claim is a lease.** Only deliveries that are pending, due, and leased
  to no one (or whose lease has passed) are claimed, and one claim wins: two
  nodes never hold the same delivery. A holder that dies leaves leases that
  simply expire. A :class:`Claim` carries its lease token, and only the
  current token extends, releases or settles the delivery.
* **Final states never change** through delivery: an outcome is written only
  under the current lease of a pending delivery, so a node whose lease ran
  out cannot overwrite (or add to the history of) the node that took over.
  ``delivered`` and ``failed`` leave only by an explicit
  :meth:`DeliveryLog.requeue` or :meth:`DeliveryLog.recover` (the endpoint
  owner's replay), which starts a new round of attempts and keeps the
  earlier ones in the history.

Writes documented as "durable when this returns" are so at once; the others
(claims' outcomes, lease extensions) are durable, and seen by other nodes, by
the time the caller next yields to its event loop. One lost to a crash
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
    #: The order the store recorded it in (larger is newer): the delivery log pages by it.
    seq: int
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
    """A delivery its claimer holds a lease on and is about to attempt.

    ``attempts`` were made before (the next is ``attempts + 1``), the last
    ``attempts - retry_base`` of them in this round. ``lease`` is the token
    that settles it; ``message`` is what to POST (None: a file from before
    lost it, and the delivery can only fail).
    """

    endpoint_id: str
    event_id: str
    created: float
    attempts: int
    retry_base: int
    lease: str
    lease_until: float
    message: Message | None


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """The outcome of one attempt under ``claim``, as the store records it.

    ``status`` is the delivery's status afterwards and ``next_at`` its next
    attempt when still pending.
    """

    claim: Claim
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
        """Forget an endpoint with its deliveries and their attempts; False if unknown.

        Endpoint ids are printable and hold no ``/`` (the API makes ``ep_…``).
        """
        ...

    async def set_failing_since(self, endpoint_id: str, since: float | None) -> None:
        """Record when the endpoint's current run of failures began (None: it succeeds)."""
        ...

    async def disable(self, endpoint_id: str, reason: str, at: float) -> int:
        """Disable an endpoint: its pending deliveries fail; how many did.

        Those being attempted under a live lease are left to their holder
        (whose outcome then stands). :meth:`DeliveryLog.recover` brings the
        failed ones back once it is enabled again; a disabled endpoint's
        deliveries are never claimed.
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

        True when the store and the log outlive the process together (both
        in the node's SQLite file, or both on a shared engine): the outbox
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
        now: float,
        cursor: int | None,
        owner: str | None = None,
        lease_until: float | None = None,
    ) -> list[Claim]:
        """Record the deliveries the messages owe, move the fan-out cursor, and claim them.

        Never durable before the events they derive from (the store waits for
        the log first; see the module's guarantees). Each delivery is due at
        once and carries its message (every ``owed`` names one of
        ``messages``). A delivery that exists already is kept as it is, so
        the same events may be fanned out again safely. ``cursor`` (an event
        ``seq``; None: unchanged) only ever moves forward, and only once the
        deliveries are durable. With ``owner``, the deliveries are then
        claimed for it until ``lease_until`` — with any others of the same
        endpoints due by ``now`` — and those claims are answered; without
        one, nothing is (the poller claims them).
        """
        ...

    async def lead_fan_out(self, owner: str, now: float, until: float) -> bool:
        """Hold (take, or keep) the fan-out lease for ``owner`` until ``until``; whether
        ``owner`` holds it now.

        Where several nodes append to the log the store follows, one of them at a
        time — the holder — fans out every node's events from the cursor; a holder
        that dies loses the lease when it runs out, and the next one goes on from
        the cursor. Fanning out again what the last holder did is harmless
        (deliveries that exist are kept), so two holders for a moment lose nothing
        and send nothing twice.
        """
        ...

    async def fanout_cursor(self) -> int:
        """The ``seq`` of the last logged event whose deliveries were recorded (0: none)."""
        ...

    async def add_single(self, message: Message, endpoint_id: str, now: float) -> None:
        """A message for one endpoint only (a test event), due now, durable when this returns."""
        ...

    async def purge(self, before: float) -> int:
        """Drop deliveries that finished (delivered or failed) before ``before``, with
        their history.

        Pending deliveries are never purged. Answers how many were dropped.
        """
        ...


class DeliveryLeases(Protocol):
    """Claiming due deliveries, holding them, and recording their outcomes.

    ``owner`` names the claimer (one per node process, distinct between
    nodes sharing a store); the lease token of each :class:`Claim` is what
    holds it. Times are Unix seconds, given by the caller, so the store keeps
    no clock of its own.
    """

    async def claim_due(self, owner: str, now: float, limit: int, until: float) -> list[Claim]:
        """Lease to ``owner`` until ``until`` at most ``limit`` due deliveries, those due
        longest first.

        Only pending deliveries of enabled endpoints, due by ``now``, whose
        lease is absent or passed are claimed; of claims racing for one
        delivery, exactly one wins.
        """
        ...

    async def extend_leases(self, claims: Iterable[Claim], until: float) -> int:
        """Push the leases of those ``claims`` still current to ``until``; how many were.

        A node extends the leases of deliveries waiting in its memory for a
        free slot as well as those in flight, so none is taken over meanwhile.
        """
        ...

    async def release(self, claims: Iterable[Claim], now: float) -> int:
        """Give up these claims unattempted: due to anyone at ``now``; how many were current."""
        ...

    async def record(self, results: Sequence[AttemptResult]) -> int:
        """Write attempt outcomes, each only if its claim is still the current lease.

        Each written outcome sets the delivery's status, next attempt and last
        answer, ends the lease, and adds the attempt to the history. An
        outcome whose lease was lost (it ran out and another node claimed the
        delivery) is dropped: final states never change here. Answers how
        many were written.
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
        before: int | None = None,
    ) -> list[Delivery]:
        """An endpoint's deliveries, the last recorded first (by ``seq``).

        ``before`` is the ``seq`` of the last one of a previous page.
        """
        ...

    async def delivery(self, endpoint_id: str, event_id: str) -> Delivery | None: ...

    async def attempts(self, endpoint_id: str, event_id: str) -> list[Attempt]:
        """Every attempt of a delivery so far, over every round, oldest first."""
        ...

    async def requeue(self, endpoint_id: str, event_id: str, now: float) -> bool:
        """Replay: make a delivery due ``now`` as a fresh round of attempts.

        False when it is unknown, or leased: being attempted, or held by a node
        that has not given it back yet (its lease must pass and another claim
        settle it first).
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
        """Connect and create what is missing (and move what older files kept elsewhere)."""
        ...

    async def close(self) -> None:
        """Write what is pending and let go of the backend."""
        ...

"""Message queues in the contract: a queue, its message model, its consumer.

    payments = shop.queue("payments", PaymentRequest)

    @payments.consumer(concurrency=4, max_attempts=5, backoff=Backoff(initial=1, max=60))
    async def pay(request: PaymentRequest, ctx: Context, message: QueueMessage) -> None: ...

    await payments.send(PaymentRequest(order=42, cents=1999), id="order-42", key="customer-7")

A queue is work for *one* handler, run at least once by whichever node takes
it; to have one event reach several queues (pub/sub into work queues), route
its event type to each (:meth:`Queue.route`). Declaring records options
only; the node's :class:`~polyport.core.queuerunner.QueueRunner` runs them on
its broker (see ``docs/queues.md``).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, overload

from polyport.core.errors import ContractError

if TYPE_CHECKING:
    from polyport.core.contract import EventType, Service

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class Backoff:
    """How long a failed message waits before its next attempt.

    ``initial`` seconds after the first failure, times ``factor`` after each
    next one, at most ``max``; each wait is shortened at random by up to
    ``jitter`` of itself, so messages that failed together do not retry together.
    """

    initial: float = 1.0
    factor: float = 2.0
    max: float = 300.0
    jitter: float = 0.25

    def __post_init__(self) -> None:
        if not (0 <= self.initial <= self.max <= 7 * 86400):
            raise ContractError("backoff: 0 <= initial <= max <= 7 days")
        if not 1 <= self.factor <= 100:
            raise ContractError("backoff: factor must be from 1 to 100")
        if not 0 <= self.jitter < 1:
            raise ContractError("backoff: jitter must be from 0 to below 1")

    def delay(self, failures: int) -> float:
        """Seconds to wait after the ``failures``-th failure (from 1)."""
        wait = min(self.max, self.initial * self.factor ** min(max(failures - 1, 0), 60))
        return wait * (1.0 - random.uniform(0.0, self.jitter))


@dataclass(frozen=True, slots=True)
class QueueMessage:
    """A message as its consumer sees it (ask for it by annotation)."""

    id: str
    queue: str
    #: 1 on the first run; a retry or a lost lease counts one more.
    attempt: int
    #: Its ordering key, if it was sent with one.
    key: str | None
    #: When it was sent, in Unix seconds.
    sent: float
    headers: Mapping[str, str] = field(default_factory=dict)
    #: What the previous attempt failed with.
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Sent:
    """What a send answers: the message's id, and whether the queue already had it."""

    id: str
    queue: str
    duplicate: bool = False


@dataclass(slots=True)
class Consumer:
    """A queue's handler and how it runs."""

    fn: Callable[..., Any]
    #: Handlers running at once on a node.
    concurrency: int
    #: Messages a node holds at once (running and received ahead).
    prefetch: int
    #: Runs before a failing message becomes a dead letter.
    max_attempts: int
    backoff: Backoff
    #: A run still going after this many seconds has failed.
    timeout: float
    #: Seconds a node's hold on a message lasts unrenewed; it renews it every third
    #: of that while the handler runs, so a dead node's messages return after it.
    lease: float


@dataclass(frozen=True, slots=True)
class EventRoute:
    """Every event of ``event`` is sent to a queue, as ``transform`` makes it."""

    event: EventType
    transform: Callable[[Any], Any] | None = None


_HEX = frozenset("0123456789abcdef")


def traceparent_of(trace_id: str | None) -> str | None:
    """A W3C ``traceparent`` continuing ``trace_id`` (a new span), or None without one."""
    if trace_id is None or len(trace_id) != 32 or not set(trace_id) <= _HEX:
        return None
    return f"00-{trace_id}-{random.getrandbits(64):016x}-01"


def trace_id_of(traceparent: str | None) -> str | None:
    """The trace id of a W3C ``traceparent`` header, or None if it is not one."""
    if traceparent is None:
        return None
    parts = traceparent.split("-")
    if len(parts) != 4 or len(parts[1]) != 32 or not set(parts[1]) <= _HEX:
        return None
    return parts[1]


class QueueSender(Protocol):
    """What sends a queue's messages: the node serving the service (its queue runner)."""

    async def send(
        self,
        queue: Queue,
        data: Any,
        *,
        id: str | None = None,
        key: str | None = None,
        delay: float | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Sent: ...

    async def call(
        self,
        queue: Queue,
        data: Any,
        *,
        timeout: float = 30.0,  # noqa: ASYNC109 (the wait is the call's: DeadlineExceeded)
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any: ...


class Queue:
    """A durable queue of messages of one model, declared with :meth:`Service.queue`."""

    def __init__(
        self,
        service: Service,
        name: str,
        model: Any,
        *,
        description: str | None = None,
        public: bool = False,
        scopes: frozenset[str] = frozenset(),
        dedup_window: float = 86400.0,
    ) -> None:
        self.service = service
        self.name = name
        self.model = model
        self.description = description
        #: Who may send over HTTP: anyone (``public``), or callers holding ``scopes``.
        self.public = public
        self.scopes = scopes
        self.dedup_window = dedup_window
        self.handler: Consumer | None = None
        self.routes: list[EventRoute] = []

    def __repr__(self) -> str:
        return f"<Queue {self.service.name}.{self.name}>"

    @overload
    def consumer(self, fn: F) -> F: ...

    @overload
    def consumer(
        self,
        *,
        concurrency: int = ...,
        prefetch: int | None = ...,
        max_attempts: int = ...,
        backoff: Backoff | None = ...,
        timeout: float = ...,
        lease: float = ...,
    ) -> Callable[[F], F]: ...

    def consumer(
        self,
        fn: F | None = None,
        *,
        concurrency: int = 1,
        prefetch: int | None = None,
        max_attempts: int = 5,
        backoff: Backoff | None = None,
        timeout: float = 60.0,
        lease: float = 30.0,
    ) -> Any:
        """Declare the queue's handler: ``@payments.consumer`` or ``@payments.consumer(...)``.

        The handler takes the message (its one parameter annotated with
        neither :class:`~polyport.core.context.Context` nor
        :class:`QueueMessage`), validated against the queue's model; it
        succeeds by returning and fails by raising. A message that does not
        validate goes to the dead letters at once, never to the handler.
        """
        self.service._check_open()
        if self.handler is not None:
            raise ContractError(f"queue {self.name} has a consumer already")
        if not 1 <= concurrency <= 1000:
            raise ContractError(f"queue {self.name}: concurrency must be from 1 to 1000")
        prefetch = concurrency if prefetch is None else prefetch
        if not concurrency <= prefetch <= 10_000:
            raise ContractError(
                f"queue {self.name}: prefetch must be from concurrency ({concurrency}) to 10000"
            )
        if not 1 <= max_attempts <= 1000:
            raise ContractError(f"queue {self.name}: max_attempts must be from 1 to 1000")
        if not 0 < timeout <= 7 * 86400:
            raise ContractError(f"queue {self.name}: timeout must be above 0, at most 7 days")
        if not 1 <= lease <= 3600:
            raise ContractError(f"queue {self.name}: lease must be from 1 to 3600 seconds")
        options = (concurrency, prefetch, max_attempts, backoff or Backoff(), timeout, lease)

        def register(f: F) -> F:
            self.service._check_open()
            if self.handler is not None:
                raise ContractError(f"queue {self.name} has a consumer already")
            self.handler = Consumer(f, *options)
            return f

        return register(fn) if fn is not None else register

    def route(self, event: EventType, *, transform: Callable[[Any], Any] | None = None) -> None:
        """Send every ``event`` published to this queue too (its data, or ``transform(data)``).

        An event type may be routed to several queues: each gets every event,
        once (the message id is the event's id). Without ``transform`` the
        event's model must be the queue's; ``transform`` takes the event's data
        as JSON values (a dict for a model) and returns the message.
        """
        self.service._check_open()
        if event.service is not self.service:
            raise ContractError(f"queue {self.name}: {event.name} is another service's event")
        if transform is None and event.model is not self.model:
            raise ContractError(
                f"queue {self.name}: {event.name} carries another model than the queue's; "
                "give route(..., transform=) to make the message"
            )
        if any(r.event is event for r in self.routes):
            raise ContractError(f"queue {self.name}: {event.name} is routed here twice")
        self.routes.append(EventRoute(event, transform))

    async def send(
        self,
        data: Any,
        *,
        id: str | None = None,
        key: str | None = None,
        delay: float | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Sent:
        """Send one message: validated against the model, durable when this returns.

        ``id`` deduplicates (a second send of one id within the queue's
        ``dedup_window`` is stored once; the answer says ``duplicate``);
        messages sharing a ``key`` are handled one at a time, in order;
        ``delay`` holds it back that many seconds. Goes to the node serving
        the current call (as a publish does: see :attr:`Service.hub`).
        """
        return await self.service.queue_sender.send(
            self, data, id=id, key=key, delay=delay, headers=headers
        )

    async def call(
        self,
        data: Any,
        *,
        timeout: float = 30.0,  # noqa: ASYNC109 (the wait is the call's: DeadlineExceeded)
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """Send a request and wait for its consumer's return value (RPC over the broker).

        The message carries ``reply-to`` (this node's reply queue) and
        ``correlation-id`` headers, as AMQP's request/reply does; the consumer's
        result comes back as a message there. ``DeadlineExceeded`` after
        ``timeout`` seconds without a reply (the request may still be handled
        later); ``Internal`` when the consumer failed for good.
        """
        return await self.service.queue_sender.call(
            self, data, timeout=timeout, key=key, headers=headers
        )


__all__ = [
    "Backoff",
    "Consumer",
    "EventRoute",
    "Queue",
    "QueueMessage",
    "QueueSender",
    "Sent",
    "trace_id_of",
    "traceparent_of",
]

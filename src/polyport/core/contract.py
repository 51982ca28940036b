"""The service contract: what a developer declares once.

    shop = Service("shop", version=1)
    users = shop.resource("users", User)

    @users.get
    async def get_user(id: int) -> User: ...

    @shop.method
    async def multiply(a: int, b: int) -> int: ...

    OrderCreated = shop.event("orders.created", Order)

Declaring only records functions and options; :meth:`Service.spec` reads the
signatures into the type graph once, at start-up (see :mod:`polyport.core.spec`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar, overload

from pydantic import BaseModel, create_model

from polyport.core.errors import ContractError, Unavailable
from polyport.core.hub import SERVING_HUB
from polyport.core.queues import Queue, QueueSender
from polyport.core.raw import is_untyped

if TYPE_CHECKING:
    from polyport.core.events import Event
    from polyport.core.hub import EventHub
    from polyport.core.spec import ServiceSpec

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_QUEUE_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,99}$")
_EVENT_NAME = re.compile(r"^[a-z][a-z0-9_-]*(\.[a-z0-9_-]+)*$")
_CHANNEL_TEMPLATE = re.compile(
    r"^([a-z0-9_-]+|\{[a-z_][a-z0-9_]*\})(/([a-z0-9_-]+|\{[a-z_][a-z0-9_]*\}))*$"
)
#: An untyped event type's channels: every channel under a prefix, or every channel.
_UNTYPED_CHANNELS = re.compile(r"^([a-z0-9_-]+/)*#$")

Operation = Literal["get", "list", "create", "update", "delete"]


class MethodKind(StrEnum):
    UNARY = "unary"
    SERVER_STREAM = "server_stream"
    CLIENT_STREAM = "client_stream"
    BIDI_STREAM = "bidi_stream"


class Page(BaseModel, Generic[T]):
    """What a ``list`` handler may return to choose its own next cursor.

    A handler returning a plain list gets keyset pagination instead: the next
    cursor is the key of the last item whenever the page is full.
    """

    items: list[T]
    next_cursor: str | None = None


@dataclass(slots=True)
class Method:
    """A declared method: the function and the options it was declared with."""

    name: str
    fn: Callable[..., Any]
    kind: MethodKind | None  # None: decided from the signature
    public: bool = False
    scopes: frozenset[str] = frozenset()
    idempotent: bool = False
    timeout: float | None = None
    resource: Resource | None = None
    operation: Operation | None = None


_UNSET = object()


@dataclass(slots=True)
class EventType:
    """A declared event type; calling it makes a message ready to publish."""

    name: str
    model: Any
    channel: str
    description: str | None = None
    public: bool = False
    scopes: frozenset[str] = frozenset()
    publish_scopes: frozenset[str] | None = None  # None: clients may not publish
    service: Service | None = field(default=None, repr=False)
    _fields: tuple[str, ...] = ()
    _prefix: str = ""
    _suffix: str = ""
    # The value of the one field last filled in, and its channel (see channel_for): one
    # tuple, read and replaced whole, because nodes on other threads (serve_in_thread)
    # may publish the same event type at once.
    _last: tuple[object, str] = field(default=(_UNSET, ""), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._fields = tuple(re.findall(r"\{([a-z_][a-z0-9_]*)\}", self.channel))
        if len(self._fields) == 1:  # the common case, filled by concatenation
            self._prefix, _, self._suffix = self.channel.partition("{" + self._fields[0] + "}")

    @property
    def untyped(self) -> bool:
        """Whether its data is a :class:`~polyport.core.raw.RawMessage` on any channel
        under its template's ``#`` (bytes as devices and generic MQTT tools send them)."""
        return is_untyped(self.model)

    @property
    def channel_fields(self) -> tuple[str, ...]:
        """The data fields the channel template names, in order (``chat/{room}``: room)."""
        return self._fields

    @property
    def channel_pattern(self) -> str:
        """The channel template with its placeholders as ``+`` wildcards."""
        return re.sub(r"\{[a-z_][a-z0-9_]*\}", "+", self.channel)

    def channel_for(self, data: Any) -> str:
        """The channel for ``data``: the template with its ``{field}`` values filled in."""
        fields = self._fields
        if len(fields) == 1:  # the common case, without the loop: one check, one concatenation
            value = (
                data.get(fields[0]) if isinstance(data, dict) else getattr(data, fields[0], None)
            )
            last_value, last_channel = self._last
            if value is last_value:  # the same string as the event before's, as a rule
                return last_channel
            if type(value) is str and value and "/" not in value and value not in ("+", "#"):
                channel = self._prefix + value + self._suffix
                self._last = (value, channel)
                return channel
        elif not fields:
            if self.untyped:
                raise ContractError(
                    f"event {self.name} is untyped ({self.channel}): publish it with channel=…"
                )
            return self.channel
        parts = []
        for name in self._fields:
            value = data.get(name) if isinstance(data, dict) else getattr(data, name, None)
            text = "" if value is None else str(value)
            if not text or "/" in text or text in ("+", "#"):
                raise ContractError(
                    f"event {self.name}: cannot fill channel {self.channel!r}: "
                    f"field {name!r} is {value!r}"
                )
            parts.append(text)
        if len(parts) == 1:
            return self._prefix + parts[0] + self._suffix
        return self.channel.format(**dict(zip(self._fields, parts, strict=True)))

    def channels_for(self, items: Sequence[Any]) -> list[str]:
        """:meth:`channel_for` of each item, in one call: a batch publish's channels.

        With a one-field template, an item whose value is the same object as
        the item before's gets that item's channel without a call.
        """
        if len(self._fields) != 1:
            return [self.channel_for(data) for data in items]
        name = self._fields[0]
        channel_for = self.channel_for
        last_value: object = _UNSET
        last_channel = ""
        out: list[str] = []
        add = out.append
        for data in items:
            value = data.get(name) if isinstance(data, dict) else getattr(data, name, None)
            if value is not last_value:
                last_channel = channel_for(data)  # checks the value, raises if it is bad
                last_value = value
            add(last_channel)
        return out

    def __call__(self, data: Any, *, channel: str | None = None) -> EventMessage:
        return EventMessage(self, data, channel or self.channel_for(data))

    async def publish(self, data: Any, *, channel: str | None = None) -> Event:
        if self.service is None:
            raise ContractError(f"event {self.name} is not declared on a service")
        # Straight to the hub: this is the hot path of every handler that publishes.
        return await self.service.hub.publish_data(self, channel or self.channel_for(data), data)

    async def publish_many(
        self, items: Iterable[Any], *, channel: str | None = None
    ) -> list[Event]:
        """Publish one event per item, in order, as one batch (see :meth:`Service.publish_many`)."""
        if self.service is None:
            raise ContractError(f"event {self.name} is not declared on a service")
        return await self.service.hub.publish_data_many(self, items, channel=channel or None)


@dataclass(frozen=True, slots=True)
class EventMessage:
    """An event instance ready to publish: its type, its data and its channel."""

    type: EventType
    data: Any
    channel: str


@dataclass(slots=True)
class Relation:
    """A field of ``parent`` resolved by a batch function instead of stored on it.

    The function receives the keys of many parents at once — the values of
    the parent's ``via`` field — and returns one value per key, either as a
    list in the same order or as a dict by key. GraphQL resolves nested
    selections and REST ``?expand=`` with one call per level, never one per
    parent.
    """

    name: str
    parent: type[BaseModel]
    fn: Callable[..., Any]
    via: str
    public: bool = False
    scopes: frozenset[str] = frozenset()
    description: str | None = None


@dataclass(slots=True)
class WebhookReceiver:
    """An inbound webhook endpoint: ``POST /hooks/{name}``, verified, deduplicated.

    ``verify`` checks the signature (a :class:`polyport.webhooks.Verifier`); the
    handler runs asynchronously from a durable queue, once per delivery id,
    retried up to ``max_attempts`` times and then kept as a dead letter.
    """

    name: str
    fn: Callable[..., Any]
    verify: Any
    max_attempts: int = 8
    description: str | None = None


@dataclass(frozen=True, slots=True)
class WebhookDelivery:
    """One inbound webhook as its receiver's handler sees it (ask for it by annotation).

    ``id`` is the sender's delivery id (the same on every retry of one
    delivery); ``attempt`` counts this handler's runs for it, from 1.
    """

    id: str
    receiver: str
    event_type: str | None
    #: The time the sender signed, in Unix seconds, when its scheme signs one.
    timestamp: int | None
    #: When this node accepted the delivery, in Unix seconds.
    received: float
    attempt: int
    #: The request's headers by lower-case name, without credentials.
    headers: dict[str, str] = field(default_factory=dict)


class Resource:
    """A collection with get / list / create / update / delete operations."""

    def __init__(
        self,
        service: Service,
        name: str,
        model: type[BaseModel],
        *,
        key: str,
        events: bool,
        public: bool,
        scopes: frozenset[str],
        cache_max_age: int,
        max_limit: int,
        description: str | None,
    ) -> None:
        if key not in model.model_fields:
            raise ContractError(f"resource {name}: model {model.__name__} has no field {key!r}")
        self.service = service
        self.name = name
        self.model = model
        self.key = key
        self.publishes_events = events
        self.public = public
        self.scopes = scopes
        self.cache_max_age = cache_max_age
        self.max_limit = max_limit
        self.description = description
        self.methods: dict[Operation, Method] = {}
        #: ``created`` / ``updated`` / ``deleted``: declared with the operation that
        #: publishes it, so a resource without an update advertises no ``.updated``.
        self.events: dict[str, EventType] = {}

    def _declare_event(self, op: Operation) -> None:
        """The event ``op`` publishes on success (create, update and delete publish one)."""
        past = {"create": "created", "update": "updated", "delete": "deleted"}.get(op)
        if not self.publishes_events or past is None:
            return
        payload: Any = self.model
        if op == "delete":
            deleted = create_model(  # the payload of {name}.deleted: just the key
                f"{self.model.__name__}Deleted",
                __doc__=f"A {self.model.__name__} was deleted.",
                **{self.key: (self.model.model_fields[self.key].annotation, ...)},  # type: ignore[call-overload]
            )
            payload = deleted
        self.events[past] = self.service.event(
            f"{self.name}.{past}",
            payload,
            public=self.public,
            scopes=self.scopes,
            description=f"A {self.model.__name__} of {self.name} was {past}.",
        )

    def _register(self, op: Operation, fn: F, **options: Any) -> F:
        if op in self.methods:
            raise ContractError(f"resource {self.name} already has a {op} operation")
        self._declare_event(op)
        method = self.service._add(
            fn,
            kind=MethodKind.UNARY,
            resource=self,
            operation=op,
            public=options.pop("public", self.public),
            scopes=frozenset(options.pop("scopes", self.scopes)),
            **options,
        )
        self.methods[op] = method
        return fn

    def _decorator(self, op: Operation, fn: F | None, options: dict[str, Any]) -> Any:
        if fn is not None:
            return self._register(op, fn, **options)
        return lambda f: self._register(op, f, **options)

    def relation(
        self,
        name: str,
        *,
        via: str | None = None,
        public: bool | None = None,
        scopes: Any = None,
        description: str | None = None,
    ) -> Callable[[F], F]:
        """Declare ``name`` on this resource's model, resolved in batches by the function.

        ``via`` is the model field whose values the function receives (default:
        the resource key). Access follows the resource's unless given.
        """
        return self.service.relation(
            self.model,
            name,
            via=via or self.key,
            public=self.public if public is None else public,
            scopes=self.scopes if scopes is None else scopes,
            description=description,
        )

    @overload
    def get(self, fn: F) -> F: ...
    @overload
    def get(self, *, public: bool = ..., scopes: Any = ...) -> Callable[[F], F]: ...
    def get(self, fn: F | None = None, **options: Any) -> Any:
        """Read one item by key: ``GET /v1/{resource}/{key}``."""
        return self._decorator("get", fn, options)

    @overload
    def list(self, fn: F) -> F: ...
    @overload
    def list(self, *, public: bool = ..., scopes: Any = ...) -> Callable[[F], F]: ...
    def list(self, fn: F | None = None, **options: Any) -> Any:
        """List items, ``limit`` and ``cursor`` paginated: ``GET /v1/{resource}``."""
        return self._decorator("list", fn, options)

    @overload
    def create(self, fn: F) -> F: ...
    @overload
    def create(self, *, public: bool = ..., scopes: Any = ...) -> Callable[[F], F]: ...
    def create(self, fn: F | None = None, **options: Any) -> Any:
        """Create an item: ``POST /v1/{resource}`` → 201 with ``Location``."""
        return self._decorator("create", fn, options)

    @overload
    def update(self, fn: F) -> F: ...
    @overload
    def update(self, *, public: bool = ..., scopes: Any = ...) -> Callable[[F], F]: ...
    def update(self, fn: F | None = None, **options: Any) -> Any:
        """Replace an item: ``PUT /v1/{resource}/{key}``."""
        return self._decorator("update", fn, options)

    @overload
    def delete(self, fn: F) -> F: ...
    @overload
    def delete(self, *, public: bool = ..., scopes: Any = ...) -> Callable[[F], F]: ...
    def delete(self, fn: F | None = None, **options: Any) -> Any:
        """Delete an item: ``DELETE /v1/{resource}/{key}`` → 204."""
        return self._decorator("delete", fn, options)


Hook = Callable[[], Any]


class Service:
    """A named, versioned service contract: resources, methods and event types."""

    def __init__(self, name: str, *, version: int = 1, description: str | None = None) -> None:
        if not _NAME.fullmatch(name):
            raise ContractError(f"service name {name!r} must match {_NAME.pattern}")
        self.name = name
        self.version = version
        self.description = description
        self.methods: dict[str, Method] = {}
        self.resources: dict[str, Resource] = {}
        self.events: dict[str, EventType] = {}
        self.relations: list[Relation] = []
        self.receivers: dict[str, WebhookReceiver] = {}
        self.queues: dict[str, Queue] = {}
        self.startup_hooks: list[Hook] = []
        self.shutdown_hooks: list[Hook] = []
        #: The hubs of the nodes serving this service in this process, in start order.
        self._hubs: list[EventHub] = []
        #: What sends each of those nodes' queue messages, by the node's hub.
        self._senders: dict[EventHub, QueueSender] = {}
        self._spec: ServiceSpec | None = None

    # -- declaring ------------------------------------------------------------

    def resource(
        self,
        name: str,
        model: type[BaseModel],
        *,
        key: str = "id",
        events: bool = True,
        public: bool = False,
        scopes: Any = (),
        cache_max_age: int = 0,
        max_limit: int = 1000,
        description: str | None = None,
    ) -> Resource:
        """Declare a resource collection of ``model`` items addressed by ``key``.

        With ``events=True`` (the default) every successful create, update and
        delete publishes ``{name}.created`` / ``.updated`` / ``.deleted`` — each
        declared when its operation is, so only the events that can happen exist.
        ``cache_max_age`` is the ``Cache-Control: max-age`` for GETs (0: revalidate).
        """
        self._check_open()
        if not _NAME.fullmatch(name):
            raise ContractError(f"resource name {name!r} must match {_NAME.pattern}")
        if name in self.resources:
            raise ContractError(f"resource {name!r} is declared twice")
        resource = Resource(
            self,
            name,
            model,
            key=key,
            events=events,
            public=public,
            scopes=frozenset(scopes),
            cache_max_age=cache_max_age,
            max_limit=max_limit,
            description=description,
        )
        self.resources[name] = resource
        return resource

    @overload
    def method(self, fn: F) -> F: ...
    @overload
    def method(
        self,
        *,
        name: str | None = ...,
        public: bool = ...,
        scopes: Any = ...,
        idempotent: bool = ...,
        timeout: float | None = ...,
    ) -> Callable[[F], F]: ...
    def method(self, fn: F | None = None, **options: Any) -> Any:
        """Declare a method; its kind (unary or streaming) follows from its signature.

        A parameter annotated ``AsyncIterator[X]`` makes it client-streaming, a
        return annotated ``AsyncIterator[Y]`` server-streaming, both bidirectional.
        """
        return self._decorate(fn, None, options)

    @overload
    def stream(self, fn: F) -> F: ...
    @overload
    def stream(
        self, *, name: str | None = ..., public: bool = ..., scopes: Any = ...
    ) -> Callable[[F], F]: ...
    def stream(self, fn: F | None = None, **options: Any) -> Any:
        """Declare a server-streaming method (an async generator)."""
        return self._decorate(fn, MethodKind.SERVER_STREAM, options)

    def client_stream(self, fn: F | None = None, **options: Any) -> Any:
        """Declare a client-streaming method: one ``AsyncIterator[X]`` parameter."""
        return self._decorate(fn, MethodKind.CLIENT_STREAM, options)

    def bidi_stream(self, fn: F | None = None, **options: Any) -> Any:
        """Declare a bidirectional-streaming method."""
        return self._decorate(fn, MethodKind.BIDI_STREAM, options)

    def event(
        self,
        name: str,
        model: Any,
        *,
        channel: str | None = None,
        description: str | None = None,
        public: bool = False,
        scopes: Any = (),
        publish_scopes: Any = None,
    ) -> EventType:
        """Declare an event type published on ``channel`` (default: the name with ``/``).

        ``channel`` may hold ``{field}`` placeholders filled from the event data,
        e.g. ``"chat/{room}"``. With the model :class:`~polyport.core.raw.RawMessage`
        the type is untyped and ``channel`` is a prefix and ``#`` (``"legacy/#"``, or
        ``"#"``): its events are published with an explicit channel under it.
        ``scopes`` are needed to subscribe; clients may publish only when
        ``publish_scopes`` is given (server code always may).
        """
        self._check_open()
        if not _EVENT_NAME.fullmatch(name):
            raise ContractError(f"event name {name!r} must match {_EVENT_NAME.pattern}")
        if name in self.events:
            raise ContractError(f"event {name!r} is declared twice")
        channel = channel or name.replace(".", "/")
        if is_untyped(model):
            if not _UNTYPED_CHANNELS.fullmatch(channel):
                raise ContractError(
                    f"event {name}: an untyped event type's channel is a prefix and '#' "
                    f"('legacy/#', or '#' for every channel), not {channel!r}"
                )
        elif not _CHANNEL_TEMPLATE.fullmatch(channel):
            raise ContractError(f"event {name}: invalid channel template {channel!r}")
        event = EventType(
            name,
            model,
            channel,
            description=description,
            public=public,
            scopes=frozenset(scopes),
            publish_scopes=None if publish_scopes is None else frozenset(publish_scopes),
            service=self,
        )
        self.events[name] = event
        return event

    def relation(
        self,
        parent: type[BaseModel],
        name: str,
        *,
        via: str = "id",
        public: bool = False,
        scopes: Any = (),
        description: str | None = None,
    ) -> Callable[[F], F]:
        """Declare field ``name`` of ``parent``, resolved by the decorated batch function.

            @shop.relation(User, "orders")
            async def orders_of(user_ids: list[int], limit: int = 10) -> dict[int, list[Order]]:
                ...

        The first parameter takes the list of keys (values of ``parent.via``);
        further parameters are the field's arguments (GraphQL ``orders(limit: 5)``).
        The function returns ``list[V]`` aligned with the keys or ``dict[K, V]``;
        a key missing from the dict gets ``[]`` when V is a list, else null.
        """
        self._check_open()
        if not _NAME.fullmatch(name):
            raise ContractError(f"relation name {name!r} must match {_NAME.pattern}")
        if not (isinstance(parent, type) and issubclass(parent, BaseModel)):
            raise ContractError(f"relation {name}: the parent must be a pydantic model")
        if name in parent.model_fields:
            raise ContractError(
                f"relation {parent.__name__}.{name}: the model already has a field {name!r}"
            )
        if via not in parent.model_fields:
            raise ContractError(
                f"relation {parent.__name__}.{name}: the model has no field {via!r} to join on"
            )
        if any(r.parent is parent and r.name == name for r in self.relations):
            raise ContractError(f"relation {parent.__name__}.{name} is declared twice")

        def register(fn: F) -> F:
            self.relations.append(
                Relation(
                    name,
                    parent,
                    fn,
                    via,
                    public=public,
                    scopes=frozenset(scopes),
                    description=description,
                )
            )
            return fn

        return register

    def webhook_receiver(
        self,
        name: str,
        *,
        verify: Any,
        max_attempts: int = 8,
        description: str | None = None,
    ) -> Callable[[F], F]:
        """Receive webhooks at ``POST /hooks/{name}``, checked by ``verify``.

        The decorated handler takes the parsed body (annotate it with a model to
        validate it) and optionally a :class:`Context` and a
        :class:`WebhookDelivery`; it runs once per delivery id, asynchronously,
        retried up to ``max_attempts`` times. See ``docs/webhook-receivers.md``.
        """
        self._check_open()
        if not _NAME.fullmatch(name):
            raise ContractError(f"webhook receiver name {name!r} must match {_NAME.pattern}")
        if name in self.receivers:
            raise ContractError(f"webhook receiver {name!r} is declared twice")
        if not 1 <= max_attempts <= 100:
            raise ContractError(f"webhook receiver {name}: max_attempts must be from 1 to 100")
        if not callable(getattr(verify, "verify", None)):
            raise ContractError(
                f"webhook receiver {name}: verify must be a verifier such as "
                "polyport.webhooks.StandardWebhooks(secret), GitHub(secret) or Stripe(secret)"
            )

        def register(fn: F) -> F:
            self.receivers[name] = WebhookReceiver(
                name, fn, verify, max_attempts=max_attempts, description=description
            )
            return fn

        return register

    def queue(
        self,
        name: str,
        model: Any,
        *,
        description: str | None = None,
        public: bool = False,
        scopes: Any = (),
        dedup_window: float = 86400.0,
    ) -> Queue:
        """Declare a durable message queue whose messages are ``model`` instances.

        ``POST /v{n}/queues/{name}`` sends to it over HTTP, for callers holding
        ``scopes`` (anyone, if ``public``); handlers send with ``queue.send`` or
        ``ctx.enqueue``. Give it a handler with ``@queue.consumer``. A message id
        seen within ``dedup_window`` seconds is stored once. See ``docs/queues.md``.
        """
        self._check_open()
        if not _QUEUE_NAME.fullmatch(name):
            raise ContractError(f"queue name {name!r} must match {_QUEUE_NAME.pattern}")
        if name in self.queues:
            raise ContractError(f"queue {name!r} is declared twice")
        if not 60 <= dedup_window <= 30 * 86400:
            raise ContractError(f"queue {name}: dedup_window must be from 60 s to 30 days")
        queue = Queue(
            self,
            name,
            model,
            description=description,
            public=public,
            scopes=frozenset(scopes),
            dedup_window=dedup_window,
        )
        self.queues[name] = queue
        return queue

    def on_startup(self, fn: F) -> F:
        """Run ``fn`` (sync or async) when a node starts serving this service."""
        self.startup_hooks.append(fn)
        return fn

    def on_shutdown(self, fn: F) -> F:
        """Run ``fn`` (sync or async) when the node stops."""
        self.shutdown_hooks.append(fn)
        return fn

    # -- running ----------------------------------------------------------------

    def spec(self) -> ServiceSpec:
        """The analysed contract (type graph, method signatures); built once."""
        if self._spec is None:
            from polyport.core.spec import build_spec

            self._spec = build_spec(self)
        return self._spec

    def bind(self, hub: EventHub, sender: QueueSender | None = None) -> None:
        """Attach the event hub of a node starting to serve this service, and what sends
        its queue messages.

        Several nodes may serve one service in a process (on two ports, on one
        shared engine): see :attr:`hub` for where each publish goes; a queue's
        message goes to the same node.
        """
        if hub not in self._hubs:
            self._hubs.append(hub)
        if sender is not None:
            self._senders[hub] = sender

    def unbind(self, hub: EventHub) -> None:
        """Detach ``hub`` (its node stopped); nothing if it is not attached."""
        if hub in self._hubs:
            self._hubs.remove(hub)
        self._senders.pop(hub, None)

    @property
    def queue_sender(self) -> QueueSender:
        """What sends a queue's message here and now: the node :attr:`hub` names."""
        sender = self._senders.get(self.hub)
        if sender is None:
            raise Unavailable(f"service {self.name} is not being served: no queue runner")
        return sender

    @property
    def hub(self) -> EventHub:
        """The hub a publish of this service goes to, here and now.

        * Inside a call, a start-up or shutdown hook, or a task one of them
          created, while its node serves this service: that node's hub. A
          handler always publishes to the node that called it.
        * Elsewhere, when one node serves this service: that node's hub.
        * When none does: :class:`Unavailable`.
        * When several do and nothing says which: :class:`RuntimeError` naming
          the way to choose — ``with node.publishing(): …`` — rather than a
          guess. Publishing to each would store the event twice on nodes that
          share an engine; publishing to one would hide it from the others'
          subscribers.
        """
        hubs = self._hubs
        current = SERVING_HUB.get()
        if current is not None and current in hubs:
            return current
        if len(hubs) == 1:
            return hubs[0]
        if not hubs:
            raise Unavailable(f"service {self.name} is not being served: no event hub")
        raise RuntimeError(
            f"service {self.name} is served by {len(hubs)} nodes in this process and this "
            "publish is not part of a call of one of them: say which node publishes with "
            "`with node.publishing(): ...` (or publish from a handler, a start-up hook, or "
            "a task either of them started)"
        )

    async def publish(
        self, event: EventType | EventMessage | str, data: Any = None, *, channel: str | None = None
    ) -> Event:
        """Publish: ``publish(OrderCreated(order))`` or ``publish(OrderCreated, order)``.

        To the node serving the current call, or the one node serving the
        service; with several and no call, choose with ``node.publishing()``
        (see :attr:`hub`).
        """
        if isinstance(event, EventMessage):
            return await self.hub.publish_message(event)
        event_type = self.events[event] if isinstance(event, str) else event
        return await self.hub.publish_message(event_type(data, channel=channel))

    async def publish_many(self, messages: Iterable[EventMessage]) -> list[Event]:
        """Publish many events in order, as one batch: ``publish_many(Tick(t) for t in ticks)``.

        Each message is validated and encoded before the first is appended, so an
        invalid one publishes nothing. The events are appended together and each
        live subscriber gets each run of same-channel events in one push and one
        wake-up — a producer with many events to send pays the per-publish cost once.
        """
        return await self.hub.publish_batch(messages)

    # -- internals ----------------------------------------------------------------

    def _check_open(self) -> None:
        if self._spec is not None:
            raise ContractError(f"service {self.name} is already being served; declare earlier")

    def _decorate(self, fn: F | None, kind: MethodKind | None, options: dict[str, Any]) -> Any:
        if fn is not None:
            self._add(fn, kind=kind, **options)
            return fn

        def register(f: F) -> F:
            self._add(f, kind=kind, **options)
            return f

        return register

    def _add(
        self,
        fn: Callable[..., Any],
        *,
        kind: MethodKind | None,
        name: str | None = None,
        public: bool = False,
        scopes: Any = (),
        idempotent: bool = False,
        timeout: float | None = None,
        resource: Resource | None = None,
        operation: Operation | None = None,
    ) -> Method:
        self._check_open()
        name = name or fn.__name__
        if not _NAME.fullmatch(name):
            raise ContractError(f"method name {name!r} must match {_NAME.pattern}")
        if name in self.methods:
            raise ContractError(f"method {name!r} is declared twice")
        method = Method(
            name,
            fn,
            kind,
            public=public,
            scopes=frozenset(scopes),
            idempotent=idempotent,
            timeout=timeout,
            resource=resource,
            operation=operation,
        )
        self.methods[name] = method
        return method

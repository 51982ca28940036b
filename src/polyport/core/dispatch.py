"""The dispatch pipeline every edge calls: one place for everything but the wire.

    credentials ─▶ authenticate ─▶ authorize ─▶ rate limit ─▶ validate ─▶ handler
                                                                           │
                 metrics · logs · CRUD events · errors as ServiceError ◀───┘

Authentication comes before validation on purpose: an anonymous caller must
not learn an argument schema from error messages, nor spend our CPU on it.
Validators and serializers are built once per method (:class:`Binding`), at
start-up; a call only runs them.
"""

from __future__ import annotations

import asyncio
import logging
import operator
import re
import time
import types
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, NotRequired, Required, Union, get_args, get_origin

import annotated_types
import orjson
from pydantic import ConfigDict, PydanticUserError, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import PydanticSerializationError
from typing_extensions import TypedDict

from polyport.core.auth import NO_CREDENTIALS, Authenticator, Credentials
from polyport.core.conformance import arguments_check, result_check
from polyport.core.context import Context, Principal, new_request_id
from polyport.core.contract import EventMessage, EventType, MethodKind, Page
from polyport.core.errors import (
    DeadlineExceeded,
    Internal,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ServiceError,
    Unauthenticated,
)
from polyport.core.events import Pattern
from polyport.core.hub import SERVING_HUB, EventHub, settle_published, unsettled
from polyport.core.metrics import Metrics
from polyport.core.ratelimit import RateLimiter
from polyport.core.spec import MethodSpec, RelationSpec, ServiceSpec
from polyport.core.streamcall import StreamCall
from polyport.core.textforms import text_reader
from polyport.core.types import ListOf, unwrap_nullable

log = logging.getLogger("polyport.dispatch")


@dataclass(slots=True)
class Caller:
    """How a call arrived: filled in by the edge from its wire."""

    edge: str
    credentials: Credentials = NO_CREDENTIALS
    peer: str | None = None
    request_id: str | None = None
    trace_id: str | None = None
    timeout: float | None = None  # seconds the caller is prepared to wait


@dataclass(frozen=True, slots=True)
class PageResult:
    """A page of a resource list: its items and the cursor of the next page."""

    items: list[Any]
    next_cursor: str | None


def encode_cursor(raw: str) -> str:
    """A list's next cursor as clients see it: the raw value itself.

    For a list returning plain items that is the key of the page's last item
    (keyset pagination), for one returning :class:`Page` whatever it chose.
    Raw, so the document can state exactly which cursors exist: an opaque
    token's validity is not something a schema can express.
    """
    return raw


def decode_cursor(text: str, pattern: re.Pattern[str] | None = None) -> str:
    """The raw cursor a client passed back; held to ``pattern`` (a key's text) when given."""
    if pattern is not None and not pattern.fullmatch(text):
        raise InvalidArgument(
            "malformed cursor: pass back the next_cursor of a previous page",
            details=[{"field": "cursor", "message": "not a cursor issued by this service"}],
        )
    return text


def validation_details(exc: ValidationError) -> list[dict[str, Any]]:
    """Pydantic's errors as ``[{field, message, type}]`` without echoing input values."""
    details = []
    for error in exc.errors(include_url=False, include_input=False, include_context=False):
        field = ".".join(str(part) for part in error["loc"])
        details.append({"field": field or "(body)", "message": error["msg"], "type": error["type"]})
    return details


def invalid(exc: ValidationError) -> InvalidArgument:
    details = validation_details(exc)
    unparseable = any(d["type"] == "json_invalid" for d in details)
    if unparseable:
        return InvalidArgument("the request body is not valid JSON", unparseable=True)
    summary = "; ".join(f"{d['field']}: {d['message']}" for d in details[:3])
    return InvalidArgument(f"invalid arguments: {summary}", details=details)


def refused(
    problems: list[dict[str, Any]], validate: Callable[[Any], Any], args: Any
) -> InvalidArgument:
    """The type graph's ``problems`` with whatever else the validator finds, as one error."""
    try:
        validate(args)
    except ValidationError as exc:
        flagged = {p["field"] for p in problems}
        problems = problems + [d for d in validation_details(exc) if d["field"] not in flagged]
    summary = "; ".join(f"{d['field']}: {d['message']}" for d in problems[:3])
    return InvalidArgument(f"invalid arguments: {summary}", details=problems)


#: ``bytes`` travel as base64 in JSON (pydantic's default, UTF-8 text, cannot carry
#: arbitrary bytes). Models choose for their own fields: set the same two keys
#: in their ``model_config`` — the generated documents follow each model's choice.
BYTES_AS_BASE64 = ConfigDict(ser_json_bytes="base64", val_json_bytes="base64")


def wire_adapter(annotation: Any) -> TypeAdapter[Any]:
    """A TypeAdapter writing bare bytes as base64 (types with their own config keep it)."""
    try:
        return TypeAdapter(annotation, config=BYTES_AS_BASE64)
    except PydanticUserError:  # a model, dataclass or TypedDict: it has its own config
        return TypeAdapter(annotation)


class Binding:
    """One method made ready to serve: validator and serializer built, options resolved."""

    __slots__ = (
        "_check",
        "_cursor",
        "_exact",
        "_factories",
        "_fills",
        "_params_json",
        "_params_python",
        "_required",
        "_result_json",
        "_result_python",
        "_text",
        "check_result",
        "context_param",
        "direct",
        "event",
        "fn",
        "is_async",
        "key",
        "kind",
        "list_params",
        "name",
        "operation",
        "paged",
        "params",
        "public",
        "result",
        "scopes",
        "spec",
        "stream_item",
        "timeout",
    )

    def __init__(self, spec: MethodSpec, events: Mapping[str, EventType]) -> None:
        self.spec = spec
        self.name = spec.name
        self.kind = spec.kind
        self.fn = spec.method.fn
        self.is_async = asyncio.iscoroutinefunction(self.fn)
        self.public = spec.public
        self.scopes = spec.scopes
        self.timeout = spec.method.timeout
        self.context_param = spec.context_param
        self.paged = spec.paged
        self.operation = spec.operation
        resource = spec.resource
        self.key = resource.key if resource is not None else None
        self.event = None
        if resource is not None and spec.operation in ("create", "update", "delete"):
            self.event = resource.events.get(f"{spec.operation}d")

        #: Nothing to arrange around the handler: awaited as it is, its result returned
        #: (or paged).
        self.direct = (
            self.is_async
            and self.context_param is None
            and self.timeout is None
            and self.event is None
        )
        self.params = _params_adapter(spec.name, spec.params, spec.annotations)
        self._exact = _exact_params(spec.params, spec.annotations)
        self._required = frozenset(p.name for p in spec.params if p.required)
        self._params_json = self.params.validator.validate_json
        self._params_python = self.params.validator.validate_python
        self._check = arguments_check(spec.params, spec.graph)
        self._text = {p.wire_name: text_reader(p.type, spec.graph) for p in spec.params}
        #: Parameters that take several values: a URL carries them as a repeated name.
        self.list_params = frozenset(
            p.wire_name for p in spec.params if isinstance(unwrap_nullable(p.type)[0], ListOf)
        )
        self._fills = spec.fills
        self._factories = spec.factories
        pattern = spec.cursor_pattern
        self._cursor = re.compile(pattern) if pattern is not None else None
        self.result = wire_adapter(spec.returns_annotation)
        self._result_json = self.result.serializer.to_json
        self._result_python = self.result.serializer.to_python
        #: Raises OutOfRange for a result (a stream's item) its declared type cannot hold.
        self.check_result = result_check(spec.returns, f"the result of {spec.name}")
        self.stream_item = (
            wire_adapter(spec.stream_item_annotation) if spec.stream_param is not None else None
        )

    def parse(self, args: bytes | Mapping[str, Any] | None) -> dict[str, Any]:
        """Validated keyword arguments from a JSON body or a mapping of decoded wire values.

        Values are held to the type graph first (:mod:`polyport.core.conformance`:
        no ``true`` for an int, nothing beyond int64), then validated.
        """
        try:
            if args is None or args == b"":
                kwargs: dict[str, Any] = self._params_python({})
            elif isinstance(args, bytes | bytearray | memoryview):
                kwargs = self._from_json(args)
            else:
                kwargs = self._exactly(args) or self._validate(args)
        except ValidationError as exc:
            raise invalid(exc) from None
        if self._fills or self._factories:
            self._fill(kwargs)
        if self.paged:
            cursor = kwargs.get("cursor")
            if cursor is not None:
                kwargs["cursor"] = decode_cursor(cursor, self._cursor)
        return kwargs

    def from_text(self, values: Mapping[str, str | list[str]]) -> dict[str, Any]:
        """Arguments that arrived as text (a URL's query or path) as the values they spell.

        ``"42"`` becomes 42 where an int is declared, ``"true"`` True where a
        bool is; the result then goes to :meth:`parse` like any decoded wire
        value (see :func:`~polyport.core.conformance.text_reader`). Names it
        does not know pass unchanged, for the validator to refuse.
        """
        readers = self._text
        out: dict[str, Any] = {}
        for name, text in values.items():
            read = readers.get(name)
            out[name] = text if read is None else read(text)
        return out

    def _validate(self, args: Mapping[str, Any]) -> dict[str, Any]:
        """The slow way: the type graph's check, then the validator's conversions."""
        problems = self._check(args)
        if problems:
            raise refused(problems, self._params_python, args)
        kwargs: dict[str, Any] = self._params_python(args)
        return kwargs

    def _from_json(self, body: bytes | bytearray | memoryview) -> dict[str, Any]:
        raw = bytes(body) if isinstance(body, memoryview) else body
        try:
            values = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise InvalidArgument("the request body is not valid JSON", unparseable=True) from None
        if type(values) is dict:
            exact = self._exactly(values, own=True)  # a dict of its own already
            if exact is not None:
                return exact
            problems = self._check(values)
            if problems:
                raise refused(problems, self._params_json, raw)
        # Validated from the text, not the parsed values: JSON reads bytes as base64.
        kwargs: dict[str, Any] = self._params_json(raw)
        return kwargs

    def _fill(self, kwargs: dict[str, Any]) -> None:
        """Defaults the function cannot supply itself: those given as ``= Field(…)``."""
        for name, default in self._fills.items():
            if name not in kwargs:
                kwargs[name] = default
        for name, factory in self._factories.items():
            if name not in kwargs:
                kwargs[name] = factory()

    def _exactly(self, args: Mapping[str, Any], *, own: bool = False) -> dict[str, Any] | None:
        """``args`` as they are when every value is of its parameter's exact type; else None.

        What validation would return for such values (plain ``int``, ``str``,
        ``float``, ``bool``, ``bytes``, optional or not, within their bounds),
        without running it: decoders that already produce typed values
        (protobuf, JSON) skip most of the cost. Anything else — a missing or
        unknown name, another type, a bound crossed — goes to the validator,
        which decides and words the error.
        """
        exact = self._exact
        if exact is None or not self._required <= args.keys():
            return None
        for name, value in args.items():
            rule = exact.get(name)
            if rule is None:
                return None
            kind, nullable, checks = rule
            if type(value) is not kind:
                if value is None and nullable and not checks:
                    continue
                return None
            # The type graph's int is int64 on every wire (the bounds as literals: this is
            # the hot path, and a constant costs less than a global).
            if kind is int and not -0x8000000000000000 <= value <= 0x7FFFFFFFFFFFFFFF:  # type: ignore[operator]  # value is an int here; mypy narrows it to object
                return None
            for check in checks:
                if not check(value):
                    return None
        return args if own and type(args) is dict else dict(args)

    def dump_json(self, value: Any) -> bytes:
        """The result as JSON bytes; a handler returning the wrong type is an internal error."""
        try:
            return self._result_json(value, by_alias=True, warnings="error")
        except PydanticSerializationError as exc:
            raise _wrong_return(self.name, exc) from exc

    def dump_python(self, value: Any, *, mode: str = "json") -> Any:
        """The result as JSON-compatible Python values (or plain Python with mode='python')."""
        try:
            return self._result_python(value, mode=mode, by_alias=True, warnings="error")
        except PydanticSerializationError as exc:
            raise _wrong_return(self.name, exc) from exc


#: Parameter types whose validation, for a value of exactly that type, returns it unchanged.
_EXACT = (int, str, float, bool, bytes)
#: Bound constraints: the attribute holding the bound, and what a valid value satisfies.
_BOUNDS: dict[type, tuple[str, Callable[[Any, Any], bool]]] = {
    annotated_types.Ge: ("ge", operator.ge),
    annotated_types.Gt: ("gt", operator.gt),
    annotated_types.Le: ("le", operator.le),
    annotated_types.Lt: ("lt", operator.lt),
}
ExactRule = tuple[type, bool, tuple[Callable[[Any], bool], ...]]


def _exact_params(
    params: Sequence[Any], annotations: Mapping[str, Any]
) -> dict[str, ExactRule] | None:
    """Per parameter: its exact type, whether None is allowed, its bounds; None if any is more."""
    rules = {}
    for param in params:
        rule = _exact_rule(annotations[param.name])
        if rule is None:
            return None
        rules[param.name] = rule
    return rules


def _exact_rule(annotation: Any) -> ExactRule | None:
    checks: list[Callable[[Any], bool]] = []
    if get_origin(annotation) is Annotated:
        annotation, *metadata = get_args(annotation)
        for item in metadata:
            if isinstance(item, FieldInfo):
                if item.alias is not None or item.validation_alias is not None:
                    return None
                constraints = item.metadata
            else:
                constraints = [item]
            for constraint in constraints:
                bound = _BOUNDS.get(type(constraint))
                if bound is None:
                    return None
                field, compare = bound
                checks.append(_within(compare, getattr(constraint, field)))
    nullable = False
    if get_origin(annotation) in (Union, types.UnionType):
        members = [a for a in get_args(annotation) if a is not type(None)]
        if len(members) != 1:
            return None
        annotation, nullable = members[0], True
    if annotation not in _EXACT:
        return None
    return annotation, nullable, tuple(checks)


def _within(compare: Callable[[Any, Any], bool], bound: Any) -> Callable[[Any], bool]:
    return lambda value: compare(value, bound)


def _params_adapter(
    name: str, params: Sequence[Any], annotations: Mapping[str, Any]
) -> TypeAdapter[Any]:
    """A strict-keys validator for named parameters (``extra`` names refused)."""
    fields: dict[str, Any] = {}
    for param in params:
        annotation = annotations[param.name]
        fields[param.name] = Required[annotation] if param.required else NotRequired[annotation]
    params_type = TypedDict(f"{name}_params", fields)  # type: ignore[misc]
    config = ConfigDict(extra="forbid")
    config.update(BYTES_AS_BASE64)
    params_type.__pydantic_config__ = config  # type: ignore[attr-defined]
    return TypeAdapter(params_type)


class RelationBinding:
    """One relation made ready to resolve: argument validator and value serializer."""

    __slots__ = (
        "_check",
        "_factories",
        "_fills",
        "_params_python",
        "check_value",
        "context_param",
        "empty",
        "fn",
        "is_async",
        "keys_param",
        "name",
        "public",
        "scopes",
        "spec",
        "value",
        "via",
        "via_wire",
    )

    def __init__(self, spec: RelationSpec) -> None:
        self.spec = spec
        self.name = spec.qualified_name
        self.fn = spec.relation.fn
        self.is_async = asyncio.iscoroutinefunction(self.fn)
        self.public = spec.public
        self.scopes = spec.scopes
        self.keys_param = spec.keys_param
        self.context_param = spec.context_param
        self.via = spec.via.name
        self.via_wire = spec.via.wire_name
        inner, _ = unwrap_nullable(spec.returns)
        #: The value of a parent whose key the function did not answer for.
        self.empty: list[Any] | None = [] if isinstance(inner, ListOf) else None
        self._params_python = _params_adapter(
            self.name.replace(".", "_"), spec.params, spec.annotations
        ).validator.validate_python
        self._check = arguments_check(spec.params, spec.graph)
        self._fills = spec.fills
        self._factories = spec.factories
        self.value = wire_adapter(spec.returns_annotation)
        #: Raises OutOfRange for a value its declared type cannot hold.
        self.check_value = result_check(spec.returns, f"{self.name}")

    def parse(self, args: Mapping[str, Any] | None) -> dict[str, Any]:
        try:
            problems = self._check(args or {})
            if problems:
                raise refused(problems, self._params_python, args or {})
            kwargs: dict[str, Any] = self._params_python(args or {})
        except ValidationError as exc:
            raise invalid(exc) from None
        for name, default in self._fills.items():
            kwargs.setdefault(name, default)
        for name, factory in self._factories.items():
            if name not in kwargs:
                kwargs[name] = factory()
        return kwargs

    def missing(self) -> Any:
        """A fresh empty value: ``[]`` for list relations, else None."""
        return None if self.empty is None else []

    def key_of(self, parent: Any) -> Any:
        """The join key of one parent: a model instance or its wire dict."""
        if isinstance(parent, dict):
            return parent.get(self.via_wire)
        return getattr(parent, self.via, None)

    def dump_python(self, value: Any) -> Any:
        try:
            return self.value.serializer.to_python(
                value, mode="json", by_alias=True, warnings="error"
            )
        except PydanticSerializationError as exc:
            raise _wrong_return(self.name, exc) from exc


def internal_error(what: str, exc: BaseException, caller: Caller | None = None) -> Internal:
    """Log ``exc`` under a request id and return the bare Internal error that carries it."""
    error = Internal()
    error.request_id = (caller.request_id if caller else None) or new_request_id()
    log.error(
        what,
        exc_info=exc,
        extra={
            "request_id": error.request_id,
            "edge": caller.edge if caller else None,
        },
    )
    return error


def _wrong_return(name: str, exc: Exception) -> Internal:
    return internal_error(
        f"handler {name} returned a value that does not match its annotation", exc
    )


class Dispatcher:
    """Serves calls of one service for every edge.

    ``hub`` is the event hub of the node the dispatcher serves: handlers run
    with it as their node's (:data:`~polyport.core.hub.SERVING_HUB`), so what
    they publish goes to the node that called them even when other nodes serve
    the same service in this process. None: to whichever node serves it.
    """

    def __init__(
        self,
        spec: ServiceSpec,
        *,
        authenticator: Authenticator,
        limiter: RateLimiter,
        metrics: Metrics,
        hub: EventHub | None = None,
    ) -> None:
        self.spec = spec
        self.service = spec.service
        self.hub = hub
        self.authenticator = authenticator
        self.limiter = limiter
        self.metrics = metrics
        self._events = {e.name: e.event for e in spec.events.values()}
        self._channels = {n: Pattern.parse(e.channel_pattern) for n, e in self._events.items()}
        self.bindings = {name: Binding(m, self._events) for name, m in spec.methods.items()}
        #: model name → field name → relation binding
        self.relations = {
            model: {name: RelationBinding(r) for name, r in fields.items()}
            for model, fields in spec.relations.items()
        }

    def add_event(self, event: EventType) -> None:
        """Authorize readers of an event type the node itself publishes.

        Built-in types (``webhooks.endpoint.disabled``) are not part of the
        service contract, but subscribers are admitted to them by the same
        rules: ``public`` or the type's ``scopes``.
        """
        self._events[event.name] = event
        self._channels[event.name] = Pattern.parse(event.channel_pattern)

    @property
    def event_types(self) -> Mapping[str, EventType]:
        """Every event type subscribers are admitted to: the contract's, and the node's own."""
        return types.MappingProxyType(self._events)

    def binding(self, name: str) -> Binding:
        try:
            return self.bindings[name]
        except KeyError:
            raise NotFound(f"no method named {name[:100]!r}") from None

    # -- admission ----------------------------------------------------------------

    def authenticate(self, caller: Caller) -> Principal:
        return self.authenticator.authenticate(caller.credentials)

    def admit(self, public: bool, scopes: frozenset[str], caller: Caller) -> Principal:
        """Authenticate, authorize and charge the rate limit; return the principal."""
        principal = self.authenticator.authenticate(caller.credentials)
        self.authorize(public, scopes, principal)
        key = f"anon:{caller.peer}" if principal.anonymous else principal.subject
        self.limiter.acquire(key)
        return principal

    @staticmethod
    def authorize(public: bool, scopes: frozenset[str], principal: Principal) -> None:
        """Refuse ``principal`` unless it may use something ``public`` / needing ``scopes``."""
        if not public:
            if principal.anonymous and "*" not in principal.scopes:
                raise Unauthenticated()
            if scopes and not principal.has_scopes(scopes):
                missing = " ".join(sorted(scopes - principal.scopes))
                raise PermissionDenied(f"missing scope: {missing}")

    def admit_subscribe(
        self,
        patterns: Sequence[Pattern],
        caller: Caller,
        *,
        principal: Principal | None = None,
        types: frozenset[str] | None = None,
    ) -> frozenset[str] | None:
        """Authorize reading ``patterns``: the event types the caller may see.

        None means "everything" (a principal holding ``*``). A pattern that
        matches no channel of an event type the caller may read is refused.
        ``types`` narrows the question to those event types (a GraphQL
        subscription field reads one). Given ``principal``, the edge has
        authenticated the caller and charged the rate limit itself, as for
        :meth:`open_stream`; otherwise both happen here.
        """
        charge = principal is None
        if principal is None:
            principal = self.authenticator.authenticate(caller.credentials)
        key = f"anon:{caller.peer}" if principal.anonymous else principal.subject
        if "*" in principal.scopes:
            if charge:
                self.limiter.acquire(key)
            return None
        signed_in = not principal.anonymous
        readable = frozenset(
            name
            for name, event in self._events.items()
            if (types is None or name in types)
            and (event.public or (signed_in and principal.has_scopes(event.scopes)))
        )
        for pattern in patterns:
            if not any(pattern.overlaps(self._channels[name]) for name in readable):
                if not signed_in:
                    raise Unauthenticated()
                raise PermissionDenied(f"you may not read any event on {pattern.text}")
        if charge:
            self.limiter.acquire(key)
        return readable

    def admit_publish(self, event_type: EventType, caller: Caller) -> Principal:
        """Authorize a client publishing ``event_type`` (server code always may).

        Clients may publish only types declared with ``publish_scopes`` (an
        empty list: anyone who may read it), holding those scopes.
        """
        principal = self.authenticator.authenticate(caller.credentials)
        allowed = event_type.publish_scopes
        if "*" not in principal.scopes:
            if allowed is None:
                raise PermissionDenied(f"clients may not publish {event_type.name}")
            if principal.anonymous and not event_type.public:
                raise Unauthenticated()
            if not principal.has_scopes(allowed):
                missing = " ".join(sorted(allowed - principal.scopes))
                raise PermissionDenied(f"missing scope: {missing}")
        self.limiter.acquire(f"anon:{caller.peer}" if principal.anonymous else principal.subject)
        return principal

    # -- unary calls ----------------------------------------------------------------

    async def call(
        self, binding: Binding, args: bytes | Mapping[str, Any] | None, caller: Caller
    ) -> Any:
        """Run one unary call end to end; raise :class:`ServiceError` on failure.

        For a resource ``list`` the result is a :class:`PageResult`.
        """
        started = time.perf_counter()
        code = "OK"
        serving = SERVING_HUB.set(self.hub)
        try:
            principal = self.admit(binding.public, binding.scopes, caller)
            kwargs = binding.parse(args)
            if not binding.direct or caller.timeout is not None:
                answer = await self.invoke(binding, kwargs, principal, caller)
            else:
                # What invoke does when there is no context, deadline or event to
                # arrange: the common call, two coroutine frames shorter.
                try:
                    result = await binding.fn(**kwargs)
                except ServiceError:
                    raise
                except Exception as exc:
                    raise internal_error(f"handler {binding.name} failed", exc, caller) from exc
                if binding.check_result is not None:
                    binding.check_result(result)
                answer = self._page(binding, kwargs, result) if binding.paged else result
            if unsettled():
                # Acknowledged means durable: what the handler published is committed
                # before the caller hears of it (one commit shared by the iteration).
                await settle_published()
            return answer
        except ServiceError as exc:
            code = exc.code
            raise
        finally:
            SERVING_HUB.reset(serving)
            self.metrics.observe_call(
                caller.edge, binding.name, code, time.perf_counter() - started
            )

    async def invoke(
        self, binding: Binding, kwargs: dict[str, Any], principal: Principal, caller: Caller
    ) -> Any:
        """Run the handler with validated arguments (the principal already admitted).

        As this node's, like :meth:`call` (jobs come here directly).
        """
        if binding.context_param is not None:
            kwargs[binding.context_param] = self._context(binding, principal, caller)
        timeout = _earliest(caller.timeout, binding.timeout)
        serving = SERVING_HUB.set(self.hub)
        try:
            try:
                if timeout is None:
                    result = await self._run(binding, kwargs)
                else:
                    try:
                        async with asyncio.timeout(timeout):
                            result = await self._run(binding, kwargs)
                    except TimeoutError:
                        raise DeadlineExceeded(
                            f"{binding.name} did not finish within {timeout:g} s"
                        ) from None
            except ServiceError:
                raise
            except Exception as exc:
                # Includes a ValidationError raised by the handler on its own data:
                # its fault, not the caller's.
                raise internal_error(f"handler {binding.name} failed", exc, caller) from exc
            if binding.check_result is not None:
                binding.check_result(result)
            if binding.paged:
                return self._page(binding, kwargs, result)
            if binding.event is not None:
                await self._publish_crud(binding, kwargs, result)
            return result
        finally:
            SERVING_HUB.reset(serving)

    async def _run(self, binding: Binding, kwargs: dict[str, Any]) -> Any:
        if binding.is_async:
            return await binding.fn(**kwargs)
        return await asyncio.to_thread(binding.fn, **kwargs)

    def _context(self, binding: Binding, principal: Principal, caller: Caller) -> Context:
        timeout = _earliest(caller.timeout, binding.timeout)
        return Context(
            principal,
            caller.edge,
            request_id=caller.request_id,
            trace_id=caller.trace_id,
            deadline=None if timeout is None else time.monotonic() + timeout,
            service=self.service,
        )

    def _page(self, binding: Binding, kwargs: dict[str, Any], result: Any) -> PageResult:
        if isinstance(result, Page):
            raw = result.next_cursor
            return PageResult(result.items, encode_cursor(raw) if raw is not None else None)
        items = list(result)
        limit = kwargs.get("limit")
        next_cursor = None
        if items and isinstance(limit, int) and len(items) >= limit and binding.key is not None:
            next_cursor = encode_cursor(str(getattr(items[-1], binding.key)))
        return PageResult(items, next_cursor)

    async def _publish_crud(self, binding: Binding, kwargs: dict[str, Any], result: Any) -> None:
        event = binding.event
        assert event is not None and binding.key is not None
        data = {binding.key: kwargs[binding.key]} if binding.operation == "delete" else result
        try:
            await self.service.publish(EventMessage(event, data, event.channel_for(data)))
        except Exception:
            # The change happened; failing the call now would invite a retry
            # that repeats it. Log loudly instead.
            log.exception("publishing %s after %s failed", event.name, binding.name)

    # -- relations ----------------------------------------------------------------------

    async def resolve(
        self,
        relation: RelationBinding,
        parents: Sequence[Any],
        args: Mapping[str, Any] | None,
        principal: Principal,
        caller: Caller,
    ) -> list[Any]:
        """The relation's value for every parent, from one call of its batch function.

        ``principal`` was admitted by the request that reached these parents
        (one rate-limit charge per request, not per level); the relation's own
        access rules are checked here. Keys are deduplicated; parents without a
        key, or whose key the function left out, get the empty value.
        """
        started = time.perf_counter()
        code = "OK"
        try:
            self.authorize(relation.public, relation.scopes, principal)
            kwargs = relation.parse(args)
            keys = [relation.key_of(parent) for parent in parents]
            unique = list(dict.fromkeys(k for k in keys if k is not None))
            if not unique:
                return [relation.missing() for _ in keys]
            kwargs[relation.keys_param] = unique
            if relation.context_param is not None:
                timeout = caller.timeout
                kwargs[relation.context_param] = Context(
                    principal,
                    caller.edge,
                    request_id=caller.request_id,
                    trace_id=caller.trace_id,
                    deadline=None if timeout is None else time.monotonic() + timeout,
                    service=self.service,
                )
            serving = SERVING_HUB.set(self.hub)
            try:
                if relation.is_async:
                    result = await relation.fn(**kwargs)
                else:
                    result = await asyncio.to_thread(relation.fn, **kwargs)
                by_key = _by_key(relation, unique, result)
            except ServiceError:
                raise
            except Exception as exc:
                raise internal_error(f"relation {relation.name} failed", exc, caller) from exc
            finally:
                SERVING_HUB.reset(serving)
            if relation.check_value is not None:
                for value in by_key.values():
                    relation.check_value(value)
            missing = relation.missing
            return [missing() if k is None or k not in by_key else by_key[k] for k in keys]
        except ServiceError as exc:
            code = exc.code
            raise
        finally:
            self.metrics.observe_call(
                caller.edge, relation.name, code, time.perf_counter() - started
            )

    # -- streams ------------------------------------------------------------------------

    async def open_stream(
        self,
        binding: Binding,
        args: bytes | Mapping[str, Any] | None,
        caller: Caller,
        inbound: AsyncIterator[Any] | None = None,
        *,
        principal: Principal | None = None,
    ) -> StreamCall:
        """Admit and validate a streaming call, then return its items.

        Every edge that streams comes here: gRPC, SSE, the WebSocket session,
        GraphQL subscriptions. The caller is authenticated, authorized and
        charged to the rate limit — unless the edge passes the ``principal``
        it authenticated and charged itself (a GraphQL request is admitted
        once for all its fields), which is then only authorized. The items
        come with the deadline, checks, errors and metrics of a unary call
        (:class:`~polyport.core.streamcall.StreamCall`); a refusal here is
        counted in the metrics too.

        ``inbound`` feeds a client-streaming or bidirectional method; each item
        is validated against the stream parameter's type as it arrives.
        """
        if binding.kind is MethodKind.UNARY:
            raise InvalidArgument(f"{binding.name} is not a streaming method")
        started = time.perf_counter()
        try:
            if principal is None:
                principal = self.admit(binding.public, binding.scopes, caller)
            else:
                self.authorize(binding.public, binding.scopes, principal)
            kwargs = binding.parse(args)
            if binding.spec.stream_param is not None:
                if inbound is None:
                    raise InvalidArgument(f"{binding.name} needs a stream of inputs")
                kwargs[binding.spec.stream_param] = self._validated(binding, inbound)
        except ServiceError as exc:
            self.metrics.observe_call(
                caller.edge, binding.name, exc.code, time.perf_counter() - started
            )
            raise
        if binding.context_param is not None:
            kwargs[binding.context_param] = self._context(binding, principal, caller)
        if binding.kind is MethodKind.CLIENT_STREAM:
            items = _single(binding, kwargs)
        else:
            items = binding.fn(**kwargs)
        return StreamCall(
            binding,
            items,
            caller,
            metrics=self.metrics,
            internal=internal_error,
            started=started,
            timeout=_earliest(caller.timeout, binding.timeout),
            hub=self.hub,
        )

    async def _validated(self, binding: Binding, inbound: AsyncIterator[Any]) -> AsyncIterator[Any]:
        adapter = binding.stream_item
        assert adapter is not None
        # Only gRPC carries client streams, and protobuf types each item already.
        async for raw in inbound:
            try:
                if isinstance(raw, bytes | bytearray):
                    yield adapter.validate_json(raw)
                else:
                    yield adapter.validate_python(raw)
            except ValidationError as exc:
                raise invalid(exc) from None


async def _single(binding: Binding, kwargs: dict[str, Any]) -> AsyncIterator[Any]:
    """A client-streaming method's one result, as a stream of one item."""
    yield await binding.fn(**kwargs)


def _by_key(relation: RelationBinding, keys: list[Any], result: Any) -> Mapping[Any, Any]:
    if relation.spec.by_key:
        if not isinstance(result, Mapping):
            raise TypeError(f"expected a dict by key, got {type(result).__name__}")
        return result
    values = list(result)
    if len(values) != len(keys):
        raise TypeError(f"returned {len(values)} values for {len(keys)} keys; return one per key")
    return dict(zip(keys, values, strict=True))


def _earliest(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)

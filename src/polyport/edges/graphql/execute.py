"""Running plans against the dispatcher: the edge's :class:`OperationRunner`.

Values travel as the wire dicts the methods' serializers write (pydantic-core,
``mode="json"``): a plan only copies keys into the response, under their
aliases, in the order of the selection. Objects of one level are handled
together, so a relation is one :meth:`Dispatcher.resolve` call per level for
all parents — ``users { orders { items { product } } }`` is four calls for any
number of users, orders and items.

Errors: a failing root field or relation becomes ``null`` there and one error
per affected path, ``extensions.code`` from the design's table. The request
runs under one timeout; past it the answer is a ``TIMEOUT`` error.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson
from graphql import DocumentNode, OperationDefinitionNode, OperationType, SelectionSetNode
from graphql import execute_sync as graphql_execute_sync
from graphql.execution.values import VariableValues, get_argument_values, get_variable_values
from pydantic_core import PydanticSerializationError

from polyport.core.auth import Credentials
from polyport.core.context import Context, Principal
from polyport.core.dispatch import (
    Binding,
    Caller,
    Dispatcher,
    PageResult,
    RelationBinding,
    encode_cursor,
    internal_error,
    wire_adapter,
)
from polyport.core.errors import (
    InvalidArgument,
    PermissionDenied,
    ServiceError,
    Unauthenticated,
)
from polyport.core.events import Pattern, parse_patterns
from polyport.core.hub import EventHub
from polyport.core.spec import ServiceSpec
from polyport.edges.graphql import errors
from polyport.edges.graphql.documents import DocumentCache
from polyport.edges.graphql.errors import RequestError, field_error, request_error
from polyport.edges.graphql.plan import (
    INTROSPECTION,
    LEAF,
    OBJECT,
    RELATION,
    TYPENAME,
    FieldPlan,
    OperationPlan,
)
from polyport.edges.graphql.runner import ExecutionResult
from polyport.edges.graphql.schema import SchemaBuild

Path = tuple[str | int, ...]


class Request:
    """What one execution needs beside the plan."""

    __slots__ = ("caller", "errors", "pending", "principal", "variables")

    def __init__(
        self, principal: Principal, caller: Caller, variables: VariableValues | None
    ) -> None:
        self.principal = principal
        self.caller = caller
        self.variables = variables
        self.errors: list[dict[str, Any]] = []
        self.pending: list[tuple[ServiceError, dict[str, Any], FieldPlan]] = []

    def fail(self, error: ServiceError, path: Path, plan: FieldPlan) -> None:
        location = plan.location
        self.errors.append(field_error(error, path, [location] if location else ()))

    def fail_below(self, error: ServiceError, out: dict[str, Any], plan: FieldPlan) -> None:
        """An error at ``plan.key`` of the response object ``out``: its path is found later."""
        self.pending.append((error, out, plan))

    def settle(self, data: Any) -> None:
        """Turn pending errors into errors with paths, by finding their objects in ``data``."""
        if not self.pending:
            return
        paths: dict[int, Path] = {}
        _index(data, (), paths)
        for error, out, plan in self.pending:
            self.fail(error, (*paths.get(id(out), ()), plan.key), plan)
        self.pending = []


def _map_enum(value: Any, names: Mapping[Any, str]) -> Any:
    if isinstance(value, list):
        return [_map_enum(v, names) for v in value]
    return names.get(value, value) if value is not None else None


class Deadlines:
    """Per-request timeouts for many requests with one timer, not one timer each.

    A request registers its task and deadline; a sweep every quarter of the
    shortest timeout (at most every second, at least every 10 ms) cancels the
    tasks past theirs. ``asyncio.timeout`` would schedule and cancel a timer
    handle per request: measurable at thousands of requests per second.
    """

    def __init__(self) -> None:
        self._tasks: dict[asyncio.Task[Any], float] = {}
        self._expired: set[asyncio.Task[Any]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._interval = 1.0
        self._loop: asyncio.AbstractEventLoop | None = None

    def watch(self, task: asyncio.Task[Any], timeout: float) -> None:
        loop = asyncio.get_running_loop()
        self._tasks[task] = loop.time() + timeout
        interval = min(1.0, max(0.01, timeout / 4))
        if self._loop is not loop:  # a node started again on another loop
            self._loop, self._timer, self._interval = loop, None, 1.0
        if self._timer is None or interval < self._interval:
            if self._timer is not None:
                self._timer.cancel()
            self._interval = interval
            self._timer = loop.call_later(interval, self._sweep)

    def forget(self, task: asyncio.Task[Any]) -> None:
        self._tasks.pop(task, None)
        if task in self._expired:  # a handler swallowed the cancellation: take it back
            self._expired.discard(task)
            task.uncancel()

    def expired(self, task: asyncio.Task[Any]) -> bool:
        """Whether ``task`` was cancelled for its deadline (then it is no longer cancelling)."""
        if task in self._expired:
            self._expired.discard(task)
            task.uncancel()
            return True
        return False

    def _sweep(self) -> None:
        self._timer = None
        if not self._tasks:
            self._interval = 1.0
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        for task, deadline in list(self._tasks.items()):
            if deadline <= now and task not in self._expired:
                self._expired.add(task)
                task.cancel()
        self._timer = loop.call_later(self._interval, self._sweep)


class GraphQLRunner:
    """Executes operations of one service; implements :class:`runner.OperationRunner`."""

    def __init__(
        self,
        spec: ServiceSpec,
        dispatcher: Dispatcher,
        hub: EventHub,
        build: SchemaBuild,
        documents: DocumentCache,
        *,
        timeout: float,
        edge: str = "graphql",
    ) -> None:
        self.spec = spec
        self.dispatcher = dispatcher
        self.hub = hub
        self.schema = build.schema
        self.documents = documents
        self.timeout = timeout
        self.edge = edge
        self.metrics = dispatcher.metrics
        self.deadlines = Deadlines()
        #: (event, subscription field) → its result, shared by the subscribers of one event
        self._shared: dict[tuple[int, int], tuple[Any, ExecutionResult]] = {}
        #: (document, operation, variables) → the answer of its introspection fields
        self._introspected: dict[tuple[str, str | None, bytes], dict[str, Any]] = {}
        #: relation name → the serializer of a whole level of its values
        self._relation_lists: dict[str, Any] = {}
        #: (query text, operation name) → plan, for requests without variables or extensions
        self._ready: dict[tuple[str, str | None], OperationPlan] = {}
        #: resource method name → the wire name of its key (for edge cursors)
        self.key_wire: dict[str, str] = {}
        for resource in spec.resources.values():
            for method in resource.operations.values():
                self.key_wire[method.name] = resource.key.wire_name

    # -- OperationRunner ---------------------------------------------------------------

    async def authenticate(
        self, connection_params: Mapping[str, Any] | None, headers: Mapping[str, str]
    ) -> Principal:
        return self.dispatcher.authenticator.authenticate(
            credentials_from(connection_params, headers)
        )

    async def execute(self, payload: Mapping[str, Any], principal: Principal) -> ExecutionResult:
        caller = Caller(self.edge)
        try:
            return await self.run(payload, principal, caller)
        except RequestError as exc:
            return {"errors": exc.errors}
        except ServiceError as exc:  # the rate limit, before anything ran
            return {"errors": [field_error(exc, None)]}

    async def subscribe(
        self, payload: Mapping[str, Any], principal: Principal
    ) -> AsyncIterator[ExecutionResult] | ExecutionResult:
        caller = Caller(self.edge)
        try:
            plan, variables, _ = self.prepare(payload)
            if plan.operation is not OperationType.SUBSCRIPTION:
                return _once(await self.run(payload, principal, caller))
            return await self._subscribe(plan, variables, principal, caller)
        except RequestError as exc:
            return {"errors": exc.errors}
        except ServiceError as exc:
            return {"errors": [field_error(exc, None)]}

    # -- preparing -----------------------------------------------------------------------

    def prepare(
        self, payload: Mapping[str, Any]
    ) -> tuple[OperationPlan, VariableValues | None, Any]:
        """The plan and coerced variables for a request payload; RequestError if none."""
        text = payload.get("query")
        name = payload.get("operationName")
        raw_variables = payload.get("variables")
        if (
            isinstance(text, str)
            and "extensions" not in payload
            and (name is None or isinstance(name, str))
            and (raw_variables is None or isinstance(raw_variables, dict))
        ):
            ready = self._ready.get((text, name))
            if ready is not None:
                return ready, None, None
        extensions = payload.get("extensions")
        persisted = extensions.get("persistedQuery") if isinstance(extensions, dict) else None
        if persisted is not None:
            if not isinstance(persisted, dict) or not isinstance(persisted.get("sha256Hash"), str):
                raise request_error(
                    "extensions.persistedQuery needs a sha256Hash", errors.BAD_REQUEST
                )
            digest = persisted["sha256Hash"]
            if text is None:
                text = self.documents.persisted(digest.lower())
                if text is None:
                    raise request_error(
                        "PersistedQueryNotFound", errors.PERSISTED_QUERY_NOT_FOUND, status=200
                    )
            elif isinstance(text, str):
                self.documents.persist(digest, text)
        if not isinstance(text, str) or not text.strip():
            raise request_error("the request has no query", errors.BAD_REQUEST)
        if name is not None and not isinstance(name, str):
            raise request_error("operationName must be a string", errors.BAD_REQUEST)
        if raw_variables is not None and not isinstance(raw_variables, dict):
            raise request_error("variables must be an object", errors.BAD_REQUEST)
        document = self.documents.document(text)
        operation = document.operation(name)
        variables: VariableValues | None = None
        if operation.variable_definitions:
            coerced = get_variable_values(
                self.schema, operation.variable_definitions, raw_variables or {}, max_errors=20
            )
            if isinstance(coerced, list):
                raise errors.from_graphql_errors(coerced, errors.BAD_USER_INPUT, 400)
            variables = coerced
        plan = self.documents.plan(document, name, variables)
        if (
            not document.dynamic
            and not operation.variable_definitions
            and not plan.introspection
            and persisted is None
        ):
            if len(self._ready) >= self.documents.size:
                self._ready.clear()
            self._ready[(text, name)] = plan
        return plan, variables, (document.ast, operation, raw_variables, text)

    # -- queries and mutations -------------------------------------------------------------

    async def run(
        self, payload: Mapping[str, Any], principal: Principal, caller: Caller
    ) -> ExecutionResult:
        """Execute a query or mutation; RequestError when it cannot run at all."""
        plan, variables, source = self.prepare(payload)
        if plan.operation is OperationType.SUBSCRIPTION:
            raise request_error(
                "subscriptions run over the graphql-transport-ws WebSocket at /graphql",
                errors.BAD_REQUEST,
                status=405,
            )
        return await self.run_plan(plan, variables, principal, caller, source)

    async def run_plan(
        self,
        plan: OperationPlan,
        variables: VariableValues | None,
        principal: Principal,
        caller: Caller,
        source: Any = None,
    ) -> ExecutionResult:
        limiter_key = f"anon:{caller.peer}" if principal.anonymous else principal.subject
        self.dispatcher.limiter.acquire(limiter_key)
        request = Request(principal, caller, variables)
        timeout = self.timeout if caller.timeout is None else min(self.timeout, caller.timeout)
        task = asyncio.current_task()
        assert task is not None
        deadlines = self.deadlines
        deadlines.watch(task, timeout)
        try:
            data = await self._root(plan, request, source)
        except asyncio.CancelledError:
            if not deadlines.expired(task):
                raise
            return {
                "data": None,
                "errors": [
                    {
                        "message": f"the request did not finish within {timeout:g} s",
                        "extensions": {"code": errors.TIMEOUT},
                    }
                ],
            }
        finally:
            deadlines.forget(task)
        request.settle(data)
        if request.errors:
            return {"data": data, "errors": request.errors}
        return {"data": data}

    async def _root(self, plan: OperationPlan, request: Request, source: Any) -> dict[str, Any]:
        data: dict[str, Any] = {}
        introspected: dict[str, Any] | None = None
        for field in plan.fields:
            kind = field.kind
            if kind == TYPENAME:
                data[field.key] = field.typename
                continue
            if kind == INTROSPECTION:
                if introspected is None:
                    introspected = self._introspect(plan, source)
                data[field.key] = introspected.get(field.key)
                continue
            try:
                value = await self._root_value(field, request)
            except ServiceError as exc:
                request.fail(exc, (field.key,), field)
                data[field.key] = None
                continue
            children = field.children
            if children is None or value is None:
                data[field.key] = value
            elif field.sync:
                data[field.key] = _project(value, children)
            else:
                holder: list[dict[str, Any]] = [{}]
                await self._complete([value], field, holder, request, "value")
                data[field.key] = holder[0]["value"]
        return data

    def _args(self, field: FieldPlan, request: Request) -> dict[str, Any]:
        if field.args is not None:
            return field.args
        assert field.field_def is not None
        return get_argument_values(field.field_def, field.node, request.variables)

    async def _root_value(self, field: FieldPlan, request: Request) -> Any:
        source = field.source
        assert source is not None
        if source.kind == "service":
            return self.spec.name
        binding = source.binding
        if binding is None:
            raise InvalidArgument(f"{field.name} is a subscription field")
        result = await self.call(binding, self._args(field, request), request)
        if source.kind == "list":
            assert isinstance(result, PageResult)
            return self._connection(binding, result)
        if source.boolean_result:
            return True
        value = binding.dump_python(result)
        if source.enum is not None:
            value = _map_enum(value, source.enum)
        return value

    async def call(self, binding: Binding, args: Mapping[str, Any], request: Request) -> Any:
        """One method through the pipeline, for a principal already authenticated."""
        started = time.perf_counter()
        code = "OK"
        try:
            self.dispatcher.authorize(binding.public, binding.scopes, request.principal)
            kwargs = binding.parse(args)
            return await self.dispatcher.invoke(binding, kwargs, request.principal, request.caller)
        except ServiceError as exc:
            code = exc.code
            raise
        finally:
            self.metrics.observe_call(
                request.caller.edge, binding.name, code, time.perf_counter() - started
            )

    def _connection(self, binding: Binding, page: PageResult) -> dict[str, Any]:
        items = binding.dump_python(page.items)
        key = self.key_wire.get(binding.name)
        edges = [
            {
                "cursor": encode_cursor(str(item.get(key))) if key else page.next_cursor,
                "node": item,
            }
            for item in items
        ]
        return {
            "edges": edges,
            "nodes": items,
            "pageInfo": {
                "hasNextPage": page.next_cursor is not None,
                "hasPreviousPage": False,
                "startCursor": edges[0]["cursor"] if edges else None,
                "endCursor": page.next_cursor,
            },
        }

    def _introspect(self, plan: OperationPlan, source: Any) -> dict[str, Any]:
        """``__schema`` and ``__type`` by graphql-core, on a document of just those fields.

        The schema never changes while the node runs, so answers are kept by
        document, operation and variables: IDEs and clients send the same
        introspection query again and again, and it is the most expensive one.
        """
        document, operation, raw_variables, text = source
        key = (text, operation.name.value if operation.name else None, orjson.dumps(raw_variables))
        cached = self._introspected.get(key)
        if cached is not None:
            return cached
        only = OperationDefinitionNode(
            operation=operation.operation,
            name=operation.name,
            variable_definitions=operation.variable_definitions,
            directives=(),
            selection_set=SelectionSetNode(selections=tuple(plan.introspection)),
        )
        fragments = [d for d in document.definitions if d is not operation]
        result = graphql_execute_sync(
            self.schema,
            DocumentNode(definitions=(only, *fragments)),
            variable_values=raw_variables,
            operation_name=operation.name.value if operation.name else None,
        )
        answer = result.data or {}
        if not result.errors:
            if len(self._introspected) >= 64:
                self._introspected.clear()
            self._introspected[key] = answer
        return answer

    # -- selections -----------------------------------------------------------------------

    async def _select(
        self,
        parents: list[dict[str, Any]],
        fields: list[FieldPlan],
        request: Request,
    ) -> list[dict[str, Any]]:
        """Project ``fields`` of every parent at once (relations: one call for all)."""
        outs: list[dict[str, Any]] = [{} for _ in parents]
        for field in fields:
            kind = field.kind
            key = field.key
            if kind == LEAF:
                source = field.source
                assert source is not None
                wire = source.wire
                names = source.enum
                if names is None:
                    for out, parent in zip(outs, parents, strict=True):
                        out[key] = parent.get(wire)
                else:
                    for out, parent in zip(outs, parents, strict=True):
                        out[key] = _map_enum(parent.get(wire), names)
            elif kind == TYPENAME:
                for out in outs:
                    out[key] = field.typename
            elif kind == OBJECT:
                source = field.source
                assert source is not None
                wire = source.wire
                if field.sync:
                    children = field.children
                    assert children is not None
                    for out, parent in zip(outs, parents, strict=True):
                        out[key] = _project(parent.get(wire), children)
                    continue
                values = [parent.get(wire) for parent in parents]
                await self._complete(values, field, outs, request, key)
            elif kind == RELATION:
                await self._relation(parents, field, outs, request)
        return outs

    async def _relation(
        self,
        parents: list[dict[str, Any]],
        field: FieldPlan,
        outs: list[dict[str, Any]],
        request: Request,
    ) -> None:
        source = field.source
        assert source is not None and source.relation is not None
        relation = source.relation
        key = field.key
        try:
            values = await self.dispatcher.resolve(
                relation, parents, self._args(field, request), request.principal, request.caller
            )
            dumped = self._dump_relation(relation, values, request.caller)
        except ServiceError as exc:
            for out in outs:
                out[key] = None
                request.fail_below(exc, out, field)
            return
        children = field.children
        if children is None:
            names = source.enum
            for out, value in zip(outs, dumped, strict=True):
                out[key] = value if names is None else _map_enum(value, names)
            return
        if field.sync:
            for out, value in zip(outs, dumped, strict=True):
                out[key] = _project(value, children)
            return
        await self._complete(dumped, field, outs, request, key)

    def _dump_relation(
        self, relation: RelationBinding, values: list[Any], caller: Caller
    ) -> list[Any]:
        """Every parent's value as wire data, in one serializer call for the whole level."""
        serializer = self._relation_lists.get(relation.name)
        if serializer is None:
            adapter = wire_adapter(list[relation.spec.returns_annotation])  # type: ignore[name-defined]
            serializer = self._relation_lists[relation.name] = adapter.serializer.to_python
        try:
            dumped: list[Any] = serializer(values, mode="json", by_alias=True, warnings="error")
        except PydanticSerializationError as exc:
            raise internal_error(
                f"relation {relation.name} returned a value that does not match its annotation",
                exc,
                caller,
            ) from exc
        return dumped

    async def _complete(
        self,
        values: list[Any],
        field: FieldPlan,
        outs: list[dict[str, Any]],
        request: Request,
        key: str,
    ) -> None:
        """Project the objects inside ``values`` (one per parent) and store them at ``key``."""
        flat: list[dict[str, Any]] = []
        shallow = True  # objects, or lists of objects: the common shapes, without recursion
        for value in values:
            if value is None:
                continue
            if isinstance(value, dict):
                flat.append(value)
                continue
            for item in value:
                if isinstance(item, dict):
                    flat.append(item)
                elif item is not None:
                    shallow = False
                    break
            if not shallow:
                break
        if not shallow:
            flat = []
            for value in values:
                _flatten(value, flat)
        assert field.children is not None
        projected = await self._select(flat, field.children, request)
        if shallow:
            position = 0
            for out, value in zip(outs, values, strict=True):
                if value is None:
                    out[key] = None
                elif isinstance(value, dict):
                    out[key] = projected[position]
                    position += 1
                else:
                    items: list[Any] = []
                    for item in value:
                        if item is None:
                            items.append(None)
                        else:
                            items.append(projected[position])
                            position += 1
                    out[key] = items
            return
        remaining = iter(projected)
        for out, value in zip(outs, values, strict=True):
            out[key] = _rebuild(value, remaining)

    # -- subscriptions ------------------------------------------------------------------------

    async def _subscribe(
        self,
        plan: OperationPlan,
        variables: VariableValues | None,
        principal: Principal,
        caller: Caller,
    ) -> AsyncIterator[ExecutionResult]:
        field = plan.fields[0]
        source = field.source
        assert source is not None
        request = Request(principal, caller, variables)
        args = self._args(field, request)
        self.dispatcher.limiter.acquire(
            f"anon:{caller.peer}" if principal.anonymous else principal.subject
        )
        if source.kind == "event":
            assert source.event is not None
            event = source.event.event
            if not (
                event.public
                or "*" in principal.scopes
                or (not principal.anonymous and principal.has_scopes(event.scopes))
            ):
                if principal.anonymous:
                    raise Unauthenticated()
                raise PermissionDenied(f"missing scope: {' '.join(sorted(event.scopes))}")
            channel = args.get("channel") or event.channel_pattern
            patterns = parse_patterns([channel])
            own = Pattern.parse(event.channel_pattern)
            if not all(p.overlaps(own) for p in patterns):
                raise InvalidArgument(f"{channel[:100]!r} is not a channel of {event.name}")
            after = args.get("after") or "now"
            subscription = await self.hub.subscribe(
                patterns, after=after, types=frozenset({event.name})
            )
            return self._events(subscription, field, request)
        if source.kind == "stream":
            assert source.binding is not None
            items = await self._open_stream(source.binding, args, principal, caller)
            return self._items(items, field, request)
        raise InvalidArgument(f"{field.name} is not a subscription field")

    async def _events(
        self, subscription: Any, field: FieldPlan, request: Request
    ) -> AsyncIterator[ExecutionResult]:
        shared = self._shared
        try:
            async for event in subscription:
                key = (id(event), id(field))
                hit = shared.get(key)
                if hit is not None and hit[0] is event:
                    yield hit[1]
                    continue
                result = await self._one(event.to_dict(), field, request)
                if field.sync and "errors" not in result:
                    # Nothing below depends on who asks (no relation to authorize):
                    # every subscriber of this document gets this very object, which
                    # the transport then encodes once. An event wakes all of them in
                    # one loop iteration; the entries live until the next.
                    if not shared:
                        asyncio.get_running_loop().call_soon(shared.clear)
                    elif len(shared) >= 10_000:
                        shared.clear()
                    shared[key] = (event, result)
                yield result
        finally:
            subscription.close()

    async def _items(
        self, items: AsyncIterator[Any], field: FieldPlan, request: Request
    ) -> AsyncIterator[ExecutionResult]:
        source = field.source
        assert source is not None and source.binding is not None
        binding = source.binding
        try:
            async for item in items:
                value = binding.dump_python(item)
                if source.enum is not None:
                    value = _map_enum(value, source.enum)
                yield await self._one(value, field, request)
        finally:
            close = getattr(items, "aclose", None)
            if close is not None:
                await close()

    async def _one(self, value: Any, field: FieldPlan, request: Request) -> ExecutionResult:
        request.errors = []
        if field.children is None or value is None:
            data: Any = value
        else:
            holder: list[dict[str, Any]] = [{}]
            await self._complete([value], field, holder, request, "value")
            data = holder[0]["value"]
        result: ExecutionResult = {"data": {field.key: data}}
        request.settle(result["data"])
        if request.errors:
            result["errors"] = request.errors
        return result

    async def _open_stream(
        self, binding: Binding, args: Mapping[str, Any], principal: Principal, caller: Caller
    ) -> AsyncIterator[Any]:
        self.dispatcher.authorize(binding.public, binding.scopes, principal)
        kwargs = binding.parse(args)
        if binding.context_param is not None:
            kwargs[binding.context_param] = Context(
                principal,
                caller.edge,
                request_id=caller.request_id,
                service=self.spec.service,
            )
        self.metrics.observe_call(caller.edge, binding.name, "OK", 0.0)
        return _guarded(binding, binding.fn(**kwargs), caller)


async def _guarded(
    binding: Binding, items: AsyncIterator[Any], caller: Caller
) -> AsyncIterator[Any]:
    try:
        async for item in items:
            yield item
    except ServiceError:
        raise
    except Exception as exc:
        raise internal_error(f"stream {binding.name} failed", exc, caller) from exc


async def _once(result: ExecutionResult) -> AsyncIterator[ExecutionResult]:
    yield result


def _project(value: Any, fields: list[FieldPlan]) -> Any:
    """The selection of ``fields`` from an object (or list of them) without relations below."""
    if value is None:
        return None
    if isinstance(value, list):
        return [_project(item, fields) for item in value]
    out: dict[str, Any] = {}
    for field in fields:
        kind = field.kind
        if kind == LEAF:
            source = field.source
            assert source is not None
            names = source.enum
            item = value.get(source.wire)
            out[field.key] = item if names is None else _map_enum(item, names)
        elif kind == TYPENAME:
            out[field.key] = field.typename
        else:  # OBJECT
            source = field.source
            assert source is not None and field.children is not None
            out[field.key] = _project(value.get(source.wire), field.children)
    return out


def _flatten(value: Any, flat: list[dict[str, Any]]) -> None:
    if value is None:
        return
    if isinstance(value, list):
        for item in value:
            _flatten(item, flat)
        return
    flat.append(value)


def _index(value: Any, path: Path, paths: dict[int, Path]) -> None:
    """The path of every response object inside ``value``, by identity."""
    if isinstance(value, dict):
        paths[id(value)] = path
        for key, item in value.items():
            if isinstance(item, dict | list):
                _index(item, (*path, key), paths)
    elif isinstance(value, list):
        for position, item in enumerate(value):
            if isinstance(item, dict | list):
                _index(item, (*path, position), paths)


def _rebuild(value: Any, projected: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, list):
        return [_rebuild(item, projected) for item in value]
    return next(projected)


def credentials_from(params: Mapping[str, Any] | None, headers: Mapping[str, str]) -> Credentials:
    """A bearer token or API key from ``connection_init``'s payload, else from the headers."""
    bearer: str | None = None
    api_key: str | None = None
    for source in (params or {}, headers):
        lowered = {str(k).lower(): v for k, v in source.items()}
        authorization = lowered.get("authorization")
        key = lowered.get("x-api-key") or lowered.get("apikey") or lowered.get("api_key")
        if isinstance(authorization, str) and authorization:
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise Unauthenticated("authorization must be 'Bearer <token>'", invalid_token=True)
            bearer = token.strip()
        token_value = lowered.get("token") or lowered.get("access_token")
        if bearer is None and isinstance(token_value, str) and token_value:
            bearer = token_value
        if isinstance(key, str) and key:
            api_key = key
        if bearer is not None or api_key is not None:
            break
    return Credentials(bearer=bearer, api_key=api_key)


__all__ = ["GraphQLRunner", "credentials_from"]

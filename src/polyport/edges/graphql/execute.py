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
from polyport.core.context import Principal
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
    ServiceError,
    Unauthenticated,
)
from polyport.core.hub import EventHub
from polyport.core.spec import ServiceSpec
from polyport.edges.graphql import errors
from polyport.edges.graphql.deadlines import Deadlines
from polyport.edges.graphql.documents import DocumentCache
from polyport.edges.graphql.errors import RequestError, field_error, request_error
from polyport.edges.graphql.limits import check_variables
from polyport.edges.graphql.plan import (
    INTROSPECTION,
    LEAF,
    OBJECT,
    RELATION,
    TYPENAME,
    FieldPlan,
    OperationPlan,
)
from polyport.edges.graphql.projection import (
    Path,
    flatten,
    index_paths,
    map_enum,
    project,
    rebuild,
)
from polyport.edges.graphql.runner import ExecutionResult
from polyport.edges.graphql.schema import SchemaBuild
from polyport.edges.graphql.subscriptions import Subscriptions


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
        index_paths(data, (), paths)
        for error, out, plan in self.pending:
            self.fail(error, (*paths.get(id(out), ()), plan.key), plan)
        self.pending = []


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
        self.subscriptions = Subscriptions(self)
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

    async def execute(
        self, payload: Mapping[str, Any], principal: Principal, *, peer: str | None = None
    ) -> ExecutionResult:
        caller = Caller(self.edge, peer=peer)
        try:
            return await self.run(payload, principal, caller)
        except RequestError as exc:
            return {"errors": exc.errors}
        except ServiceError as exc:  # the rate limit, before anything ran
            return {"errors": [field_error(exc, None)]}

    async def subscribe(
        self, payload: Mapping[str, Any], principal: Principal, *, peer: str | None = None
    ) -> AsyncIterator[ExecutionResult] | ExecutionResult:
        caller = Caller(self.edge, peer=peer)
        try:
            self.charge(principal, caller)
            plan, variables, _ = self.prepare(payload)
            if plan.operation is not OperationType.SUBSCRIPTION:
                return _once(await self.run(payload, principal, caller, charged=True))
            return await self.subscriptions.start(plan, variables, principal, caller)
        except RequestError as exc:
            return {"errors": exc.errors}
        except ServiceError as exc:
            return {"errors": [field_error(exc, None)]}

    def charge(self, principal: Principal, caller: Caller) -> None:
        """Take one request from the caller's rate limit, before the document costs anything.

        Charged before :meth:`prepare`, so a flood of refused (or distinct)
        documents from one caller is rate limited like any other requests.
        """
        self.dispatcher.limiter.acquire(
            f"anon:{caller.peer}" if principal.anonymous else principal.subject
        )

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
                self.documents.check_digest(digest, text)
        if not isinstance(text, str) or not text.strip():
            raise request_error("the request has no query", errors.BAD_REQUEST)
        if name is not None and not isinstance(name, str):
            raise request_error("operationName must be a string", errors.BAD_REQUEST)
        if raw_variables is not None and not isinstance(raw_variables, dict):
            raise request_error("variables must be an object", errors.BAD_REQUEST)
        document = self.documents.document(text)
        if persisted is not None:
            self.documents.persist(persisted["sha256Hash"], text)  # only a valid document
        operation = document.operation(name)
        variables: VariableValues | None = None
        if raw_variables:
            check_variables(raw_variables, self.documents.limits.variable_values)
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
        self,
        payload: Mapping[str, Any],
        principal: Principal,
        caller: Caller,
        *,
        charged: bool = False,
    ) -> ExecutionResult:
        """Execute a query or mutation; RequestError when it cannot run at all."""
        if not charged:
            self.charge(principal, caller)
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
        """Run a prepared plan (the caller was charged before it was prepared)."""
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
                data[field.key] = project(value, children)
            else:
                holder: list[dict[str, Any]] = [{}]
                await self._complete([value], field, holder, request, "value")
                data[field.key] = holder[0]["value"]
        return data

    @staticmethod
    def new_request(
        principal: Principal, caller: Caller, variables: VariableValues | None
    ) -> Request:
        return Request(principal, caller, variables)

    def arguments(self, field: FieldPlan, request: Request) -> dict[str, Any]:
        """The field's arguments by parameter name: coerced once, or now from variables."""
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
        result = await self.call(binding, self.arguments(field, request), request)
        if source.kind == "list":
            assert isinstance(result, PageResult)
            return self._connection(binding, result)
        if source.boolean_result:
            return True
        value = binding.dump_python(result)
        if source.enum is not None:
            value = map_enum(value, source.enum)
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
                        out[key] = map_enum(parent.get(wire), names)
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
                        out[key] = project(parent.get(wire), children)
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
                relation, parents, self.arguments(field, request), request.principal, request.caller
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
                out[key] = value if names is None else map_enum(value, names)
            return
        if field.sync:
            for out, value in zip(outs, dumped, strict=True):
                out[key] = project(value, children)
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
                flatten(value, flat)
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
            out[key] = rebuild(value, remaining)

    async def result_of(self, value: Any, field: FieldPlan, request: Request) -> ExecutionResult:
        """One subscription item as an execution result, projected through ``field``."""
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


async def _once(result: ExecutionResult) -> AsyncIterator[ExecutionResult]:
    yield result


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

"""The GraphQL schema, written from the type graph (never from Python types directly).

==========================  ===============================================
contract                    GraphQL
==========================  ===============================================
model ``User``              object type ``User``, input type ``UserInput``
enum / ``Literal[...]``     enum (values by member name; a Literal of names)
``X | None``                nullable ``X`` (everything else is ``X!``)
``list[X]``                 ``[X!]!``
``dict``, ``Any``, unions   ``JSON``
``users.get``               ``Query.user(id: …): User``
``users.list``              ``Query.users(first: Int, after: String): UserConnection``
``users.create/update/…``   ``Mutation.createUser(…)`` ``updateUser`` ``deleteUser``
``@service.method``         ``Mutation.<camelName>(…)``
``@service.stream``         ``Subscription.<camelName>(…)``
event type ``orders.created``  ``Subscription.ordersCreated(channel, after): OrdersCreatedEvent!``
relation ``User.orders``    field ``User.orders(limit: …)``, resolved in batches
==========================  ===============================================

Every field carries what the executor needs in its ``extensions["polyport"]``
(a :class:`FieldSource`), so the compiled plans read one structure: the schema.
Methods returning nothing return ``Boolean`` (``true``). Root fields and
relations are nullable so that an error there nulls only that field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from graphql import (
    GraphQLArgument,
    GraphQLBoolean,
    GraphQLEnumType,
    GraphQLEnumValue,
    GraphQLField,
    GraphQLFloat,
    GraphQLInputField,
    GraphQLInputObjectType,
    GraphQLInputType,
    GraphQLInt,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLSchema,
    GraphQLString,
)

from polyport.core.contract import MethodKind
from polyport.core.dispatch import Binding, Dispatcher, RelationBinding
from polyport.core.spec import EventSpec, MethodSpec, ServiceSpec
from polyport.core.types import (
    MISSING,
    DictOf,
    EnumRef,
    FieldSpec,
    ListOf,
    LiteralOf,
    ModelRef,
    Nullable,
    Scalar,
    TypeNode,
    UnionOf,
    UnitType,
)
from polyport.edges.graphql import scalars
from polyport.edges.graphql.names import NameRegistry, camel, lower_first, upper_first, valid_name

SourceKind = Literal["get", "list", "call", "relation", "stored", "event", "stream", "service"]

_INT32 = (scalars.INT32_MIN, scalars.INT32_MAX)


@dataclass(frozen=True, slots=True)
class FieldSource:
    """Where a field's value comes from.

    ``stored``: the key ``wire`` of the parent's dict. ``relation``: a batch
    call per level. The root kinds call a method (``get``/``list``/``call``),
    open a stream, or follow an event type. ``args`` maps GraphQL argument
    names to parameter names (graphql-core coerces to ``out_name`` already;
    this is for the cost estimate). ``enum`` maps wire values to GraphQL enum
    names for leaves whose names differ from their values.
    """

    kind: SourceKind
    wire: str = ""
    binding: Binding | None = None
    relation: RelationBinding | None = None
    event: EventSpec | None = None
    enum: Mapping[Any, str] | None = None
    #: The argument that bounds the size of the list this field returns (cost).
    size_arg: str | None = None
    size_default: int = 10
    size_max: int = 100
    boolean_result: bool = False  # the method returns nothing: answer true


def source_of(field_def: GraphQLField) -> FieldSource | None:
    ext = field_def.extensions
    return ext.get("polyport") if ext else None


@dataclass(slots=True)
class SchemaBuild:
    """The schema and the lookups the executor needs beside it."""

    schema: GraphQLSchema
    #: GraphQL enum type name → wire value → GraphQL name (only where they differ).
    enum_names: dict[str, dict[Any, str]] = field(default_factory=dict)


_SCALARS: dict[str, Any] = {
    "float": GraphQLFloat,
    "bool": GraphQLBoolean,
    "str": GraphQLString,
    "bytes": scalars.BytesScalar,
    "datetime": scalars.DateTime,
    "date": scalars.Date,
    "time": scalars.Time,
    "uuid": scalars.Uuid,
    "decimal": scalars.DecimalScalar,
    "any": scalars.Json,
}


def _int_type(node: Scalar) -> Any:
    c = node.constraints
    low = c.ge if c.ge is not None else (c.gt + 1 if c.gt is not None else None)
    high = c.le if c.le is not None else (c.lt - 1 if c.lt is not None else None)
    if low is not None and high is not None and _INT32[0] <= low and high <= _INT32[1]:
        return GraphQLInt
    return scalars.Long


class SchemaBuilder:
    """Writes one service's schema; call :meth:`build` once."""

    def __init__(self, spec: ServiceSpec, dispatcher: Dispatcher) -> None:
        self.spec = spec
        self.graph = spec.graph
        self.dispatcher = dispatcher
        self.names = NameRegistry({"Query", "Mutation", "Subscription", "PageInfo"})
        for scalar in scalars.ALL:
            self.names.taken.add(scalar.name)
        self.names.taken.update({"Int", "Float", "String", "Boolean", "ID"})
        self.objects: dict[str, GraphQLObjectType] = {}
        self.inputs: dict[str, GraphQLInputObjectType] = {}
        self.enums: dict[str, GraphQLEnumType] = {}
        self.literals: dict[tuple[Any, ...], GraphQLEnumType] = {}
        self.connections: dict[str, GraphQLObjectType] = {}
        self.enum_names: dict[str, dict[Any, str]] = {}
        self.object_names: dict[str, str] = {}
        for model in self.graph.models:
            self.object_names[model] = self.names.claim(model)
        self.page_info = GraphQLObjectType(
            "PageInfo",
            lambda: {
                "hasNextPage": _stored("hasNextPage", GraphQLNonNull(GraphQLBoolean)),
                "hasPreviousPage": _stored("hasPreviousPage", GraphQLNonNull(GraphQLBoolean)),
                "startCursor": _stored("startCursor", GraphQLString),
                "endCursor": _stored(
                    "endCursor",
                    GraphQLString,
                    "Pass it as `after` for the next page; null on the last page.",
                ),
            },
            description="Where a page sits in its list (Relay cursor connections).",
        )

    # -- types ----------------------------------------------------------------------

    def output(self, node: TypeNode) -> GraphQLOutputType:
        """The nullable-aware output type of ``node`` (non-null unless ``Nullable``)."""
        if isinstance(node, Nullable):
            inner = self.output(node.inner)
            return inner.of_type if isinstance(inner, GraphQLNonNull) else inner
        return GraphQLNonNull(self._named_output(node))

    def _named_output(self, node: TypeNode) -> Any:
        if isinstance(node, ListOf):
            return GraphQLList(self.output(node.item))
        if isinstance(node, ModelRef):
            return self.object(node.name)
        return self._leaf(node)

    def _leaf(self, node: TypeNode) -> Any:
        if isinstance(node, Scalar):
            if node.kind == "int":
                return _int_type(node)
            return _SCALARS[node.kind]
        if isinstance(node, EnumRef):
            return self.enum(node.name)
        if isinstance(node, LiteralOf):
            return self.literal(node)
        if isinstance(node, UnitType):
            return GraphQLBoolean
        if isinstance(node, DictOf | UnionOf):
            return scalars.Json
        raise TypeError(f"no GraphQL type for {node!r}")

    def input(self, node: TypeNode, required: bool = True) -> GraphQLInputType:
        if isinstance(node, Nullable):
            return self.input(node.inner, required=False)
        named: Any
        if isinstance(node, ListOf):
            named = GraphQLList(self.input(node.item))
        elif isinstance(node, ModelRef):
            named = self.input_object(node.name)
        else:
            named = self._leaf(node)
        return GraphQLNonNull(named) if required else named

    def enum(self, name: str) -> GraphQLEnumType:
        if name not in self.enums:
            enum = self.graph.enums[name]
            values = {valid_name(member): GraphQLEnumValue(value) for member, value in enum.members}
            gql_name = self.names.claim(name)
            self.enums[name] = GraphQLEnumType(gql_name, values, description=enum.description)
            self.enum_names[gql_name] = {v.value: k for k, v in values.items()}
        return self.enums[name]

    def literal(self, node: LiteralOf) -> Any:
        values = node.values
        if all(isinstance(v, str) and valid_name(v) == v for v in values):
            if values not in self.literals:
                name = self.names.claim(upper_first(camel("_".join(str(v) for v in values))))
                self.literals[values] = GraphQLEnumType(
                    name, {str(v): GraphQLEnumValue(v) for v in values}
                )
            return self.literals[values]
        if all(isinstance(v, bool) for v in values):
            return GraphQLBoolean
        if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            return scalars.Long
        return GraphQLString

    def _enum_map(self, node: TypeNode) -> Mapping[Any, str] | None:
        """Wire value → GraphQL name for an enum leaf whose names differ from its values."""
        while isinstance(node, Nullable | ListOf):
            node = node.inner if isinstance(node, Nullable) else node.item
        if isinstance(node, EnumRef):
            enum = self.enum(node.name)
            mapping = self.enum_names[enum.name]
            if any(k != v for k, v in mapping.items()):
                return mapping
        return None

    def object(self, model: str) -> GraphQLObjectType:
        if model not in self.objects:
            mtype = self.graph.model(model)
            self.objects[model] = GraphQLObjectType(
                self.object_names[model],
                lambda: self._object_fields(model),
                description=mtype.description,
            )
        return self.objects[model]

    def _object_fields(self, model: str) -> dict[str, GraphQLField]:
        mtype = self.graph.model(model)
        fields: dict[str, GraphQLField] = {}
        for spec in mtype.fields:
            fields[camel(spec.wire_name)] = GraphQLField(
                self.output(spec.type),
                description=spec.description,
                extensions={
                    "polyport": FieldSource(
                        "stored", wire=spec.wire_name, enum=self._enum_map(spec.type)
                    )
                },
            )
        for name, relation in self.dispatcher.relations.get(model, {}).items():
            rspec = relation.spec
            out = self.output(rspec.returns)
            if isinstance(out, GraphQLNonNull):
                out = out.of_type  # an error nulls only this field
            size = _size_param(rspec.params)
            fields[camel(name)] = GraphQLField(
                out,
                args=self._args(rspec.params),
                description=_describe(rspec.summary, rspec.description),
                extensions={
                    "polyport": FieldSource(
                        "relation",
                        wire=name,
                        relation=relation,
                        enum=self._enum_map(rspec.returns),
                        **size,
                    )
                },
            )
        return fields

    def input_object(self, model: str) -> GraphQLInputObjectType:
        if model not in self.inputs:
            mtype = self.graph.model(model)

            def fields() -> dict[str, GraphQLInputField]:
                return {
                    camel(spec.wire_name): GraphQLInputField(
                        self.input(spec.type, required=spec.required),
                        description=spec.description,
                        out_name=spec.wire_name,
                    )
                    for spec in mtype.fields
                }

            self.inputs[model] = GraphQLInputObjectType(
                self.names.claim(f"{self.object_names[model]}Input"),
                fields,
                description=mtype.description,
            )
        return self.inputs[model]

    def _args(
        self, params: tuple[FieldSpec, ...], rename: Mapping[str, str] | None = None
    ) -> dict[str, GraphQLArgument]:
        args: dict[str, GraphQLArgument] = {}
        for spec in params:
            gql_name = (rename or {}).get(spec.name) or camel(spec.name)
            kwargs: dict[str, Any] = {}
            if spec.default is not MISSING and _plain_default(spec.default):
                kwargs["default_value"] = spec.default
            args[gql_name] = GraphQLArgument(
                self.input(spec.type, required=spec.required),
                description=spec.description,
                out_name=spec.name,
                **kwargs,
            )
        return args

    def connection(self, model: str) -> GraphQLObjectType:
        if model not in self.connections:
            node_type = self.object(model)
            base = node_type.name
            edge = GraphQLObjectType(
                self.names.claim(f"{base}Edge"),
                {
                    "cursor": _stored(
                        "cursor",
                        GraphQLNonNull(GraphQLString),
                        "Resume after this item (see docs/graphql.md).",
                    ),
                    "node": _stored("node", GraphQLNonNull(node_type)),
                },
            )
            self.connections[model] = GraphQLObjectType(
                self.names.claim(f"{base}Connection"),
                {
                    "edges": _stored("edges", GraphQLNonNull(GraphQLList(GraphQLNonNull(edge)))),
                    "nodes": _stored(
                        "nodes", GraphQLNonNull(GraphQLList(GraphQLNonNull(node_type)))
                    ),
                    "pageInfo": _stored("pageInfo", GraphQLNonNull(self.page_info)),
                },
                description=f"A page of {base} items.",
            )
        return self.connections[model]

    # -- roots ----------------------------------------------------------------------

    def build(self) -> SchemaBuild:
        roots = NameRegistry({"__schema", "__type", "__typename", "_service"})
        query: dict[str, GraphQLField] = {}
        mutation: dict[str, GraphQLField] = {}
        subscription: dict[str, GraphQLField] = {}
        bindings = self.dispatcher.bindings
        for resource in self.spec.resources.values():
            model_name = self.object_names[resource.model]
            for op, method in resource.operations.items():
                binding = bindings[method.name]
                if op == "get":
                    query[roots.claim(lower_first(model_name))] = self._get(method, binding)
                elif op == "list":
                    query[roots.claim(camel(resource.name))] = self._list(
                        method, binding, resource.model
                    )
                else:
                    name = roots.claim(f"{op}{model_name}")
                    mutation[name] = self._call(method, binding)
        for method in self.spec.methods.values():
            if method.resource is not None:
                continue
            binding = bindings[method.name]
            if method.kind is MethodKind.UNARY:
                mutation[roots.claim(camel(method.name))] = self._call(method, binding)
            elif method.kind is MethodKind.SERVER_STREAM:
                subscription[roots.claim(camel(method.name))] = self._stream(method, binding)
        for event in self.spec.events.values():
            subscription[roots.claim(camel(event.name.replace(".", "_")))] = self._event(event)
        query["_service"] = GraphQLField(
            GraphQLNonNull(GraphQLString),
            description="The name of the service this schema serves.",
            extensions={"polyport": FieldSource("service")},
        )
        schema = GraphQLSchema(
            query=GraphQLObjectType("Query", query, description=self.spec.service.description),
            mutation=GraphQLObjectType("Mutation", mutation) if mutation else None,
            subscription=GraphQLObjectType("Subscription", subscription) if subscription else None,
            types=list(scalars.ALL),
        )
        return SchemaBuild(schema, self.enum_names)

    def _result(self, method: MethodSpec) -> tuple[GraphQLOutputType, bool]:
        if isinstance(method.returns, UnitType):
            return GraphQLBoolean, True
        out = self.output(method.returns)
        return (out.of_type if isinstance(out, GraphQLNonNull) else out), False

    def _get(self, method: MethodSpec, binding: Binding) -> GraphQLField:
        out, _ = self._result(method)
        return GraphQLField(
            out,
            args=self._args(method.params),
            description=_describe(method.summary, method.description),
            extensions={"polyport": FieldSource("get", binding=binding)},
        )

    def _list(self, method: MethodSpec, binding: Binding, model: str) -> GraphQLField:
        limit = method.param("limit")
        size = _bounds(limit)
        return GraphQLField(
            self.connection(model),  # nullable: an error nulls only this field
            args=self._args(method.params, {"limit": "first", "cursor": "after"}),
            description=_describe(method.summary, method.description),
            extensions={
                "polyport": FieldSource(
                    "list",
                    binding=binding,
                    size_arg="limit",
                    size_default=size[0],
                    size_max=size[1],
                )
            },
        )

    def _call(self, method: MethodSpec, binding: Binding) -> GraphQLField:
        out, boolean = self._result(method)
        size = _size_param(method.params) if isinstance(method.returns, ListOf) else {}
        return GraphQLField(
            out,
            args=self._args(method.params),
            description=_describe(method.summary, method.description),
            extensions={
                "polyport": FieldSource(
                    "call",
                    binding=binding,
                    boolean_result=boolean,
                    enum=self._enum_map(method.returns),
                    **size,
                )
            },
        )

    def _stream(self, method: MethodSpec, binding: Binding) -> GraphQLField:
        return GraphQLField(
            self.output(method.returns),
            args=self._args(method.params),
            description=_describe(method.summary, method.description),
            extensions={
                "polyport": FieldSource(
                    "stream", binding=binding, enum=self._enum_map(method.returns)
                )
            },
        )

    def _event(self, event: EventSpec) -> GraphQLField:
        base = upper_first(camel(event.name.replace(".", "_")))
        payload = self.output(event.payload)
        envelope = GraphQLObjectType(
            self.names.claim(f"{base}Event"),
            {
                "id": _stored("id", GraphQLNonNull(GraphQLString), "Resume after it with `after`."),
                "channel": _stored("channel", GraphQLNonNull(GraphQLString)),
                "offset": _stored("offset", GraphQLNonNull(scalars.Long)),
                "epoch": _stored("epoch", GraphQLNonNull(GraphQLString)),
                "type": _stored("type", GraphQLNonNull(GraphQLString)),
                "time": _stored("time", GraphQLNonNull(scalars.DateTime)),
                "data": GraphQLField(
                    payload,
                    extensions={
                        "polyport": FieldSource(
                            "stored", wire="data", enum=self._enum_map(event.payload)
                        )
                    },
                ),
            },
            description=event.description,
        )
        return GraphQLField(
            GraphQLNonNull(envelope),
            args={
                "channel": GraphQLArgument(
                    GraphQLString,
                    description=(
                        "The channel (or an MQTT-style pattern with + and #); "
                        f"default {event.event.channel_pattern}."
                    ),
                ),
                "after": GraphQLArgument(
                    GraphQLString,
                    description="Resume after this event id ('now' by default; 'earliest': all).",
                ),
            },
            description=event.description,
            extensions={"polyport": FieldSource("event", event=event)},
        )


def _stored(key: str, type_: GraphQLOutputType, description: str | None = None) -> GraphQLField:
    return GraphQLField(
        type_, description=description, extensions={"polyport": FieldSource("stored", wire=key)}
    )


def _describe(summary: str | None, description: str | None) -> str | None:
    if summary and description:
        return f"{summary}\n\n{description}"
    return summary or description


def _plain_default(value: Any) -> bool:
    if isinstance(value, list | dict):
        return not value
    return isinstance(value, str | int | float | bool)


def _bounds(spec: FieldSpec) -> tuple[int, int]:
    """(default, maximum) of a size parameter, for the cost estimate."""
    node = spec.type.inner if isinstance(spec.type, Nullable) else spec.type
    high = 100
    if isinstance(node, Scalar):
        if node.constraints.le is not None:
            high = int(node.constraints.le)
        elif node.constraints.lt is not None:
            high = int(node.constraints.lt) - 1
    default = spec.default if isinstance(spec.default, int) else high
    return default, high


def _size_param(params: tuple[FieldSpec, ...]) -> dict[str, Any]:
    for spec in params:
        if spec.name in ("limit", "first", "size", "count", "page_size"):
            default, high = _bounds(spec)
            return {"size_arg": spec.name, "size_default": default, "size_max": high}
    return {}


def build_schema(spec: ServiceSpec, dispatcher: Dispatcher) -> SchemaBuild:
    """The schema of ``spec``, with field sources for the executor."""
    return SchemaBuilder(spec, dispatcher).build()


__all__ = ["FieldSource", "SchemaBuild", "build_schema", "source_of"]

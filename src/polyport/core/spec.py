"""The analysed contract: signatures read into the type graph, once.

:func:`build_spec` turns a declared :class:`~polyport.core.contract.Service`
into a :class:`ServiceSpec`. Generators (OpenAPI, SDL, protobuf, WSDL, …) and
the dispatch pipeline read this; nothing else inspects handler signatures.
"""

from __future__ import annotations

import collections.abc
import inspect
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import BaseModel, Field
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from polyport.core.context import Context
from polyport.core.contract import (
    EventType,
    Method,
    MethodKind,
    Operation,
    Page,
    Relation,
    Resource,
    Service,
)
from polyport.core.errors import ContractError
from polyport.core.queues import Queue
from polyport.core.textforms import int_range, integer_pattern
from polyport.core.typegraph import TypeGraph, jsonable_default
from polyport.core.types import (
    MISSING,
    Constraints,
    FieldSpec,
    ListOf,
    ModelRef,
    Nullable,
    Scalar,
    TypeNode,
    Unit,
    unwrap_nullable,
)

_STREAM_ORIGINS = (
    collections.abc.AsyncIterator,
    collections.abc.AsyncIterable,
    collections.abc.AsyncGenerator,
)


@dataclass(frozen=True, slots=True)
class Docs:
    summary: str | None
    description: str | None
    params: dict[str, str]


_SECTION = re.compile(r"^(Args|Arguments|Parameters|Params):\s*$")
_PARAM_LINE = re.compile(r"^\s+(\*{0,2}\w+)(\s*\([^)]*\))?:\s*(.*)$")


def parse_docstring(doc: str | None) -> Docs:
    """Summary, description and Google-style ``Args:`` entries of a docstring."""
    if not doc:
        return Docs(None, None, {})
    lines = inspect.cleandoc(doc).splitlines()
    body: list[str] = []
    params: dict[str, str] = {}
    current: str | None = None
    in_args = False
    for line in lines:
        if _SECTION.match(line):
            in_args = True
            continue
        if in_args:
            match = _PARAM_LINE.match(line)
            if match:
                current = match.group(1).lstrip("*")
                params[current] = match.group(3).strip()
                continue
            if line.startswith((" ", "\t")) and current and line.strip():
                params[current] += " " + line.strip()
                continue
            if not line.strip():
                continue
            in_args = False
        body.append(line)
    text = "\n".join(body).strip()
    if not text:
        return Docs(None, None, params)
    summary, _, rest = text.partition("\n\n")
    summary = " ".join(summary.split())
    return Docs(summary, rest.strip() or None, params)


@dataclass(frozen=True, slots=True)
class MethodSpec:
    """A method as the type graph sees it, with everything edges need to serve it."""

    name: str
    kind: MethodKind
    method: Method
    summary: str | None
    description: str | None
    params: tuple[FieldSpec, ...]  # wire-visible parameters, in order
    annotations: dict[str, Any]  # Python annotation per parameter (for validators)
    defaults: dict[str, Any]  # Python default per optional parameter
    returns: TypeNode  # for server streams: the item type
    returns_annotation: Any
    context_param: str | None
    stream_param: str | None  # the client-stream parameter
    stream_item: TypeNode | None
    stream_item_annotation: Any
    paged: bool  # a resource list: (items, next cursor)
    #: The graph the nodes above belong to (for checks built from them).
    graph: TypeGraph = field(repr=False, compare=False, default_factory=TypeGraph)
    #: Parameters whose default the function cannot supply itself (``= Field(…)``):
    #: each one's default, or the factory that makes it for each call.
    fills: dict[str, Any] = field(default_factory=dict)
    factories: dict[str, Callable[[], Any]] = field(default_factory=dict)
    #: A keyset list's cursor: the expression its text (a key) matches, if it has one.
    cursor_pattern: str | None = None

    @property
    def resource(self) -> Resource | None:
        return self.method.resource

    @property
    def operation(self) -> Operation | None:
        return self.method.operation

    @property
    def public(self) -> bool:
        return self.method.public

    @property
    def scopes(self) -> frozenset[str]:
        return self.method.scopes

    def param(self, name: str) -> FieldSpec:
        for spec in self.params:
            if spec.name == name:
                return spec
        raise KeyError(name)


@dataclass(frozen=True, slots=True)
class EventSpec:
    name: str
    event: EventType
    payload: TypeNode
    annotation: Any
    description: str | None


@dataclass(frozen=True, slots=True)
class QueueSpec:
    """A message queue as the type graph sees it: its name and its message's type."""

    name: str
    queue: Queue
    payload: TypeNode
    annotation: Any
    description: str | None
    #: What the consumer returns to a call (``queue.call``), if it returns anything.
    reply: TypeNode | None = None


@dataclass(frozen=True, slots=True)
class ResourceSpec:
    name: str
    resource: Resource
    model: str  # the model's name in the type graph
    key: FieldSpec
    operations: dict[Operation, MethodSpec]


@dataclass(frozen=True, slots=True)
class RelationSpec:
    """A relation as the type graph sees it: ``Model.name(args) -> V``, batched by key."""

    name: str
    model: str  # the parent model's name in the type graph
    relation: Relation
    via: FieldSpec  # the parent field whose values are the keys
    summary: str | None
    description: str | None
    keys_param: str
    key_annotation: Any
    params: tuple[FieldSpec, ...]  # the field's arguments
    annotations: dict[str, Any]
    defaults: dict[str, Any]
    fills: dict[str, Any]
    factories: dict[str, Callable[[], Any]]
    returns: TypeNode  # V: the value for one parent
    returns_annotation: Any
    by_key: bool  # the function returns dict[K, V] (else list[V] aligned with the keys)
    context_param: str | None
    graph: TypeGraph = field(repr=False, compare=False, default_factory=TypeGraph)

    @property
    def public(self) -> bool:
        return self.relation.public

    @property
    def scopes(self) -> frozenset[str]:
        return self.relation.scopes

    @property
    def qualified_name(self) -> str:
        return f"{self.model}.{self.name}"

    @property
    def nullable(self) -> bool:
        """A to-one relation is null for a parent whose key the function left out."""
        inner, _ = unwrap_nullable(self.returns)
        return not isinstance(inner, ListOf)


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    service: Service
    graph: TypeGraph
    methods: dict[str, MethodSpec]
    resources: dict[str, ResourceSpec]
    events: dict[str, EventSpec]
    #: model name → field name → relation
    relations: dict[str, dict[str, RelationSpec]] = field(default_factory=dict)
    queues: dict[str, QueueSpec] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.service.name

    @property
    def version(self) -> int:
        return self.service.version


def _stream_item(annotation: Any) -> Any | None:
    """``X`` for ``AsyncIterator[X]`` and friends, else None."""
    origin = typing.get_origin(annotation)
    if origin in _STREAM_ORIGINS:
        args = typing.get_args(annotation)
        return args[0] if args else Any
    return None


def _list_item(annotation: Any) -> tuple[Any, bool] | None:
    """``(X, paged)`` for ``list[X]`` or ``Page[X]`` returns, else None."""
    if typing.get_origin(annotation) is list:
        return typing.get_args(annotation)[0], False
    if isinstance(annotation, type) and issubclass(annotation, Page):
        meta = annotation.__pydantic_generic_metadata__
        if meta["origin"] is Page and meta["args"]:
            return meta["args"][0], True
    return None


@dataclass(slots=True)
class _Param:
    """One parameter as read from the signature: ``= Field(…)`` folded into its annotation."""

    annotation: Any
    default: Any  # inspect.Parameter.empty when required
    info: FieldInfo | None  # the Field, in either spelling
    factory: Callable[[], Any] | None = None
    filled: bool = False  # the function's own default is the Field: the caller fills it

    @property
    def description(self) -> str | None:
        return None if self.info is None else self.info.description


def _read_param(name: str, parameter: inspect.Parameter, annotation: Any, where: str) -> _Param:
    """``x: T = Field(…)`` read exactly as ``x: Annotated[T, Field(…)]`` (FastAPI's idiom).

    The Field's default (or ``default_factory``) becomes the parameter's; without
    one the parameter is required, as ``Field(…)`` means in a model.
    """
    default = parameter.default
    info = None
    if typing.get_origin(annotation) is Annotated:
        info = next((m for m in typing.get_args(annotation) if isinstance(m, FieldInfo)), None)
    read = _Param(annotation, default, info)
    if isinstance(default, FieldInfo):
        # What the Field was called with, but its default: constraints sit in its metadata.
        given = default._attributes_set
        rest = {k: v for k, v in given.items() if k not in ("default", "default_factory")}
        read.info = default
        read.annotation = Annotated[(annotation, Field(**rest), *default.metadata)]
        read.filled = True
        if default.default_factory is not None:
            read.default = MISSING
            read.factory = default.default_factory  # type: ignore[assignment]
        elif default.default in (PydanticUndefined, Ellipsis):
            read.default = parameter.empty
            read.filled = False
        else:
            read.default = default.default
    if read.info is not None and (read.info.alias or read.info.validation_alias):
        raise ContractError(
            f"{where}: parameter {name!r} has an alias; name the parameter as it goes on the wire"
        )
    return read


def _key_text(node: TypeNode) -> str | None:
    """The expression a key's text matches (what a keyset cursor is), if it has one."""
    if isinstance(node, Scalar):
        if node.kind == "int":
            return integer_pattern(*int_range(node.constraints))
        if node.kind == "uuid":
            return r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
        if node.kind == "str":
            return node.constraints.pattern
    return None


def _analyse_method(method: Method, graph: TypeGraph) -> MethodSpec:
    fn = method.fn
    where = f"method {method.name}"
    if not callable(fn):
        raise ContractError(f"{where}: not callable")
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception as exc:
        raise ContractError(f"{where}: cannot resolve type hints: {exc}") from exc
    signature = inspect.signature(fn)
    docs = parse_docstring(fn.__doc__)

    if "return" not in hints:
        raise ContractError(f"{where}: the return type must be annotated")
    returns_annotation = hints["return"]
    server_item = _stream_item(returns_annotation)
    is_asyncgen = inspect.isasyncgenfunction(fn)
    if is_asyncgen and server_item is None:
        raise ContractError(f"{where}: an async generator must be annotated AsyncIterator[X]")

    context_param: str | None = None
    stream_param: str | None = None
    stream_item_annotation: Any = None
    params: list[FieldSpec] = []
    annotations: dict[str, Any] = {}
    defaults: dict[str, Any] = {}
    fills: dict[str, Any] = {}
    factories: dict[str, Callable[[], Any]] = {}
    resource = method.resource
    for pname, parameter in signature.parameters.items():
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            raise ContractError(f"{where}: *args and **kwargs cannot be described on the wire")
        if parameter.kind is parameter.POSITIONAL_ONLY:
            raise ContractError(f"{where}: positional-only parameters cannot be named on the wire")
        if pname not in hints:
            raise ContractError(f"{where}: parameter {pname!r} needs a type annotation")
        annotation = hints[pname]
        if annotation is Context:
            context_param = pname
            continue
        item = _stream_item(annotation)
        if item is not None:
            if stream_param is not None:
                raise ContractError(f"{where}: only one parameter may be a stream")
            stream_param, stream_item_annotation = pname, item
            continue
        read = _read_param(pname, parameter, annotation, where)
        annotation, default = read.annotation, read.default
        if method.operation == "list" and pname == "limit" and resource is not None:
            # The resource's page-size bound becomes part of the contract.
            annotation = Annotated[annotation, Field(ge=1, le=resource.max_limit)]
        annotations[pname] = annotation
        _note_default(pname, read, defaults, fills, factories)
        params.append(
            FieldSpec(
                name=pname,
                wire_name=pname,
                type=graph.node(annotation, where=f"{where}, parameter {pname}"),
                required=default is parameter.empty,
                default=jsonable_default(default),
                description=docs.params.get(pname) or read.description,
            )
        )

    kind = _kind_of(method, server_item is not None, stream_param is not None, where)
    if kind in (MethodKind.SERVER_STREAM, MethodKind.BIDI_STREAM) and not is_asyncgen:
        raise ContractError(f"{where}: a server stream must be an async generator function")
    # Plain (synchronous) functions are allowed for unary methods: they run in a thread.

    paged = False
    cursor_pattern = None
    if server_item is not None:
        returns_node = graph.node(server_item, where=f"{where}, stream item")
        returns_annotation = server_item
    elif method.operation == "list":
        listed = _list_item(returns_annotation)
        if listed is None:
            raise ContractError(f"{where}: a list operation returns list[Model] or Page[Model]")
        item_annotation, chooses_cursor = listed
        returns_node = ListOf(graph.node(item_annotation, where=f"{where}, item"))
        returns_annotation = list[item_annotation]  # type: ignore[valid-type]
        paged = True
        if not chooses_cursor and resource is not None:
            params, cursor_pattern = _keyset_cursor(params, resource, graph)
    else:
        returns_node = graph.node(returns_annotation, where=f"{where}, return type")

    stream_item_node = (
        graph.node(stream_item_annotation, where=f"{where}, stream parameter")
        if stream_param
        else None
    )
    spec = MethodSpec(
        name=method.name,
        kind=kind,
        method=method,
        summary=docs.summary,
        description=docs.description,
        params=tuple(params),
        annotations=annotations,
        defaults=defaults,
        returns=returns_node,
        returns_annotation=returns_annotation,
        context_param=context_param,
        stream_param=stream_param,
        stream_item=stream_item_node,
        stream_item_annotation=stream_item_annotation,
        paged=paged,
        graph=graph,
        fills=fills,
        factories=factories,
        cursor_pattern=cursor_pattern,
    )
    if resource is not None:
        _check_operation(spec, resource, graph, where)
    return spec


def _note_default(
    name: str,
    read: _Param,
    defaults: dict[str, Any],
    fills: dict[str, Any],
    factories: dict[str, Callable[[], Any]],
) -> None:
    if read.factory is not None:
        factories[name] = read.factory
    elif read.default is not inspect.Parameter.empty:
        defaults[name] = read.default
        if read.filled:
            fills[name] = read.default


def _keyset_cursor(
    params: list[FieldSpec], resource: Resource, graph: TypeGraph
) -> tuple[list[FieldSpec], str | None]:
    """A keyset list's ``cursor``: the key of the previous page's last item, as text.

    The list returns plain items, so the next cursor is that key (see
    :func:`~polyport.core.dispatch.encode_cursor`); the document says so, with
    the expression the key's text matches, and the dispatcher holds cursors to it.
    """
    key = graph.model(graph.name_of(resource.model)).field(resource.key)
    pattern = _key_text(key.type)
    out = []
    for param in params:
        if param.name == "cursor":
            text = Scalar("str", Constraints(pattern=pattern) if pattern else Constraints())
            param = FieldSpec(
                name=param.name,
                wire_name=param.wire_name,
                type=Nullable(text) if isinstance(param.type, Nullable) else text,
                required=param.required,
                default=param.default,
                description=param.description,
            )
        out.append(param)
    return out, pattern


def _kind_of(method: Method, streams_out: bool, streams_in: bool, where: str) -> MethodKind:
    found = {
        (False, False): MethodKind.UNARY,
        (True, False): MethodKind.SERVER_STREAM,
        (False, True): MethodKind.CLIENT_STREAM,
        (True, True): MethodKind.BIDI_STREAM,
    }[(streams_out, streams_in)]
    if method.kind is not None and method.kind is not found:
        raise ContractError(
            f"{where}: declared {method.kind.value} but its signature is {found.value}"
        )
    return found


def _check_operation(spec: MethodSpec, resource: Resource, graph: TypeGraph, where: str) -> None:
    op = spec.operation
    names = [p.name for p in spec.params]
    model_name = graph.name_of(resource.model)
    if op in ("get", "update", "delete") and (not names or names[0] != resource.key):
        raise ContractError(f"{where}: a {op} operation takes the key {resource.key!r} first")
    if op == "list":
        for required in ("limit", "cursor"):
            if required not in names:
                raise ContractError(
                    f"{where}: a list operation takes 'limit' and 'cursor' parameters"
                )
    if op in ("get", "create", "update") and spec.returns != ModelRef(model_name):
        raise ContractError(f"{where}: a {op} operation returns {resource.model.__name__}")
    if op == "delete" and spec.returns not in (Unit, ModelRef(model_name)):
        raise ContractError(f"{where}: a delete operation returns None or the deleted item")
    if spec.kind is not MethodKind.UNARY:
        raise ContractError(f"{where}: resource operations cannot stream")


def _analyse_relation(relation: Relation, graph: TypeGraph) -> RelationSpec:
    fn = relation.fn
    graph.node(relation.parent, where=f"relation {relation.name}")
    model_name = graph.name_of(relation.parent)
    where = f"relation {model_name}.{relation.name}"
    if not callable(fn):
        raise ContractError(f"{where}: not callable")
    if inspect.isasyncgenfunction(fn):
        raise ContractError(f"{where}: a relation returns its values, it cannot stream")
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception as exc:
        raise ContractError(f"{where}: cannot resolve type hints: {exc}") from exc
    docs = parse_docstring(fn.__doc__)
    if "return" not in hints:
        raise ContractError(f"{where}: the return type must be annotated")
    keys_param: str | None = None
    key_annotation: Any = None
    context_param: str | None = None
    params: list[FieldSpec] = []
    annotations: dict[str, Any] = {}
    defaults: dict[str, Any] = {}
    fills: dict[str, Any] = {}
    factories: dict[str, Callable[[], Any]] = {}
    for pname, parameter in inspect.signature(fn).parameters.items():
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            raise ContractError(f"{where}: *args and **kwargs cannot be described on the wire")
        if pname not in hints:
            raise ContractError(f"{where}: parameter {pname!r} needs a type annotation")
        annotation = hints[pname]
        if annotation is Context:
            context_param = pname
            continue
        if keys_param is None:
            if typing.get_origin(annotation) not in (list, collections.abc.Sequence):
                raise ContractError(
                    f"{where}: the first parameter takes the parent keys: annotate it list[K]"
                )
            keys_param = pname
            (key_annotation,) = typing.get_args(annotation) or (Any,)
            continue
        if parameter.kind is parameter.POSITIONAL_ONLY:
            raise ContractError(f"{where}: positional-only parameters cannot be named on the wire")
        read = _read_param(pname, parameter, annotation, where)
        annotation, default = read.annotation, read.default
        annotations[pname] = annotation
        _note_default(pname, read, defaults, fills, factories)
        params.append(
            FieldSpec(
                name=pname,
                wire_name=pname,
                type=graph.node(annotation, where=f"{where}, argument {pname}"),
                required=default is parameter.empty,
                default=jsonable_default(default),
                description=docs.params.get(pname) or read.description,
            )
        )
    if keys_param is None:
        raise ContractError(f"{where}: the function must take the list of parent keys")
    returns = hints["return"]
    origin = typing.get_origin(returns)
    if origin is dict:
        _, value_annotation = typing.get_args(returns)
        by_key = True
    elif origin in (list, collections.abc.Sequence):
        (value_annotation,) = typing.get_args(returns)
        by_key = False
    else:
        raise ContractError(f"{where}: return list[V] (one value per key, in order) or dict[K, V]")
    via = graph.model(model_name).field(relation.via)
    return RelationSpec(
        name=relation.name,
        model=model_name,
        relation=relation,
        via=via,
        summary=relation.description or docs.summary,
        description=docs.description,
        keys_param=keys_param,
        key_annotation=key_annotation,
        params=tuple(params),
        annotations=annotations,
        defaults=defaults,
        fills=fills,
        factories=factories,
        returns=graph.node(value_annotation, where=f"{where}, value"),
        returns_annotation=value_annotation,
        by_key=by_key,
        context_param=context_param,
        graph=graph,
    )


def build_spec(service: Service) -> ServiceSpec:
    """Analyse every declaration of ``service`` into one :class:`ServiceSpec`."""
    graph = TypeGraph()
    for resource in service.resources.values():
        graph.node(resource.model, where=f"resource {resource.name}")
    methods = {name: _analyse_method(m, graph) for name, m in service.methods.items()}
    events = {}
    for name, event in service.events.items():
        model = event.model
        events[name] = EventSpec(
            name=name,
            event=event,
            payload=graph.node(model, where=f"event {name}"),
            annotation=model,
            description=event.description or _model_summary(model),
        )
    queues = {
        name: QueueSpec(
            name=name,
            queue=queue,
            payload=graph.node(queue.model, where=f"queue {name}"),
            annotation=queue.model,
            description=queue.description or _model_summary(queue.model),
            reply=_reply_node(queue, graph),
        )
        for name, queue in service.queues.items()
    }
    resources = {}
    for name, resource in service.resources.items():
        model_name = graph.name_of(resource.model)
        key = graph.model(model_name).field(resource.key)
        operations = {op: methods[m.name] for op, m in resource.methods.items()}
        resources[name] = ResourceSpec(name, resource, model_name, key, operations)
    relations: dict[str, dict[str, RelationSpec]] = {}
    for relation in service.relations:
        rspec = _analyse_relation(relation, graph)
        relations.setdefault(rspec.model, {})[rspec.name] = rspec
    return ServiceSpec(service, graph, methods, resources, events, relations, queues)


def _reply_node(queue: Queue, graph: TypeGraph) -> TypeNode | None:
    """The type graph's node of what a queue's consumer returns (None: nothing)."""
    if queue.handler is None:
        return None
    try:
        returns = typing.get_type_hints(queue.handler.fn).get("return")
    except Exception as exc:
        raise ContractError(
            f"queue {queue.name}: cannot resolve the consumer's hints: {exc}"
        ) from exc
    if returns is None or returns is type(None):
        return None
    return graph.node(returns, where=f"queue {queue.name}'s reply")


def _model_summary(model: Any) -> str | None:
    """The first line of a model's own docstring, if it has one."""
    if isinstance(model, type) and issubclass(model, BaseModel) and model.__dict__.get("__doc__"):
        return parse_docstring(model.__doc__).summary
    return None


__all__ = [
    "MISSING",
    "EventSpec",
    "MethodSpec",
    "QueueSpec",
    "RelationSpec",
    "ResourceSpec",
    "ServiceSpec",
    "build_spec",
]

"""Protobuf descriptors from the type graph, built at run time (no protoc).

:func:`build_schema` turns a :class:`~polyport.core.spec.ServiceSpec` into one
``FileDescriptorProto`` (package ``polyport.{service}.v{version}``) and, beside
it, the plan the codec follows to convert each message to and from Python.

    int → int64 · float → double · bool · str → string · bytes
    Decimal, UUID, date, time → string · datetime → google.protobuf.Timestamp
    enum → enum (with a zero value) · Literal → string / int64 / bool
    Any → google.protobuf.Value · X | None → proto3 optional
    list → repeated · dict → map · model → message · X | Y → a oneof message
    a list of lists, an optional list, a list of optionals … → a wrapper message

Comments (from docstrings and field descriptions) go into the descriptor's
``source_code_info``, the standard place; :mod:`.proto_text` prints them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import descriptor_pb2

from polyport.core.contract import MethodKind
from polyport.core.spec import MethodSpec, ServiceSpec
from polyport.core.typegraph import TypeGraph
from polyport.core.types import (
    DictOf,
    EnumRef,
    EnumType,
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

FDP = descriptor_pb2.FieldDescriptorProto
TIMESTAMP = ".google.protobuf.Timestamp"
VALUE = ".google.protobuf.Value"
EMPTY = ".google.protobuf.Empty"
DEPENDENCIES = {
    TIMESTAMP: "google/protobuf/timestamp.proto",
    VALUE: "google/protobuf/struct.proto",
    EMPTY: "google/protobuf/empty.proto",
}

# (proto type, name token for wrapper messages) per scalar kind
_SCALARS: dict[str, tuple[int, str]] = {
    "int": (FDP.TYPE_INT64, "Int64"),
    "float": (FDP.TYPE_DOUBLE, "Double"),
    "bool": (FDP.TYPE_BOOL, "Bool"),
    "str": (FDP.TYPE_STRING, "String"),
    "bytes": (FDP.TYPE_BYTES, "Bytes"),
    "decimal": (FDP.TYPE_STRING, "Decimal"),
    "uuid": (FDP.TYPE_STRING, "Uuid"),
    "date": (FDP.TYPE_STRING, "Date"),
    "time": (FDP.TYPE_STRING, "Time"),
    "datetime": (FDP.TYPE_MESSAGE, "Timestamp"),
    "any": (FDP.TYPE_MESSAGE, "Value"),
}

# Paths into FileDescriptorProto for source_code_info (descriptor.proto's field numbers).
_MESSAGE, _ENUM, _SERVICE = 4, 5, 6
_FIELD, _VALUE, _METHOD = 2, 2, 2


def pascal(name: str) -> str:
    """``get_user`` → ``GetUser`` (what gRPC calls its methods)."""
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"[^A-Za-z0-9]+", name) if part)


def upper_snake(name: str) -> str:
    """``OrderStatus`` → ``ORDER_STATUS`` (the prefix of its enum values)."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name)
    return re.sub(r"[^A-Za-z0-9]+", "_", spaced).strip("_").upper()


def identifier(name: str) -> str:
    """A valid protobuf identifier close to ``name``."""
    cleaned = re.sub(r"[^A-Za-z0-9_]+", "_", name).strip("_") or "x"
    return cleaned if cleaned[0].isalpha() else "x_" + cleaned


def literal_type(node: LiteralOf) -> tuple[int, str]:
    """Literals of one kind travel as that kind; mixed ones as a Value."""
    if all(isinstance(v, bool) for v in node.values):
        return FDP.TYPE_BOOL, "Bool"
    if all(isinstance(v, int) and not isinstance(v, bool) for v in node.values):
        return FDP.TYPE_INT64, "Int64"
    if all(isinstance(v, str) for v in node.values):
        return FDP.TYPE_STRING, "String"
    return FDP.TYPE_MESSAGE, "Value"


@dataclass(frozen=True, slots=True)
class Slot:
    """How one Python value occupies one protobuf field.

    ``node`` is the value's type on the Python side. A singular slot holds a
    scalar, an enum or a message (``type_name``); ``element`` makes it
    repeated, ``map_value`` a map. ``wrapper`` names the message that wraps a
    value protobuf cannot hold directly (a list in a list, an optional list, a
    union), and ``presence`` says whether absence can be told from a zero value.
    """

    node: TypeNode
    type: int
    type_name: str = ""
    element: Slot | None = None
    map_key: Slot | None = None
    map_value: Slot | None = None
    optional: bool = False  # proto3 `optional`: explicit presence on a scalar or enum
    wrapper: str | None = None

    @property
    def repeated(self) -> bool:
        return self.element is not None or self.map_value is not None

    @property
    def presence(self) -> bool:
        return self.optional or (self.type == FDP.TYPE_MESSAGE and not self.repeated)


@dataclass(frozen=True, slots=True)
class FieldPlan:
    """A field of a message: its protobuf name and number, its Python (wire) name."""

    name: str
    number: int
    wire_name: str
    slot: Slot
    required: bool = True
    comment: str | None = None


@dataclass(slots=True)
class MessagePlan:
    """A message and how its fields map to a Python mapping (or, for wrappers, a value)."""

    name: str
    fields: list[FieldPlan] = field(default_factory=list)
    kind: str = "model"  # model | params | value | union | page | events
    oneof: str | None = None  # the oneof of a union message
    comment: str | None = None


@dataclass(frozen=True, slots=True)
class EnumPlan:
    """An enum: protobuf value name and number per Python value (0 may be UNSPECIFIED)."""

    name: str
    values: tuple[tuple[str, int, Any], ...]  # (proto name, number, python value or None)
    comment: str | None = None


@dataclass(frozen=True, slots=True)
class MethodPlan:
    """An rpc: names, streaming flags and the messages that carry it."""

    name: str  # the contract's method name
    rpc: str  # PascalCase
    kind: MethodKind
    input: str  # message name (unqualified)
    output: str  # message name, or "google.protobuf.Empty"
    input_kind: str  # params | model (the stream item is the message) | item (wrapped)
    output_kind: str  # model | value | empty | page
    stream_field: str | None = None  # the field of the input that holds a stream item
    comment: str | None = None


@dataclass(slots=True)
class Schema:
    """Everything generated from one contract: the file descriptor and the plans."""

    package: str
    service: str  # fully qualified: polyport.shop.v1.ShopService
    file: descriptor_pb2.FileDescriptorProto
    messages: dict[str, MessagePlan]
    enums: dict[str, EnumPlan]
    methods: dict[str, MethodPlan]  # by contract method name
    graph: TypeGraph
    model_names: dict[str, str]  # type-graph name → message name

    def full(self, name: str) -> str:
        return name if name.startswith("google.") else f"{self.package}.{name}"


class _Builder:
    def __init__(self, spec: ServiceSpec, package: str) -> None:
        self.spec = spec
        self.graph = spec.graph
        self.package = package
        self.messages: dict[str, MessagePlan] = {}
        self.enums: dict[str, EnumPlan] = {}
        self.taken: set[str] = set()
        self.model_names: dict[str, str] = {}  # graph name → message name
        self.enum_names: dict[str, str] = {}
        self.wrappers: dict[str, str] = {}  # token → message name
        self.imports: set[str] = set()

    # -- names --------------------------------------------------------------------

    def claim(self, wanted: str) -> str:
        name = identifier(wanted)
        if name[0].islower():
            name = name[0].upper() + name[1:]
        candidate, n = name, 1
        while candidate in self.taken:
            n += 1
            candidate = f"{name}{n}"
        self.taken.add(candidate)
        return candidate

    def ref(self, name: str) -> str:
        return f".{self.package}.{name}"

    def token(self, node: TypeNode) -> str:
        """A short, stable name for a type, to name the wrappers built around it."""
        if isinstance(node, Scalar):
            return _SCALARS[node.kind][1]
        if isinstance(node, LiteralOf):
            return literal_type(node)[1]
        if isinstance(node, EnumRef):
            return self.enum(node.name)
        if isinstance(node, ModelRef):
            return self.model(node.name)
        if isinstance(node, ListOf):
            return self.token(node.item) + "List"
        if isinstance(node, DictOf):
            return self.token(node.key) + self.token(node.value) + "Map"
        if isinstance(node, Nullable):
            return "Optional" + self.token(node.inner)
        if isinstance(node, UnionOf):
            return "Or".join(self.token(v) for v in node.variants)
        raise TypeError(f"no protobuf form for {node!r}")

    # -- named types -----------------------------------------------------------------

    def model(self, graph_name: str) -> str:
        found = self.model_names.get(graph_name)
        if found is not None:
            return found
        model = self.graph.model(graph_name)
        name = self.model_names[graph_name] = self.claim(graph_name)
        plan = self.messages[name] = MessagePlan(name, comment=model.description)
        plan.fields = self.fields(model.fields)  # after registering: models may recurse
        return name

    def enum(self, graph_name: str) -> str:
        found = self.enum_names.get(graph_name)
        if found is not None:
            return found
        enum = self.graph.enums[graph_name]
        name = self.enum_names[graph_name] = self.claim(graph_name)
        self.enums[name] = EnumPlan(name, _enum_values(name, enum), enum.description)
        return name

    def wrapper(self, token: str, build: Any) -> str:
        found = self.wrappers.get(token)
        if found is not None:
            return found
        name = self.wrappers[token] = self.claim(token)
        self.messages[name] = build(name)
        return name

    # -- slots -----------------------------------------------------------------------

    def slot(self, node: TypeNode) -> Slot:
        """How ``node`` sits in a field of its own."""
        if isinstance(node, Scalar):
            kind, _ = _SCALARS[node.kind]
            type_name = {"datetime": TIMESTAMP, "any": VALUE}.get(node.kind, "")
            if type_name:
                self.imports.add(type_name)
            return Slot(node, kind, type_name)
        if isinstance(node, LiteralOf):
            kind, _ = literal_type(node)
            if kind == FDP.TYPE_MESSAGE:
                self.imports.add(VALUE)
                return Slot(node, kind, VALUE)
            return Slot(node, kind)
        if isinstance(node, EnumRef):
            return Slot(node, FDP.TYPE_ENUM, self.ref(self.enum(node.name)))
        if isinstance(node, ModelRef):
            return Slot(node, FDP.TYPE_MESSAGE, self.ref(self.model(node.name)))
        if isinstance(node, ListOf):
            element = self.element(node.item)
            return Slot(node, element.type, element.type_name, element=element)
        if isinstance(node, DictOf):
            return Slot(
                node,
                FDP.TYPE_MESSAGE,
                map_key=self.slot(node.key),
                map_value=self.element(node.value),
            )
        if isinstance(node, Nullable):
            inner = self.slot(node.inner)
            if inner.repeated:
                return self.wrapped(node.inner, inner, node)
            if inner.type in (FDP.TYPE_MESSAGE,):
                return Slot(node, inner.type, inner.type_name, wrapper=inner.wrapper)
            return Slot(node, inner.type, inner.type_name, optional=True)
        if isinstance(node, UnionOf):
            return self.union(node)
        raise TypeError(f"no protobuf form for {node!r}")

    def element(self, node: TypeNode) -> Slot:
        """How ``node`` sits as an item of a repeated field or the value of a map."""
        if isinstance(node, Nullable):
            # An item or map value is never absent, so null needs a wrapper, even around
            # a message: {optional X value} whose empty form means None.
            token = "Optional" + self.token(node.inner)
            name = self.wrapper(token, lambda n: self.value_message(n, node, "value"))
            return Slot(node, FDP.TYPE_MESSAGE, self.ref(name), wrapper=name)
        slot = self.slot(node)
        if slot.repeated:
            return self.wrapped(node, slot, node)
        return slot

    def wrapped(self, inner: TypeNode, slot: Slot, node: TypeNode) -> Slot:
        """A list or map as one message field: ``{repeated … items}`` / ``{map<…> entries}``."""
        field_name = "entries" if slot.map_value is not None else "items"
        name = self.wrapper(self.token(inner), lambda n: self.value_message(n, inner, field_name))
        return Slot(node, FDP.TYPE_MESSAGE, self.ref(name), wrapper=name)

    def value_message(self, name: str, node: TypeNode, field_name: str) -> MessagePlan:
        plan = MessagePlan(name, kind="value")
        plan.fields = [FieldPlan(field_name, 1, field_name, self.slot(node))]
        return plan

    def union(self, node: UnionOf) -> Slot:
        def build(name: str) -> MessagePlan:
            plan = MessagePlan(name, kind="union", oneof="value")
            used: set[str] = set()
            fields = []
            for number, variant in enumerate(node.variants, 1):
                base = _snake(self.token(variant))
                if isinstance(variant, Scalar | LiteralOf):
                    base += "_value"
                field_name, n = base, 1
                while field_name in used:
                    n += 1
                    field_name = f"{base}{n}"
                used.add(field_name)
                fields.append(FieldPlan(field_name, number, field_name, self.element(variant)))
            plan.fields = fields
            return plan

        name = self.wrapper(self.token(node), build)
        return Slot(node, FDP.TYPE_MESSAGE, self.ref(name), wrapper=name)

    def fields(self, specs: tuple[FieldSpec, ...]) -> list[FieldPlan]:
        plans = []
        used: set[str] = set()
        for number, spec in enumerate(specs, 1):
            slot = self.slot(spec.type)
            if not spec.required and not slot.presence and not slot.repeated:
                # A field with a default must tell "not given" from a zero value.
                slot = Slot(slot.node, slot.type, slot.type_name, optional=True)
            name, n = identifier(spec.wire_name), 1
            while name in used:
                n += 1
                name = f"{identifier(spec.wire_name)}_{n}"
            used.add(name)
            plans.append(
                FieldPlan(name, number, spec.wire_name, slot, spec.required, spec.description)
            )
        return plans

    # -- methods -----------------------------------------------------------------------

    def method(self, method: MethodSpec) -> MethodPlan:
        rpc = pascal(method.name)
        comment = "\n\n".join(p for p in (method.summary, method.description) if p) or None
        kind = method.kind
        # input
        stream_field = None
        if method.stream_item is not None and not method.params:
            if isinstance(method.stream_item, ModelRef):
                input_name, input_kind = self.model(method.stream_item.name), "model"
            else:
                input_name, input_kind = self.claim(f"{rpc}Request"), "item"
                plan = MessagePlan(input_name, kind="params", comment=f"One input of {rpc}.")
                stream_field = identifier(method.stream_param or "value")
                plan.fields = [FieldPlan(stream_field, 1, stream_field, self.slot_for_item(method))]
                self.messages[input_name] = plan
        else:
            input_name, input_kind = self.claim(f"{rpc}Request"), "params"
            plan = MessagePlan(input_name, kind="params", comment=f"The arguments of {rpc}.")
            plan.fields = self.fields(method.params)
            if method.stream_item is not None:
                # Parameters come with the first message, stream items with every message.
                stream_field = identifier(method.stream_param or "item")
                plan.fields.append(
                    FieldPlan(
                        stream_field,
                        len(plan.fields) + 1,
                        stream_field,
                        self.slot_for_item(method),
                        required=False,
                        comment="One item of the input stream.",
                    )
                )
            self.messages[input_name] = plan
        # output
        returns = method.returns
        if isinstance(returns, UnitType):
            output, output_kind = "google.protobuf.Empty", "empty"
            self.imports.add(EMPTY)
        elif isinstance(returns, ModelRef):
            output, output_kind = self.model(returns.name), "model"
        elif method.paged:
            assert isinstance(returns, ListOf)
            output, output_kind = self.claim(f"{rpc}Response"), "page"
            plan = MessagePlan(output, kind="page", comment=f"A page of {rpc}.")
            plan.fields = [
                FieldPlan("items", 1, "items", self.slot(returns)),
                FieldPlan(
                    "next_cursor",
                    2,
                    "next_cursor",
                    Slot(Scalar("str"), FDP.TYPE_STRING, optional=True),
                    comment="Pass it as `cursor` for the next page; absent on the last page.",
                ),
            ]
            self.messages[output] = plan
        else:
            output, output_kind = self.claim(f"{rpc}Response"), "value"
            self.messages[output] = self.value_message(output, returns, "value")
            self.messages[output].comment = f"The result of {rpc}."
        return MethodPlan(
            method.name,
            rpc,
            kind,
            input_name,
            output,
            input_kind,
            output_kind,
            stream_field,
            comment,
        )

    def slot_for_item(self, method: MethodSpec) -> Slot:
        assert method.stream_item is not None
        slot = self.slot(method.stream_item)
        if not slot.presence and not slot.repeated:
            slot = Slot(slot.node, slot.type, slot.type_name, optional=True)
        return slot


def _snake(name: str) -> str:
    return upper_snake(name).lower()


def _enum_values(name: str, enum: EnumType) -> tuple[tuple[str, int, Any], ...]:
    prefix = upper_snake(name) + "_"
    used = {prefix + "UNSPECIFIED"}

    def label(member: str) -> str:
        upper = upper_snake(member) or "VALUE"
        wanted = upper if upper.startswith(prefix) else prefix + upper
        candidate, n = wanted, 1
        while candidate in used:  # `aB` and `a_b`, or a member called UNSPECIFIED
            n += 1
            candidate = f"{wanted}_{n}"
        used.add(candidate)
        return candidate

    values: list[tuple[str, int, Any]] = []
    ints = [v for _, v in enum.members if isinstance(v, int)]
    if len(ints) == len(enum.members) and all(-(2**31) <= v < 2**31 for v in ints):
        # Integer enums keep their numbers; protobuf wants the zero value first.
        members = sorted(enum.members, key=lambda m: m[1] != 0)
        if 0 in ints:
            used.clear()  # a real zero member: no UNSPECIFIED is added
        else:
            values.append((prefix + "UNSPECIFIED", 0, None))
        seen: set[int] = set()
        for member, value in members:
            number = int(value)
            if number in seen:
                continue  # an alias of an earlier member
            seen.add(number)
            values.append((label(member), number, value))
        return tuple(values)
    values.append((prefix + "UNSPECIFIED", 0, None))
    for number, (member, value) in enumerate(enum.members, 1):
        values.append((label(member), number, value))
    return tuple(values)


def build_schema(spec: ServiceSpec) -> Schema:
    """The descriptor and conversion plans of ``spec``'s gRPC service."""
    package = f"polyport.{identifier(spec.name).lower()}.v{spec.version}"
    builder = _Builder(spec, package)
    service = pascal(spec.name) + "Service"
    builder.taken.add(service)
    methods = {name: builder.method(method) for name, method in spec.methods.items()}
    file = _file_descriptor(spec, builder, service, methods)
    return Schema(
        package,
        f"{package}.{service}",
        file,
        builder.messages,
        builder.enums,
        methods,
        spec.graph,
        builder.model_names,
    )


def _file_descriptor(
    spec: ServiceSpec, builder: _Builder, service_name: str, methods: dict[str, MethodPlan]
) -> descriptor_pb2.FileDescriptorProto:
    package = builder.package
    file = descriptor_pb2.FileDescriptorProto(
        name=f"{package.replace('.', '/')}/{identifier(spec.name).lower()}.proto",
        package=package,
        syntax="proto3",
        dependency=sorted(DEPENDENCIES[i] for i in builder.imports),
    )
    comments = file.source_code_info
    service = file.service.add(name=service_name)
    _comment(comments, [_SERVICE, 0], spec.service.description)
    for index, plan in enumerate(methods.values()):
        service.method.add(
            name=plan.rpc,
            input_type=f".{package}.{plan.input}",
            output_type=(
                EMPTY if plan.output == "google.protobuf.Empty" else f".{package}.{plan.output}"
            ),
            client_streaming=plan.kind in (MethodKind.CLIENT_STREAM, MethodKind.BIDI_STREAM),
            server_streaming=plan.kind in (MethodKind.SERVER_STREAM, MethodKind.BIDI_STREAM),
        )
        _comment(comments, [_SERVICE, 0, _METHOD, index], plan.comment)
    for index, message in enumerate(builder.messages.values()):
        add_message(file, message, index)
    for index, enum in enumerate(builder.enums.values()):
        proto = file.enum_type.add(name=enum.name)
        for name, number, _ in enum.values:
            proto.value.add(name=name, number=number)
        _comment(comments, [_ENUM, index], enum.comment)
    return file


def add_message(
    file: descriptor_pb2.FileDescriptorProto, plan: MessagePlan, index: int
) -> descriptor_pb2.DescriptorProto:
    """Append ``plan`` as message number ``index`` of ``file`` (with its comments)."""
    proto = file.message_type.add(name=plan.name)
    comments = file.source_code_info
    _comment(comments, [_MESSAGE, index], plan.comment)
    if plan.oneof is not None:
        proto.oneof_decl.add(name=plan.oneof)
    synthetic: list[tuple[descriptor_pb2.FieldDescriptorProto, str]] = []
    for position, spec in enumerate(plan.fields):
        slot = spec.slot
        field_proto = proto.field.add(name=spec.name, number=spec.number)
        if slot.map_value is not None:
            assert slot.map_key is not None
            entry = proto.nested_type.add(name=pascal(spec.name) + "Entry")
            entry.options.map_entry = True
            _set_type(entry.field.add(name="key", number=1), slot.map_key)
            _set_type(entry.field.add(name="value", number=2), slot.map_value)
            field_proto.label = FDP.LABEL_REPEATED
            field_proto.type = FDP.TYPE_MESSAGE
            field_proto.type_name = f".{file.package}.{plan.name}.{entry.name}"
        elif slot.element is not None:
            _set_type(field_proto, slot.element)
            field_proto.label = FDP.LABEL_REPEATED
        else:
            _set_type(field_proto, slot)
        if plan.oneof is not None:
            field_proto.oneof_index = 0
        elif slot.optional:
            synthetic.append((field_proto, "_" + spec.name))
        _comment(comments, [_MESSAGE, index, _FIELD, position], spec.comment)
    # Synthetic oneofs of proto3 `optional` fields come after the real ones.
    for field_proto, name in synthetic:
        field_proto.proto3_optional = True
        field_proto.oneof_index = len(proto.oneof_decl)
        proto.oneof_decl.add(name=name)
    return proto


def _set_type(proto: descriptor_pb2.FieldDescriptorProto, slot: Slot) -> None:
    proto.label = FDP.LABEL_OPTIONAL
    proto.type = slot.type
    if slot.type_name:
        proto.type_name = slot.type_name


def _comment(info: descriptor_pb2.SourceCodeInfo, path: list[int], text: str | None) -> None:
    if text:
        info.location.add(path=path, leading_comments=" " + text.replace("\n", "\n "))

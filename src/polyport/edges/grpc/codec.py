"""Protobuf messages ⇄ Python values, following the plans of :mod:`.descriptors`.

Converters are built once per message at start-up. Writing goes from what
``Binding.dump_python(mode="python")`` returns (dicts by wire name, datetimes,
Decimals, enum members) to keyword arguments for the message class, which
upb turns into nested messages in C; a model whose fields need no conversion
is passed through as is. Reading goes from a parsed message to the mapping
``Binding.parse`` validates, so gRPC arguments meet the same validators as
REST bodies.

Presence: a field protobuf can tell absent (a message, a proto3 ``optional``)
is left out of the mapping when absent — so a default applies, or a required
field is reported missing — except that an absent field of a required
nullable type reads as ``None``. A scalar without presence reads as its zero
value, as proto3 intends.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Callable
from decimal import Decimal
from typing import Any
from uuid import UUID

from google.protobuf import descriptor_pool, message_factory
from google.protobuf.message import Message
from pydantic_core import to_jsonable_python

from polyport.core.errors import OutOfRange
from polyport.core.types import (
    DictOf,
    EnumRef,
    ListOf,
    LiteralOf,
    ModelRef,
    Nullable,
    Scalar,
    TypeNode,
    unwrap_nullable,
)
from polyport.edges.grpc.descriptors import FDP, FieldPlan, MessagePlan, Schema, Slot

Convert = Callable[[Any], Any]
ABSENT: Any = type("Absent", (), {"__repr__": lambda self: "ABSENT"})()
"""What a reader returns for a value that is not there (an UNSPECIFIED enum)."""

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MAX_EXACT = 2**53


def timestamp_to_datetime(ts: Any) -> dt.datetime:
    """A Timestamp as an aware UTC datetime (to the microsecond, as Python holds it)."""
    return _EPOCH + dt.timedelta(seconds=ts.seconds, microseconds=ts.nanos // 1000)


def datetime_to_timestamp(value: dt.datetime) -> dict[str, int]:
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    delta = value - _EPOCH
    seconds = delta.days * 86400 + delta.seconds
    return {"seconds": seconds, "nanos": delta.microseconds * 1000}


def value_builder(cls: Any) -> Convert:
    """Python (JSON-like) → a ``google.protobuf.Value`` of ``cls``, built field by field.

    Built explicitly: how upb treats a dict given for a Value or Struct field
    depends on the pool, and this pool is private.
    """

    def fill(message: Any, value: Any) -> None:
        if value is None:
            message.null_value = 0
        elif isinstance(value, bool):
            message.bool_value = value
        elif isinstance(value, int | float):
            message.number_value = value
        elif isinstance(value, str):
            message.string_value = value
        elif isinstance(value, dict):
            fields = message.struct_value.fields
            message.struct_value.SetInParent()
            for key, item in value.items():
                fill(fields[str(key)], item)
        elif isinstance(value, list | tuple | set | frozenset):
            values = message.list_value.values
            message.list_value.SetInParent()
            for item in value:
                fill(values.add(), item)
        else:
            fill(message, to_jsonable_python(value))

    def build(value: Any) -> Any:
        message = cls()
        fill(message, value)
        return message

    return build


def from_value(message: Any) -> Any:
    """``google.protobuf.Value`` as Python; integral numbers below 2**53 come back as int."""
    kind = message.WhichOneof("kind")
    if kind is None or kind == "null_value":
        return None
    if kind == "number_value":
        number = message.number_value
        if number.is_integer() and abs(number) < _MAX_EXACT:
            return int(number)
        return number
    if kind == "struct_value":
        return {k: from_value(v) for k, v in message.struct_value.fields.items()}
    if kind == "list_value":
        return [from_value(v) for v in message.list_value.values]
    return getattr(message, kind)


def _matcher(node: TypeNode, schema: Schema) -> Callable[[Any], bool]:
    """Whether a dumped Python value belongs to ``node`` (to choose a union's variant)."""
    if isinstance(node, Scalar):
        kind = node.kind
        if kind == "bool":
            return lambda v: isinstance(v, bool)
        if kind == "int":
            return lambda v: isinstance(v, int) and not isinstance(v, bool)
        if kind == "float":
            return lambda v: isinstance(v, float)
        if kind == "str":
            return lambda v: isinstance(v, str) and not isinstance(v, enum.Enum)
        if kind == "bytes":
            return lambda v: isinstance(v, bytes | bytearray)
        if kind == "decimal":
            return lambda v: isinstance(v, Decimal)
        if kind == "uuid":
            return lambda v: isinstance(v, UUID)
        if kind == "datetime":
            return lambda v: isinstance(v, dt.datetime)
        if kind == "date":
            return lambda v: isinstance(v, dt.date) and not isinstance(v, dt.datetime)
        if kind == "time":
            return lambda v: isinstance(v, dt.time)
        return lambda v: True  # any
    if isinstance(node, LiteralOf):
        values = node.values
        return lambda v: any(v == x and type(v) is type(x) for x in values)
    if isinstance(node, EnumRef):
        cls = _enum_class(schema, node)
        return lambda v: isinstance(v, cls)
    if isinstance(node, ModelRef):
        model = schema.graph.model(node.name)
        names = frozenset(f.wire_name for f in model.fields)
        return lambda v: isinstance(v, dict) and v.keys() <= names
    if isinstance(node, ListOf):
        return lambda v: isinstance(v, list | tuple | set | frozenset)
    if isinstance(node, DictOf):
        return lambda v: isinstance(v, dict)
    if isinstance(node, Nullable):
        inner = _matcher(node.inner, schema)
        return lambda v: v is None or inner(v)
    return lambda v: False


def _enum_class(schema: Schema, node: EnumRef) -> type[enum.Enum]:
    return schema.graph.enums[node.name].python


class GrpcCodec:
    """Message classes of one schema, and converters for each message."""

    def __init__(self, schema: Schema, pool: descriptor_pool.DescriptorPool) -> None:
        self.schema = schema
        self.classes: dict[str, type[Message]] = {}
        for name in schema.messages:
            descriptor = pool.FindMessageTypeByName(schema.full(name))
            self.classes[name] = message_factory.GetMessageClass(descriptor)
        self.value = value_builder(
            message_factory.GetMessageClass(pool.FindMessageTypeByName("google.protobuf.Value"))
        )
        self.writers: dict[str, Convert] = {}
        self.readers: dict[str, Convert] = {}
        for name, plan in schema.messages.items():
            self.writers[name] = self._writer(plan)
            self.readers[name] = self._reader(plan)

    # -- writing: Python → message init values ----------------------------------------

    def _writer(self, plan: MessagePlan) -> Convert:
        if plan.kind == "union":
            variants = [
                (_matcher(f.slot.node, self.schema), f.name, self._write_slot(f.slot))
                for f in plan.fields
            ]

            def write_union(value: Any) -> dict[str, Any]:
                for matches, name, convert in variants:
                    if matches(value):
                        return {name: value if convert is None else convert(value)}
                raise TypeError(f"{type(value).__name__} fits no variant of {plan.name}")

            return write_union
        if plan.kind == "value":
            (only,) = plan.fields
            name, convert = only.name, self._write_slot(only.slot)
            if convert is None:
                return lambda value: {} if value is None else {name: value}
            return lambda value: {} if value is None else {name: convert(value)}
        fields = [(f.wire_name, f.name, self._write_slot(f.slot)) for f in plan.fields]
        if all(convert is None and wire == name for wire, name, convert in fields):
            python = _python_model(self.schema, plan)
            # Extra or computed fields would reach upb as unknown fields: not then.
            if python is None or (
                python.model_config.get("extra") != "allow"
                and not python.__pydantic_computed_fields__
            ):
                return _same  # upb takes the dumped dict as it is (None means unset)

        def write_message(value: dict[str, Any]) -> dict[str, Any]:
            out: dict[str, Any] = {}
            for wire, name, convert in fields:
                item = value.get(wire)
                if item is not None:
                    out[name] = item if convert is None else convert(item)
            return out

        return write_message

    def _write_slot(self, slot: Slot) -> Convert | None:
        return _per_slot(slot, self._write_single, plain_map=None, plain_list=None)

    def _write_single(self, slot: Slot) -> Convert | None:
        writers = self.writers
        if slot.wrapper is not None:
            name = slot.wrapper
            return lambda v: writers[name](v)
        node, _ = unwrap_nullable(slot.node)
        if isinstance(node, Scalar):
            kind = node.kind
            if kind in ("decimal", "uuid"):
                return str
            if kind in ("date", "time"):
                return _isoformat
            if kind == "datetime":
                # Spelled out: not every protobuf release takes a datetime for a Timestamp.
                return datetime_to_timestamp
            if kind == "any":
                return self.value
            return None
        if isinstance(node, LiteralOf):
            return self.value if slot.type == FDP.TYPE_MESSAGE else None
        if isinstance(node, EnumRef):
            numbers: dict[Any, int] = {}
            for _, number, value in self.schema.enums[self._enum_name(slot)].values:
                if value is not None:
                    numbers[value] = number
            members = _enum_class(self.schema, node)
            for member in members:
                numbers[member] = numbers[member.value]
            return numbers.__getitem__
        if isinstance(node, ModelRef):
            name = slot.type_name.rsplit(".", 1)[-1]
            return lambda v: writers[name](v)
        raise TypeError(f"cannot write {node!r}")

    def _enum_name(self, slot: Slot) -> str:
        return slot.type_name.rsplit(".", 1)[-1]

    def object_filler(self, name: str) -> tuple[type[Any], Callable[[Any, Any], None]] | None:
        """``(model class, fill)``: ``fill(message, value)`` sets a flat model's fields, or None.

        The hot path of a unary call: for a model whose fields are scalars and
        enums (optional or not) and which declares no serializer of its own,
        reading the attributes gives what ``dump_python`` would, without the
        dump. Values of the wrong type are still refused, by upb, as an error.
        ``message`` must be empty (new, cleared, or just added to a repeated field).
        """
        plan = self.schema.messages[name]
        python = _python_model(self.schema, plan)
        if python is None or not _plainly_serialized(python):
            return None
        fields = []
        for spec in plan.fields:
            slot = spec.slot
            node, _ = unwrap_nullable(slot.node)
            if slot.repeated or slot.wrapper or not isinstance(node, Scalar | EnumRef):
                return None
            if node == _ANY:
                return None
            attribute = _attribute_of(python, spec.wire_name)
            if attribute is None:
                return None
            nested = slot.type == FDP.TYPE_MESSAGE  # a Timestamp: filled, not assigned
            fields.append((attribute, spec.name, self._write_single(slot), nested))

        def fill(message: Any, value: Any) -> None:
            try:
                for attribute, field, convert, nested in fields:
                    item = getattr(value, attribute)
                    if item is None:
                        continue
                    if convert is not None:
                        item = convert(item)
                    if nested:
                        inner = getattr(message, field)
                        inner.SetInParent()  # present, whatever its fields hold
                        for key, part in item.items():
                            setattr(inner, key, part)
                    else:
                        setattr(message, field, item)
            except ValueError as exc:
                # upb refuses an int beyond its field's 64 bits: the model's value does not
                # fit the declared type (the dispatcher holds declared int results itself).
                if str(exc).startswith("Value out of range"):
                    raise OutOfRange(f"{python.__name__}: an integer beyond int64") from exc
                raise

        return python, fill

    def object_encoder(self, name: str) -> tuple[type[Any], Callable[[Any], bytes]] | None:
        """``(model class, encoder)``: a flat model's message bytes (see :meth:`object_filler`).

        One message is cleared and refilled for every value: filling a message
        costs less than building one from keywords, and encoding never awaits,
        so the loop's thread is the only one ever to touch it.
        """
        found = self.object_filler(name)
        if found is None:
            return None
        python, fill = found
        scratch = self.classes[name]()
        clear, serialize = scratch.Clear, scratch.SerializeToString

        def encode_object(value: Any) -> bytes:
            clear()
            fill(scratch, value)
            return serialize()  # type: ignore[no-any-return]

        return python, encode_object

    # -- reading: message → Python -------------------------------------------------------

    def _reader(self, plan: MessagePlan) -> Convert:
        if plan.kind == "union":
            variants = {f.name: self._read_slot(f.slot) for f in plan.fields}
            oneof = plan.oneof

            def read_union(message: Any) -> Any:
                which = message.WhichOneof(oneof)
                if which is None:
                    return None
                convert = variants[which]
                value = getattr(message, which)
                return value if convert is None else convert(value)

            return read_union
        if plan.kind == "value":
            (only,) = plan.fields
            name, convert, presence = only.name, self._read_slot(only.slot), only.slot.presence

            def read_value(message: Any) -> Any:
                if presence and not message.HasField(name):
                    return None
                value = getattr(message, name)
                return value if convert is None else convert(value)

            return read_value
        fields = [self._field_reader(f) for f in plan.fields]

        def read_message(message: Any) -> dict[str, Any]:
            out: dict[str, Any] = {}
            for name, wire, convert, presence, when_absent, omit_empty in fields:
                if presence and not message.HasField(name):
                    if when_absent is not ABSENT:
                        out[wire] = when_absent
                    continue
                value = getattr(message, name)
                if omit_empty and not value:
                    continue
                if convert is not None:
                    value = convert(value)
                    if value is ABSENT:
                        continue
                out[wire] = value
            return out

        return read_message

    def _field_reader(self, spec: FieldPlan) -> tuple[Any, ...]:
        slot = spec.slot
        # A required nullable field reads None when absent; anything else is left out.
        nullable = isinstance(slot.node, Nullable) or slot.node == Scalar("any")
        when_absent = None if spec.required and nullable else ABSENT
        omit_empty = slot.repeated and not spec.required
        return (
            spec.name,
            spec.wire_name,
            self._read_slot(slot),
            slot.presence,
            when_absent,
            omit_empty,
        )

    def _read_slot(self, slot: Slot) -> Convert | None:
        return _per_slot(slot, self._read_single, plain_map=dict, plain_list=list)

    def _read_single(self, slot: Slot) -> Convert | None:
        readers = self.readers
        if slot.wrapper is not None:
            name = slot.wrapper
            return lambda m: readers[name](m)
        node, _ = unwrap_nullable(slot.node)
        if isinstance(node, Scalar):
            if node.kind == "datetime":
                return timestamp_to_datetime
            if node.kind == "any":
                return from_value
            return None
        if isinstance(node, LiteralOf):
            return from_value if slot.type == FDP.TYPE_MESSAGE else None
        if isinstance(node, EnumRef):
            values = {
                number: value
                for _, number, value in self.schema.enums[self._enum_name(slot)].values
            }

            def read_enum(number: int) -> Any:
                value = values.get(number, number)  # an unknown number fails validation
                return ABSENT if value is None else value

            return read_enum
        if isinstance(node, ModelRef):
            name = slot.type_name.rsplit(".", 1)[-1]
            return lambda m: readers[name](m)
        raise TypeError(f"cannot read {node!r}")


_ANY = Scalar("any")


def _attribute_of(model: Any, wire_name: str) -> str | None:
    for attribute, info in model.model_fields.items():
        if (info.alias or attribute) == wire_name:
            return attribute  # type: ignore[no-any-return]
    return None


def _plainly_serialized(model: Any) -> bool:
    """No serializer of its own, no computed or extra fields: dumping reads attributes."""
    decorators = model.__pydantic_decorators__
    if decorators.field_serializers or decorators.model_serializers:
        return False
    if model.__pydantic_computed_fields__ or model.model_config.get("extra") == "allow":
        return False
    for info in model.model_fields.values():
        if info.exclude or any(type(m).__name__.endswith("Serializer") for m in info.metadata):
            return False
    return True


def _same(value: Any) -> Any:
    return value


def _isoformat(value: Any) -> str:
    return value.isoformat()  # type: ignore[no-any-return]


def _python_model(schema: Schema, plan: MessagePlan) -> Any:
    for graph_name, message in schema.model_names.items():
        if message == plan.name:
            return schema.graph.model(graph_name).python
    return None


def _per_slot(
    slot: Slot,
    single: Callable[[Slot], Convert | None],
    *,
    plain_map: Convert | None,
    plain_list: Convert | None,
) -> Convert | None:
    """A slot's conversion: ``single``'s, applied to each map value or list item if it is one.

    ``plain_map`` / ``plain_list`` stand when the values or items need no conversion.
    """
    if slot.map_value is not None:
        value = single(slot.map_value)
        if value is None:
            return plain_map
        return lambda d: {k: value(v) for k, v in d.items()}
    if slot.element is not None:
        item = single(slot.element)
        if item is None:
            return plain_list
        return lambda items: [item(v) for v in items]
    return single(slot)

"""Reading Python annotations into the neutral type graph, once.

This is the only module that inspects Python types for the purpose of
describing them; generators read :class:`TypeGraph` instead.
"""

from __future__ import annotations

import collections.abc
import datetime as dt
import enum
import inspect
import types
import typing
import uuid
from decimal import Decimal
from typing import Any

import annotated_types as at
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined, to_jsonable_python

from polyport.core.errors import ContractError
from polyport.core.types import (
    MISSING,
    NO_CONSTRAINTS,
    Constraints,
    DictOf,
    EnumRef,
    EnumType,
    FieldSpec,
    ListOf,
    LiteralOf,
    ModelRef,
    ModelType,
    Nullable,
    Scalar,
    ScalarKind,
    TypeNode,
    UnionOf,
    Unit,
)

_SCALARS: dict[Any, ScalarKind] = {
    bool: "bool",  # before int: bool is a subclass of int
    int: "int",
    float: "float",
    str: "str",
    bytes: "bytes",
    dt.datetime: "datetime",
    dt.date: "date",
    dt.time: "time",
    uuid.UUID: "uuid",
    Decimal: "decimal",
    Any: "any",
    object: "any",
}

_LIST_ORIGINS = (list, set, frozenset, collections.abc.Sequence, collections.abc.Set)
_DICT_ORIGINS = (dict, collections.abc.Mapping)

_CONSTRAINT_ATTRS = {
    at.Ge: "ge",
    at.Gt: "gt",
    at.Le: "le",
    at.Lt: "lt",
    at.MultipleOf: "multiple_of",
    at.MinLen: "min_length",
    at.MaxLen: "max_length",
}


def _constraints_from(metadata: typing.Iterable[Any]) -> Constraints:
    values: dict[str, Any] = {}
    for item in metadata:
        for cls, name in _CONSTRAINT_ATTRS.items():
            if isinstance(item, cls):
                values[name] = getattr(item, name)
        if isinstance(item, at.Interval):
            for name in ("ge", "gt", "le", "lt"):
                if getattr(item, name) is not None:
                    values[name] = getattr(item, name)
        if isinstance(item, at.Len):
            values["min_length"] = item.min_length
            if item.max_length is not None:
                values["max_length"] = item.max_length
        pattern = getattr(item, "pattern", None)  # pydantic's _PydanticGeneralMetadata
        if isinstance(pattern, str):
            values["pattern"] = pattern
        for name in ("decimal_places", "max_digits"):  # the same, for decimals
            value = getattr(item, name, None)
            if isinstance(value, int) and not isinstance(value, bool):
                values[name] = value
        for name in ("min_length", "max_length"):
            value = getattr(item, name, None)
            if isinstance(value, int) and not isinstance(item, at.Len | at.MinLen | at.MaxLen):
                values[name] = value
    return Constraints(**values) if values else NO_CONSTRAINTS


def _with_constraints(node: TypeNode, constraints: Constraints) -> TypeNode:
    if not constraints:
        return node
    if isinstance(node, Scalar):
        return Scalar(node.kind, constraints)
    if isinstance(node, ListOf):
        return ListOf(node.item, constraints, node.unique)
    if isinstance(node, Nullable):
        return Nullable(_with_constraints(node.inner, constraints))
    return node


def _doc(obj: Any) -> str | None:
    doc = obj.__dict__.get("__doc__") if isinstance(obj, type) else getattr(obj, "__doc__", None)
    return inspect.cleandoc(doc) if doc else None


class TypeGraph:
    """Every model and enum reachable from a contract, by unique name."""

    def __init__(self) -> None:
        self.models: dict[str, ModelType] = {}
        self.enums: dict[str, EnumType] = {}
        self._names: dict[type, str] = {}

    # -- public -------------------------------------------------------------

    def node(self, annotation: Any, *, where: str = "") -> TypeNode:
        """The node for a Python annotation, registering models and enums it reaches."""
        try:
            return self._node(annotation)
        except ContractError as exc:
            raise ContractError(f"{where}: {exc}" if where else str(exc)) from None

    def model(self, name: str) -> ModelType:
        return self.models[name]

    def name_of(self, cls: type) -> str:
        """The unique name a model or enum class is known by in this graph."""
        return self._names[cls]

    # -- internals ----------------------------------------------------------

    def _node(self, annotation: Any) -> TypeNode:
        if annotation is None or annotation is type(None):
            return Unit
        origin = typing.get_origin(annotation)
        args = typing.get_args(annotation)

        if origin is typing.Annotated:
            inner = self._node(args[0])
            metadata: list[Any] = []
            for extra in args[1:]:
                if isinstance(extra, FieldInfo):
                    metadata.extend(extra.metadata)
                else:
                    metadata.append(extra)
            return _with_constraints(inner, _constraints_from(metadata))

        if origin is typing.Union or origin is types.UnionType:
            members = [a for a in args if a is not type(None)]
            nullable = len(members) < len(args)
            node: TypeNode
            if len(members) == 1:
                node = self._node(members[0])
            else:
                node = UnionOf(tuple(self._node(m) for m in members))
            return Nullable(node) if nullable else node

        if origin is typing.Literal:
            values = tuple(args)
            if not all(isinstance(v, str | int | bool) for v in values):
                raise ContractError(f"Literal values must be str, int or bool: {annotation!r}")
            return LiteralOf(values)

        if origin is tuple:
            if len(args) == 2 and args[1] is Ellipsis:
                return ListOf(self._node(args[0]))
            raise ContractError(
                f"fixed-length tuples cannot be carried by every protocol: {annotation!r}; "
                "use a model or tuple[X, ...]"
            )

        if origin in _LIST_ORIGINS:
            item = self._node(args[0]) if args else Scalar("any")
            return ListOf(item, unique=origin in (set, frozenset, collections.abc.Set))

        if origin in _DICT_ORIGINS:
            key = self._node(args[0]) if args else Scalar("str")
            value = self._node(args[1]) if len(args) > 1 else Scalar("any")
            if not (isinstance(key, Scalar) and key.kind in ("str", "int")):
                raise ContractError(f"dict keys must be str or int: {annotation!r}")
            return DictOf(key, value)

        if annotation in (list, set, frozenset):
            return ListOf(Scalar("any"))
        if annotation is dict:
            return DictOf(Scalar("str"), Scalar("any"))

        if isinstance(annotation, type):
            if issubclass(annotation, BaseModel):
                return ModelRef(self._register_model(annotation))
            if issubclass(annotation, enum.Enum):
                return EnumRef(self._register_enum(annotation))
            for cls, kind in _SCALARS.items():
                if annotation is cls:
                    return Scalar(kind)
            # subclasses of scalars (e.g. a str subclass) keep their base's kind
            for cls, kind in _SCALARS.items():
                if isinstance(cls, type) and cls is not object and issubclass(annotation, cls):
                    return Scalar(kind)
        if annotation is Any:
            return Scalar("any")
        raise ContractError(f"unsupported type {annotation!r}")

    def _unique_name(self, cls: type) -> str:
        if cls in self._names:
            return self._names[cls]
        name = cls.__name__
        taken = set(self.models) | set(self.enums)
        if name in taken:
            # Two different classes share a name: qualify the newcomer.
            name = f"{cls.__module__.rsplit('.', 1)[-1]}_{cls.__name__}"
            if name in taken:
                raise ContractError(f"two types are both named {cls.__name__!r}")
        self._names[cls] = name
        return name

    def _register_enum(self, cls: type[enum.Enum]) -> str:
        if cls in self._names:
            return self._names[cls]
        name = self._unique_name(cls)
        members = []
        for member in cls:
            if not isinstance(member.value, str | int) or isinstance(member.value, bool):
                raise ContractError(f"enum {cls.__name__} values must be str or int")
            members.append((member.name, member.value))
        self.enums[name] = EnumType(name, tuple(members), _doc(cls), cls)
        return name

    def _register_model(self, cls: type[BaseModel]) -> str:
        if cls in self._names:
            return self._names[cls]
        name = self._unique_name(cls)
        # Register a placeholder first so recursive models terminate.
        self.models[name] = ModelType(name, (), _doc(cls), cls)
        specs = []
        for field_name, info in cls.model_fields.items():
            node = self.node(info.annotation, where=f"{cls.__name__}.{field_name}")
            node = _with_constraints(node, _constraints_from(info.metadata))
            specs.append(
                FieldSpec(
                    name=field_name,
                    wire_name=info.alias or field_name,
                    type=node,
                    required=info.is_required(),
                    default=_default_of(info),
                    description=info.description,
                )
            )
        self.models[name] = ModelType(name, tuple(specs), _doc(cls), cls)
        return name


def _default_of(info: FieldInfo) -> Any:
    if info.default is not PydanticUndefined:
        try:
            return to_jsonable_python(info.default)
        except Exception:  # an exotic default simply goes undocumented
            return MISSING
    return MISSING


def jsonable_default(value: Any) -> Any:
    """A parameter default as JSON, or ``MISSING`` when it has none."""
    if value is inspect.Parameter.empty:
        return MISSING
    try:
        return to_jsonable_python(value)
    except Exception:
        return MISSING

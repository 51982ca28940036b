"""The neutral type graph: what every generated document is written from.

Python annotations and Pydantic models are read once, by
:mod:`polyport.core.typegraph`, into these small frozen nodes. OpenAPI, GraphQL
SDL, protobuf descriptors, WSDL/XSD, OpenRPC and AsyncAPI generators read the
nodes and nothing else, so the documents cannot drift apart.

    TypeNode
    ├── Scalar(kind, constraints)   int float bool str bytes datetime date time uuid decimal any
    ├── LiteralOf(values)           a closed set of str/int constants
    ├── EnumRef(name)               → TypeGraph.enums[name]
    ├── ModelRef(name)              → TypeGraph.models[name]  (may be recursive)
    ├── ListOf(item, constraints)   list, tuple[X, ...], set, frozenset
    ├── DictOf(key, value)          dict with str or int keys
    ├── Nullable(inner)             X | None
    ├── UnionOf(variants, tag)      X | Y (optionally discriminated by field `tag`)
    └── Unit                        no value (a method returning None)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from enum import Enum
from typing import Any, Literal, TypeAlias

from pydantic import BaseModel

ScalarKind = Literal[
    "int", "float", "bool", "str", "bytes", "datetime", "date", "time", "uuid", "decimal", "any"
]

Number: TypeAlias = int | float | Decimal


@dataclass(frozen=True, slots=True)
class Constraints:
    """Value constraints declared with ``pydantic.Field`` or ``annotated_types``."""

    ge: Number | None = None
    gt: Number | None = None
    le: Number | None = None
    lt: Number | None = None
    multiple_of: Number | None = None
    min_length: int | None = None
    max_length: int | None = None
    pattern: str | None = None
    #: Decimals only: digits after the point, and digits in all.
    decimal_places: int | None = None
    max_digits: int | None = None

    def __bool__(self) -> bool:
        return any(getattr(self, name) is not None for name in self.__slots__)


NO_CONSTRAINTS = Constraints()


@dataclass(frozen=True, slots=True)
class Scalar:
    kind: ScalarKind
    constraints: Constraints = NO_CONSTRAINTS


@dataclass(frozen=True, slots=True)
class LiteralOf:
    values: tuple[str | int | bool, ...]


@dataclass(frozen=True, slots=True)
class EnumRef:
    name: str


@dataclass(frozen=True, slots=True)
class ModelRef:
    name: str


@dataclass(frozen=True, slots=True)
class ListOf:
    item: TypeNode
    constraints: Constraints = NO_CONSTRAINTS
    unique: bool = False


@dataclass(frozen=True, slots=True)
class DictOf:
    key: TypeNode
    value: TypeNode


@dataclass(frozen=True, slots=True)
class Nullable:
    inner: TypeNode


@dataclass(frozen=True, slots=True)
class UnionOf:
    variants: tuple[TypeNode, ...]
    tag: str | None = None


@dataclass(frozen=True, slots=True)
class UnitType:
    """The type of 'no value': a method that returns ``None``."""


Unit = UnitType()

TypeNode: TypeAlias = (
    Scalar | LiteralOf | EnumRef | ModelRef | ListOf | DictOf | Nullable | UnionOf | UnitType
)

MISSING: Any = type("Missing", (), {"__repr__": lambda self: "MISSING"})()
"""Marks a field or parameter without a default (it is required)."""


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One field of a model, or one parameter of a method.

    ``name`` is the Python name, ``wire_name`` the name on the wire (the alias
    when one is declared). ``default`` is JSON-compatible or ``MISSING``.
    """

    name: str
    wire_name: str
    type: TypeNode
    required: bool
    default: Any = MISSING
    description: str | None = None


@dataclass(frozen=True, slots=True)
class ModelType:
    name: str
    fields: tuple[FieldSpec, ...]
    description: str | None
    python: type[BaseModel] = field(compare=False)

    def field(self, name: str) -> FieldSpec:
        for spec in self.fields:
            if spec.name == name or spec.wire_name == name:
                return spec
        raise KeyError(name)


@dataclass(frozen=True, slots=True)
class EnumType:
    name: str
    members: tuple[tuple[str, str | int], ...]
    description: str | None
    python: type[Enum] = field(compare=False)

    @property
    def value_kind(self) -> Literal["str", "int"]:
        return "int" if all(isinstance(v, int) for _, v in self.members) else "str"


def unwrap_nullable(node: TypeNode) -> tuple[TypeNode, bool]:
    """Return ``(inner, True)`` for ``Nullable(inner)``, else ``(node, False)``."""
    if isinstance(node, Nullable):
        return node.inner, True
    return node, False

"""JSON Schema (2020-12) from the type graph, for OpenAPI 3.1, OpenRPC and AsyncAPI.

Models and enums become ``$ref``s into a definitions map whose location the
caller chooses (``#/components/schemas/`` for OpenAPI).
"""

from __future__ import annotations

from typing import Any

from polyport.core.textforms import decimal_text
from polyport.core.typegraph import TypeGraph
from polyport.core.types import (
    MISSING,
    Constraints,
    DictOf,
    EnumRef,
    EnumType,
    ListOf,
    LiteralOf,
    ModelRef,
    ModelType,
    Nullable,
    Scalar,
    TypeNode,
    UnionOf,
    UnitType,
)

_SCALARS: dict[str, dict[str, Any]] = {
    "int": {"type": "integer", "format": "int64"},
    "float": {"type": "number", "format": "double"},
    "bool": {"type": "boolean"},
    "str": {"type": "string"},
    "bytes": {
        "type": "string",
        "contentEncoding": "base64",
        "description": "base64; written with the URL-safe alphabet, read in either",
    },
    "datetime": {"type": "string", "format": "date-time"},
    "date": {"type": "string", "format": "date"},
    "time": {"type": "string", "format": "time"},
    "uuid": {"type": "string", "format": "uuid"},
    "any": {},
}


def _number(value: Any) -> Any:
    if isinstance(value, int | float):
        return value
    return float(value)


def _apply(schema: dict[str, Any], c: Constraints, *, array: bool = False) -> dict[str, Any]:
    if not c:
        return schema
    schema = dict(schema)
    for name, key in (
        ("ge", "minimum"),
        ("le", "maximum"),
        ("gt", "exclusiveMinimum"),
        ("lt", "exclusiveMaximum"),
        ("multiple_of", "multipleOf"),
    ):
        value = getattr(c, name)
        if value is not None:
            schema[key] = _number(value)
    if c.min_length is not None:
        schema["minItems" if array else "minLength"] = c.min_length
    if c.max_length is not None:
        schema["maxItems" if array else "maxLength"] = c.max_length
    if c.pattern is not None and not array:
        schema["pattern"] = c.pattern
    return schema


def _decimal(c: Constraints) -> dict[str, Any]:
    """Decimals are written as strings (no digit lost); see :func:`decimal_text`.

    A decimal with ``decimal_places`` or ``max_digits`` is read from a string
    only: JSON Schema cannot count a number's digits (``multipleOf: 0.01``
    fails on binary floats such as 19.99), so a number form would promise
    what the validator refuses. Any other decimal is read from a number too.
    """
    text: dict[str, Any] = {"type": "string", "format": "decimal", "pattern": decimal_text(c)}
    if c.max_length is not None:
        text["maxLength"] = c.max_length
    if c.decimal_places is not None or c.max_digits is not None:
        return text
    return {"anyOf": [_apply({"type": "number"}, c), text]}


def _is_bytes(node: TypeNode) -> bool:
    if isinstance(node, Nullable):
        node = node.inner
    return isinstance(node, Scalar) and node.kind == "bytes"


class JsonSchemas:
    """Turns type-graph nodes into JSON Schema, with models referenced under ``ref_prefix``."""

    def __init__(self, graph: TypeGraph, ref_prefix: str = "#/$defs/") -> None:
        self.graph = graph
        self.ref_prefix = ref_prefix

    def ref(self, name: str) -> dict[str, Any]:
        return {"$ref": f"{self.ref_prefix}{name}"}

    def schema(self, node: TypeNode) -> dict[str, Any]:
        if isinstance(node, Scalar):
            if node.kind == "decimal":
                return _decimal(node.constraints)
            return _apply(_SCALARS[node.kind], node.constraints)
        if isinstance(node, ModelRef | EnumRef):
            return self.ref(node.name)
        if isinstance(node, ListOf):
            schema: dict[str, Any] = {"type": "array", "items": self.schema(node.item)}
            if node.unique:
                schema["uniqueItems"] = True
            return _apply(schema, node.constraints, array=True)
        if isinstance(node, DictOf):
            schema = {"type": "object", "additionalProperties": self.schema(node.value)}
            if isinstance(node.key, Scalar) and node.key.kind == "int":
                schema["propertyNames"] = {"pattern": r"^-?[0-9]+$"}
            return schema
        if isinstance(node, Nullable):
            inner = self.schema(node.inner)
            return {"anyOf": [inner, {"type": "null"}]}
        if isinstance(node, UnionOf):
            return {"anyOf": [self.schema(v) for v in node.variants]}
        if isinstance(node, LiteralOf):
            if len(node.values) == 1:
                return {"const": node.values[0]}
            return {"enum": list(node.values)}
        if isinstance(node, UnitType):
            return {"type": "null"}
        raise TypeError(f"no JSON Schema for {node!r}")

    def model(self, model: ModelType) -> dict[str, Any]:
        properties: dict[str, Any] = {}
        required: list[str] = []
        utf8_bytes = model.python.model_config.get("ser_json_bytes", "utf8") == "utf8"
        for spec in model.fields:
            schema = self.schema(spec.type)
            if utf8_bytes and _is_bytes(spec.type):
                schema = {"type": "string", "description": "UTF-8 text (the model's choice)"}
            extra: dict[str, Any] = {}
            if spec.description:
                extra["description"] = spec.description
            if spec.default is not MISSING:
                extra["default"] = spec.default
            if extra:
                schema = (
                    {**schema, **extra} if "$ref" not in schema else {"allOf": [schema], **extra}
                )
            properties[spec.wire_name] = schema
            if spec.required:
                required.append(spec.wire_name)
        out: dict[str, Any] = {"type": "object", "title": model.name, "properties": properties}
        if required:
            out["required"] = required
        if model.description:
            out["description"] = model.description
        extra_mode = model.python.model_config.get("extra")
        if extra_mode == "forbid":
            out["additionalProperties"] = False
        return out

    def enum(self, enum: EnumType) -> dict[str, Any]:
        values = [value for _, value in enum.members]
        out: dict[str, Any] = {
            "type": "integer" if enum.value_kind == "int" else "string",
            "title": enum.name,
            "enum": values,
        }
        if enum.description:
            out["description"] = enum.description
        return out

    def definitions(self) -> dict[str, Any]:
        """Every model and enum of the graph, by name."""
        defs: dict[str, Any] = {}
        for name, model in sorted(self.graph.models.items()):
            defs[name] = self.model(model)
        for name, enum in sorted(self.graph.enums.items()):
            defs[name] = self.enum(enum)
        return defs

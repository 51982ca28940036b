"""Values held to the type graph: what every generated document promises, enforced once.

Pydantic validates in lax mode: it reads ``true`` as 1, ``"5"`` as 5 and
1700000000 as a datetime, and its ``int`` has no bound. The documents say
otherwise — JSON Schema's ``integer`` is not a boolean, ``int64`` and protobuf's
``int64`` end at 2**63 - 1, a ``date-time`` is a string — and a server that
accepts what its document forbids is as wrong as one that refuses what it
allows. So arguments, as they arrived and before pydantic converts anything,
are held to the node their documents were written from (:func:`arguments_check`),
and results to the ranges of their declared types (:func:`result_check`).

The rules, for every edge alike (each edge decodes its wire into these
Python values first — JSON, protobuf, XML-RPC, SOAP, GraphQL, URL text):

========  ==========================================================================
node      accepted
========  ==========================================================================
int       an int, or a float with no fraction (JSON Schema's integer: 2.0 is one),
          from -2**63 to 2**63 - 1; never a bool or a string
float     an int or a float; never a bool or a string
bool      a bool only
str       a str
decimal   a Decimal, a string of :func:`~polyport.core.textforms.decimal_text`, or —
          unless it counts digits (``decimal_places``, ``max_digits``) — a number
bytes     bytes, or a string (base64)
datetime  a datetime or a string; date, time and uuid alike; never a number
enum      a member, or one of its values (an int value never a bool)
model     its instance, or an object whose known fields hold
========  ==========================================================================

Constraints (bounds, lengths, patterns) stay pydantic's: it reads them from
the same ``Field`` the documents are written from. Checks are built once per
method; they run only where the fast path (exact types) did not already decide.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any

from polyport.core.errors import OutOfRange
from polyport.core.textforms import INT64_MAX, INT64_MIN, decimal_text, int_range
from polyport.core.typegraph import TypeGraph
from polyport.core.types import (
    Constraints,
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

Check = Callable[[Any], None]

_INT_KEY = re.compile(r"^-?[0-9]+$")
_TEXT_OR: dict[str, tuple[type, ...]] = {
    "bytes": (str, bytes, bytearray, memoryview),
    "datetime": (str, dt.datetime),
    "date": (str, dt.date),
    "time": (str, dt.time),
    "uuid": (str, uuid.UUID),
    "str": (str,),
}


class Mismatch(Exception):
    """A value that is not of its node's kind; ``loc`` is filled in on the way out."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.loc: list[str | int] = []


def _fail(kind: str, message: str) -> Mismatch:
    return Mismatch(kind, message)


def _check_int(value: Any) -> None:
    if isinstance(value, int) and not isinstance(value, bool):
        if not INT64_MIN <= value <= INT64_MAX:
            raise _fail("int_range", "Input should be a 64-bit integer (-2**63 to 2**63 - 1)")
        return
    if isinstance(value, float) and value.is_integer():
        # A float this large was a literal no int64 holds (below -2**63 it reads as -2**63).
        if not -(2.0**63) < value < 2.0**63:
            raise _fail("int_range", "Input should be a 64-bit integer (-2**63 to 2**63 - 1)")
        return
    raise _fail("int_type", "Input should be a valid integer")


def _check_float(value: Any) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise _fail("float_type", "Input should be a valid number")


def _check_bool(value: Any) -> None:
    if not isinstance(value, bool):
        raise _fail("bool_type", "Input should be a valid boolean")


def _check_any(value: Any) -> None:
    return None


def _check_decimal(c: Constraints) -> Check:
    text = re.compile(decimal_text(c))
    numbers = c.decimal_places is None and c.max_digits is None
    form = text.pattern

    def check(value: Any) -> None:
        if isinstance(value, Decimal):
            return
        if isinstance(value, str):
            if not text.fullmatch(value):
                raise _fail("decimal_text", f"Input should be a decimal written as {form}")
            return
        if numbers and isinstance(value, int | float) and not isinstance(value, bool):
            return
        if isinstance(value, int | float) and not isinstance(value, bool):
            raise _fail(
                "decimal_text", 'Input should be a decimal written as a string, e.g. "19.90"'
            )
        raise _fail("decimal_type", "Input should be a valid decimal")

    return check


def _instance_of(kinds: tuple[type, ...], kind: str, what: str) -> Check:
    def check(value: Any) -> None:
        if not isinstance(value, kinds):
            raise _fail(kind, f"Input should be {what}")

    return check


def _scalar(node: Scalar) -> Check:
    kind = node.kind
    if kind == "int":
        return _check_int
    if kind == "float":
        return _check_float
    if kind == "bool":
        return _check_bool
    if kind == "decimal":
        return _check_decimal(node.constraints)
    if kind == "any":
        return _check_any
    what = "a valid string" if kind == "str" else f"a {kind} written as a string"
    return _instance_of(_TEXT_OR[kind], f"{kind}_type", what)


def _same_kind(value: Any, allowed: Any) -> bool:
    if isinstance(allowed, bool):
        return isinstance(value, bool) and value == allowed
    if isinstance(allowed, int):
        return isinstance(value, int) and not isinstance(value, bool) and value == allowed
    return isinstance(value, str) and value == allowed


class _Checks:
    """Builds the check of each node of one graph (models once, so recursion ends)."""

    def __init__(self, graph: TypeGraph) -> None:
        self.graph = graph
        self.models: dict[str, Check] = {}

    def build(self, node: TypeNode) -> Check:
        if isinstance(node, Scalar):
            return _scalar(node)
        if isinstance(node, Nullable):
            inner = self.build(node.inner)

            def nullable(value: Any) -> None:
                if value is not None:
                    inner(value)

            return nullable
        if isinstance(node, ListOf):
            return self._list(self.build(node.item))
        if isinstance(node, DictOf):
            return self._dict(node)
        if isinstance(node, ModelRef):
            return self._model(node.name)
        if isinstance(node, EnumRef):
            return self._enum(node.name)
        if isinstance(node, LiteralOf):
            values = node.values
            shown = ", ".join(repr(v) for v in values)

            def literal(value: Any) -> None:
                if not any(_same_kind(value, allowed) for allowed in values):
                    raise _fail("literal_error", f"Input should be one of {shown}")

            return literal
        if isinstance(node, UnionOf):
            variants = [self.build(v) for v in node.variants]

            def union(value: Any) -> None:
                for variant in variants:
                    try:
                        variant(value)
                    except Mismatch:
                        continue
                    return
                raise _fail("union_type", "Input should match one of the declared types")

            return union
        if isinstance(node, UnitType):

            def unit(value: Any) -> None:
                if value is not None:
                    raise _fail("none_required", "Input should be null")

            return unit
        raise TypeError(f"no check for {node!r}")

    @staticmethod
    def _list(item: Check) -> Check:
        def items(value: Any) -> None:
            if not isinstance(value, list | tuple | set | frozenset):
                raise _fail("list_type", "Input should be a valid array")
            for index, element in enumerate(value):
                try:
                    item(element)
                except Mismatch as exc:
                    exc.loc.insert(0, index)
                    raise

        return items

    def _dict(self, node: DictOf) -> Check:
        value_check = self.build(node.value)
        int_keys = isinstance(node.key, Scalar) and node.key.kind == "int"

        def mapping(value: Any) -> None:
            if not isinstance(value, Mapping):
                raise _fail("dict_type", "Input should be a valid object")
            for key, element in value.items():
                if int_keys:
                    if isinstance(key, str) and _INT_KEY.fullmatch(key):
                        number = int(key)
                    elif isinstance(key, int) and not isinstance(key, bool):
                        number = key
                    else:
                        raise _fail("int_parsing", f"Key {str(key)[:40]!r} should be an integer")
                    if not INT64_MIN <= number <= INT64_MAX:
                        raise _fail("int_range", "Keys should be 64-bit integers")
                elif not isinstance(key, str):
                    raise _fail("string_type", "Keys should be strings")
                try:
                    value_check(element)
                except Mismatch as exc:
                    exc.loc.insert(0, str(key))
                    raise

        return mapping

    def _model(self, name: str) -> Check:
        found = self.models.get(name)
        if found is not None:
            return found
        models = self.models
        done: list[Check] = []
        # Registered before its fields are built: a recursive model finds itself here.
        models[name] = lambda value: done[0](value)
        model = self.graph.model(name)
        python = model.python
        fields: list[tuple[str, str, Check]] = []
        for spec in model.fields:
            fields.append((spec.wire_name, spec.name, self.build(spec.type)))

        def check(value: Any) -> None:
            if isinstance(value, python):
                return  # already validated when it was made
            if not isinstance(value, Mapping):
                raise _fail("model_type", "Input should be a valid object")
            for wire, attribute, field_check in fields:
                key = wire if wire in value else attribute
                if key in value:
                    try:
                        field_check(value[key])
                    except Mismatch as exc:
                        exc.loc.insert(0, key)
                        raise

        done.append(check)
        models[name] = check
        return check

    def _enum(self, name: str) -> Check:
        enum = self.graph.enums[name]
        cls = enum.python
        values = [value for _, value in enum.members]
        shown = ", ".join(repr(v) for v in values)

        def check(value: Any) -> None:
            if isinstance(value, cls):
                return
            if not any(_same_kind(value, allowed) for allowed in values):
                raise _fail("enum", f"Input should be one of {shown}")

        return check


def _detail(exc: Mismatch) -> dict[str, Any]:
    field = ".".join(str(part) for part in exc.loc) or "(body)"
    return {"field": field, "message": exc.message, "type": exc.kind}


def arguments_check(
    params: Sequence[FieldSpec], graph: TypeGraph
) -> Callable[[Any], list[dict[str, Any]]]:
    """The check of a call's named arguments: one ``{field, message, type}`` per misfit.

    Names it does not know are left to the validator, which refuses them.
    """
    checks = _Checks(graph)
    by_name = {p.wire_name: checks.build(p.type) for p in params}

    def check(args: Any) -> list[dict[str, Any]]:
        problems: list[dict[str, Any]] = []
        if not isinstance(args, Mapping):
            return problems  # the validator words this one
        for name, value in args.items():
            field_check = by_name.get(name)
            if field_check is None:
                continue
            try:
                field_check(value)
            except Mismatch as exc:
                exc.loc.insert(0, name)
                problems.append(_detail(exc))
        return problems

    return check


# -- results ------------------------------------------------------------------------------


class _Ranges:
    """Builds result checks: only where a node holds ints outside any model; else None.

    A model's own ints are not walked: a page of fifty models would pay a
    check per item on every call, for numbers that come from storage which is
    itself 64-bit. The wires with a width refuse them when they write them
    (gRPC, XML-RPC and SOAP say OUT_OF_RANGE); a model whose fields can
    overflow declares bounds (``Field(le=…)``), and constructing it fails.
    """

    def __init__(self, what: str) -> None:
        self.what = what

    def build(self, node: TypeNode) -> Check | None:
        if isinstance(node, Scalar):
            return self._int(node.constraints) if node.kind == "int" else None
        if isinstance(node, Nullable):
            inner = self.build(node.inner)
            if inner is None:
                return None
            return lambda value: None if value is None else inner(value)
        if isinstance(node, ListOf):
            item = self.build(node.item)
            if item is None:
                return None

            def items(value: Any) -> None:
                if isinstance(value, list | tuple | set | frozenset):
                    for element in value:
                        item(element)

            return items
        if isinstance(node, DictOf):
            entry = self.build(node.value)
            if entry is None:
                return None

            def entries(value: Any) -> None:
                if isinstance(value, Mapping):
                    for element in value.values():
                        entry(element)

            return entries
        if isinstance(node, UnionOf):
            variants = [c for c in (self.build(v) for v in node.variants) if c is not None]
            if not variants:
                return None

            def union(value: Any) -> None:
                for variant in variants:
                    variant(value)

            return union
        return None  # models (see above), enums, literals, strings: nothing to hold

    def _int(self, c: Constraints) -> Check:
        low, high = int_range(c)
        what = self.what

        def check(value: Any) -> None:
            if isinstance(value, int) and not low <= value <= high:
                raise OutOfRange(f"{what} is out of range: its type holds {low} to {high}")

        return check


def result_check(node: TypeNode, what: str) -> Check | None:
    """The check of a result's integers against their declared ranges, or None if it has none.

    A result its declared type cannot hold (``multiply(2**62, 4)`` of an ``int``,
    which every wire carries as int64) is :class:`OutOfRange` on every edge —
    gRPC's OUT_OF_RANGE, HTTP's 422 — never a number one edge writes and another
    cannot. ``what`` names the result in the message.
    """
    return _Ranges(what).build(node)

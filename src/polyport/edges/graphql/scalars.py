"""The custom scalars: the type graph's scalars GraphQL has no built-in type for.

==========  ====================================================  ==============
scalar      on the wire (JSON)                                    from Python
==========  ====================================================  ==============
Long        a number, signed 64-bit                               ``int``
DateTime    an RFC 3339 string with offset, ``2026-11-28T12:30:05Z``  ``datetime``
Date        ``2026-11-28``                                         ``date``
Time        ``12:30:05``                                           ``time``
UUID        ``12345678-1234-5678-1234-567812345678``               ``uuid.UUID``
Decimal     a string, so no digit is lost (a number is accepted)   ``Decimal``
Bytes       standard base64 with padding                           ``bytes``
JSON        any JSON value                                         ``dict``, ``Any``
==========  ====================================================  ==============

GraphQL's ``Int`` is 32-bit by specification; the type graph's ``int`` is
64-bit, so an ``int`` is ``Int`` only when its declared bounds fit 32 bits
(``Field(ge=1, le=100)``) and ``Long`` otherwise. Inputs are parsed into the
Python value (a ``datetime``, ``bytes``, …) and validated once more by the
method's own validator; outputs are written by the method's serializer,
already in the form above, so these scalars' ``serialize`` is only used for
default values in introspection.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import uuid
from decimal import Decimal, InvalidOperation
from typing import Any

from graphql import (
    FloatValueNode,
    GraphQLError,
    GraphQLScalarType,
    IntValueNode,
    StringValueNode,
    ValueNode,
    value_from_ast_untyped,
)

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# -- Long -----------------------------------------------------------------------------------


def _long(value: Any) -> int:
    number: int
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, float) and value.is_integer() and -(2.0**63) < value < 2.0**63:
        # A float this large is a JSON literal no int64 holds, rounded by the parser
        # (-2**63 - 1 reads as -2**63): refused, not taken for its neighbour.
        number = int(value)
    else:
        raise GraphQLError(f"Long cannot represent a non-integer value: {_describe(value)}")
    if not INT64_MIN <= number <= INT64_MAX:
        raise GraphQLError(f"Long cannot represent a value outside 64 bits: {number}")
    return number


def _long_literal(node: ValueNode, _variables: Any = None) -> int:
    if not isinstance(node, IntValueNode):
        raise GraphQLError("Long cannot represent a non-integer value", node)
    return _long(int(node.value))


Long = GraphQLScalarType(
    "Long",
    serialize=_long,
    parse_value=_long,
    parse_literal=_long_literal,
    description="A signed 64-bit integer, written as a JSON number.",
)


# -- strings with a format ------------------------------------------------------------------


def _string_scalar(
    name: str, parse: Any, description: str, specified_by_url: str | None = None
) -> GraphQLScalarType:
    def parse_value(value: Any) -> Any:
        if not isinstance(value, str):
            raise GraphQLError(f"{name} must be a string, not {_describe(value)}")
        try:
            return parse(value)
        except (ValueError, TypeError, InvalidOperation, binascii.Error):
            raise GraphQLError(f"{name} cannot represent {_describe(value)}") from None

    def parse_literal(node: ValueNode, _variables: Any = None) -> Any:
        if not isinstance(node, StringValueNode):
            raise GraphQLError(f"{name} must be a string", node)
        return parse_value(node.value)

    return GraphQLScalarType(
        name,
        serialize=_serialize_text,
        parse_value=parse_value,
        parse_literal=parse_literal,
        description=description,
        specified_by_url=specified_by_url,
    )


def _serialize_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    return str(value)


def _datetime(text: str) -> dt.datetime:
    value = dt.datetime.fromisoformat(text)
    if "T" not in text.upper() and " " not in text:
        raise ValueError("not a date-time")
    return value


def _bytes(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


DateTime = _string_scalar(
    "DateTime",
    _datetime,
    "A date and time as an RFC 3339 string, e.g. 2026-11-28T12:30:05Z.",
    "https://scalars.graphql.org/andimarek/date-time",
)
Date = _string_scalar("Date", dt.date.fromisoformat, "A calendar date, e.g. 2026-11-28.")
Time = _string_scalar("Time", dt.time.fromisoformat, "A time of day, e.g. 12:30:05.")
Uuid = _string_scalar(
    "UUID",
    uuid.UUID,
    "A UUID in its canonical text form.",
    "https://www.rfc-editor.org/rfc/rfc9562",
)
BytesScalar = _string_scalar("Bytes", _bytes, "Binary data as standard base64 with padding.")


# -- Decimal ----------------------------------------------------------------------------------


def _decimal(value: Any) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
        raise GraphQLError(f"Decimal cannot represent {_describe(value)}")
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise GraphQLError(f"Decimal cannot represent {_describe(value)}") from None
    if not number.is_finite():
        raise GraphQLError("Decimal cannot represent an infinite or NaN value")
    return number


def _decimal_literal(node: ValueNode, _variables: Any = None) -> Decimal:
    if not isinstance(node, StringValueNode | IntValueNode | FloatValueNode):
        raise GraphQLError("Decimal must be a string or a number", node)
    return _decimal(node.value)


DecimalScalar = GraphQLScalarType(
    "Decimal",
    serialize=_serialize_text,
    parse_value=_decimal,
    parse_literal=_decimal_literal,
    description=(
        "An exact decimal number, written as a string so that no digit is lost "
        '("12.50"); a number is accepted as input.'
    ),
)


# -- JSON ------------------------------------------------------------------------------------


def _json_literal(node: ValueNode, variables: Any = None) -> Any:
    return value_from_ast_untyped(node, variables)


def _identity(value: Any) -> Any:
    return value


Json = GraphQLScalarType(
    "JSON",
    serialize=_identity,
    parse_value=_identity,
    parse_literal=_json_literal,
    description="Any JSON value: maps with free keys, values of mixed types.",
)

ALL = (Long, DateTime, Date, Time, Uuid, DecimalScalar, BytesScalar, Json)

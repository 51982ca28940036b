"""How the type graph goes onto the SOAP wire: the decisions the WSDL and the codec share.

The WSDL generator (:mod:`.wsdl`) and the codec (:mod:`.codec`) both read
these, so what the document says is what the edge reads and writes:

* names: ``get_user`` is the operation ``GetUser``, its request element
  ``<GetUser>`` and its response element ``<GetUserResponse>`` holding
  ``<result>`` (a resource list: ``<items>``… and ``<next_cursor>``);
* scalars: :data:`XSD_SCALARS`;
* lists: *bare* (the field's element repeated, ``maxOccurs="unbounded"``)
  where that is unambiguous — a field of a sequence that is not nullable and
  has no default other than ``[]`` — and otherwise a *wrapper* element
  holding ``<item>`` children, so ``None`` and ``[]`` stay different;
* union variants: one element of an ``xsd:choice`` each, named by
  :func:`variant_names`.
"""

from __future__ import annotations

import re

from polyport.core.spec import MethodSpec
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

SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP12_ENV = "http://www.w3.org/2003/05/soap-envelope"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
XSD = "http://www.w3.org/2001/XMLSchema"
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
PASSWORD_TEXT = (
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0"
    "#PasswordText"
)

#: The element a result is carried in, inside ``<{Operation}Response>``.
RESULT = "result"
#: A resource list's page: its items and the cursor of the next page.
ITEMS = "items"
NEXT_CURSOR = "next_cursor"
#: The child elements of a list wrapper and of a dict.
ITEM = "item"
ENTRY = "entry"
KEY = "key"
VALUE = "value"
#: The fault detail element (declared in the schema of every WSDL).
FAULT_DETAIL = "ServiceFault"

XSD_SCALARS: dict[str, str] = {
    "int": "long",
    "float": "double",
    "bool": "boolean",
    "str": "string",
    "bytes": "base64Binary",
    "datetime": "dateTime",
    "date": "date",
    "time": "time",
    "uuid": "string",  # restricted by UUID_PATTERN
    "decimal": "decimal",
    "any": "string",  # JSON text: XML has no neutral form for "any value"
}
UUID_PATTERN = "[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}"


def namespace(service: str, version: int) -> str:
    """The target namespace of a service's WSDL and of its elements."""
    return f"urn:polyport:{service}:v{version}"


def operation_name(method: str) -> str:
    """``get_user`` → ``GetUser``."""
    return "".join(part[:1].upper() + part[1:] for part in method.split("_") if part)


def soap_action(tns: str, operation: str) -> str:
    return f"{tns}#{operation}"


def is_bare_list(node: TypeNode, *, required: bool = True, default: object = MISSING) -> bool:
    """Whether a field of this type is written as its element repeated (else: a wrapper).

    Only a field of a sequence can be bare. A nullable list needs a wrapper
    to tell ``None`` from ``[]``; so does a list whose default is not ``[]``
    (zero elements would mean the default, and ``[]`` could not be sent).
    """
    return isinstance(node, ListOf) and (required or default == [])


def field_is_bare(spec: FieldSpec) -> bool:
    return is_bare_list(spec.type, required=spec.required, default=spec.default)


def scalar_name(node: Scalar) -> str:
    return (
        "uuid" if node.kind == "uuid" else "json" if node.kind == "any" else XSD_SCALARS[node.kind]
    )


def _type_word(node: TypeNode) -> str:
    if isinstance(node, Scalar):
        return scalar_name(node)
    if isinstance(node, EnumRef | ModelRef):
        return node.name
    if isinstance(node, ListOf):
        return "list"
    if isinstance(node, DictOf):
        return "map"
    if isinstance(node, LiteralOf):
        return "literal"
    if isinstance(node, Nullable):
        return _type_word(node.inner)
    if isinstance(node, UnionOf):
        return "choice"
    return "value"


def variant_names(union: UnionOf) -> tuple[str, ...]:
    """The element name of each variant of a union: its type's name, made unique."""
    names: list[str] = []
    for variant in union.variants:
        word = _type_word(variant)
        name, n = word, 2
        while name in names:
            name, n = f"{word}{n}", n + 1
        names.append(name)
    return tuple(names)


# Escapes, groups and quantifiers the two dialects read differently (or XSD lacks):
# such a pattern is not translated (\d is Unicode digits in both; \s and \w are not).
_XSD_UNSAFE = re.compile(r"\\[xuUAZbBsSwW0-9]|\(\?|[*+?}]\?|[\x00-\x08\x0b\x0c\x0e-\x1f]")
_ANYTHING = "[\\s\\S]*"


def xsd_pattern(pattern: str) -> str | None:
    """A Python regular expression as an XSD pattern, or None when it cannot be said safely.

    XSD patterns match the whole value; Python's (as pydantic uses them)
    search anywhere unless anchored, so an unanchored side is padded with
    "anything". A pattern the dialects would read differently is left to the
    documentation.
    """
    body = pattern
    anchored_start = body.startswith("^")
    anchored_end = body.endswith("$") and not body.endswith("\\$")
    if anchored_start:
        body = body[1:]
    if anchored_end:
        body = body[:-1]
    if _XSD_UNSAFE.search(body) or "^" in body.replace("[^", "") or "$" in body:
        return None
    if anchored_start and anchored_end:
        return body
    return (
        ("" if anchored_start else _ANYTHING)
        + "("
        + body
        + ")"
        + ("" if anchored_end else _ANYTHING)
    )


def response_fields(method: MethodSpec) -> tuple[FieldSpec, ...]:
    """The children of ``<{Operation}Response>``: the result, a page, or nothing."""
    if method.paged and isinstance(method.returns, ListOf):
        return (
            FieldSpec(ITEMS, ITEMS, method.returns, True, description="The items of this page."),
            FieldSpec(
                NEXT_CURSOR,
                NEXT_CURSOR,
                Nullable(Scalar("str")),
                True,
                description="Pass as cursor for the next page; nil on the last page.",
            ),
        )
    if isinstance(method.returns, UnitType):
        return ()
    return (FieldSpec(RESULT, RESULT, method.returns, True),)

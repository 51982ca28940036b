"""XML ⇄ Python values, from the type graph; readers and writers built once per operation.

Reading turns the children of a request element into the keyword arguments
the dispatch pipeline validates (typed where the XML says the type, so a
union picks the variant the client chose; raw text otherwise, so pydantic
reports a bad value the same way on every edge). Writing appends escaped
text to a list of strings: no tree is built for a response.

Values to write are what :meth:`Binding.dump_python` gives with
``mode="python"`` (models as dicts by wire name, datetimes, decimals,
bytes and enum members as themselves), so the handler's result has been
checked against its annotation before a byte is written.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import math
import re
import uuid
from collections.abc import Callable, Iterable
from decimal import Decimal, InvalidOperation
from enum import Enum
from typing import Any

import orjson
from pydantic_core import to_json

from polyport import xmlsafe
from polyport.core.errors import InvalidArgument, OutOfRange
from polyport.core.typegraph import TypeGraph
from polyport.core.types import (
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
    unwrap_nullable,
)
from polyport.edges.soap.mapping import (
    ENTRY,
    ITEM,
    KEY,
    VALUE,
    XSI,
    field_is_bare,
    variant_names,
)

Element = Any  # lxml.etree._Element: lxml ships no type information
Reader = Callable[[Element], Any]
Writer = Callable[[Any, list[str]], None]
Text = Callable[[Any], str]

XSI_NIL = f"{{{XSI}}}nil"
_NIL = ("true", "1")


class DecodeError(Exception):
    """A value the XML cannot mean; ``path`` is filled in on the way out."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.message = message
        self.kind = kind
        self.path: list[str] = []

    def as_invalid(self) -> InvalidArgument:
        field = ".".join(self.path) or "(body)"
        return InvalidArgument(
            f"invalid arguments: {field}: {self.message}",
            details=[{"field": field, "message": self.message, "type": self.kind}],
        )


class XmlUnrepresentable(ValueError):
    """A string holds characters XML 1.0 cannot carry (most control characters)."""


# -- text ---------------------------------------------------------------------------------

_SPECIAL = re.compile("[&<>\r\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def escape(text: str) -> str:
    """``text`` as XML character data; a carriage return survives as ``&#13;``."""
    if _SPECIAL.search(text) is None:
        return text
    if _ILLEGAL.search(text) is not None:
        raise XmlUnrepresentable("the value holds characters XML 1.0 cannot carry")
    return (
        text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\r", "&#13;")
    )


def _float_text(value: Any) -> str:
    if math.isfinite(value):
        return repr(float(value))
    if math.isnan(value):
        return "NaN"
    return "INF" if value > 0 else "-INF"


def _decimal_text(value: Any) -> str:
    if isinstance(value, Decimal) and value.is_finite():
        return format(value, "f")
    return str(value)


def _bytes_text(value: Any) -> str:
    return base64.b64encode(value).decode("ascii")


def _json_text(value: Any) -> str:
    return escape(to_json(value).decode())


def _enum_text(value: Any) -> str:
    raw = value.value if isinstance(value, Enum) else value
    return escape(raw) if isinstance(raw, str) else str(raw)


def _literal_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return escape(value) if isinstance(value, str) else str(value)


def _iso(value: Any) -> str:
    return str(value.isoformat())


def _int_text(value: Any) -> str:
    # xsd:long ends at 64 bits; declared int results are held there by the dispatcher,
    # a model's own ints are held here.
    if not -0x8000000000000000 <= value <= 0x7FFFFFFFFFFFFFFF:
        raise OutOfRange("an integer beyond 64 bits has no xsd:long form")
    return str(value)


_SCALAR_TEXT: dict[str, Text] = {
    "int": _int_text,
    "float": _float_text,
    "bool": lambda v: "true" if v else "false",
    "str": escape,
    "bytes": _bytes_text,
    "datetime": _iso,
    "date": _iso,
    "time": _iso,
    "uuid": str,
    "decimal": _decimal_text,
    "any": _json_text,
}


# -- reading scalars ----------------------------------------------------------------------


def _text(element: Element) -> str:
    text = element.text
    return "" if text is None else str(text)


def _converting(convert: Callable[[str], Any], *errors: type[Exception]) -> Reader:
    """A reader that converts the text, or hands it over as is for pydantic to refuse."""
    caught: tuple[type[Exception], ...] = (*errors, ValueError, TypeError)

    def read(element: Element) -> Any:
        text = element.text
        if text is None:
            return ""
        try:
            return convert(text)
        except caught:
            return text

    return read


_BOOLEANS = {"true": True, "1": True, "false": False, "0": False}


def _read_bool(element: Element) -> Any:
    text = _text(element).strip()
    value = _BOOLEANS.get(text)
    return text if value is None else value


def _read_bytes(element: Element) -> bytes:
    text = element.text
    if not text:
        return b""
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise DecodeError("not valid base64", "base64_invalid") from None


def _read_json(element: Element) -> Any:
    try:
        return orjson.loads(_text(element))
    except orjson.JSONDecodeError:
        raise DecodeError("not valid JSON text", "json_invalid") from None


_SCALAR_READ: dict[str, Reader] = {
    "int": _converting(xmlsafe.integer),
    "float": _converting(lambda text: xmlsafe.double(text, special=True)),
    "bool": _read_bool,
    "str": _text,
    "bytes": _read_bytes,
    "datetime": _converting(dt.datetime.fromisoformat),
    "date": _converting(dt.date.fromisoformat),
    "time": _converting(dt.time.fromisoformat),
    "uuid": _converting(uuid.UUID),
    "decimal": _converting(xmlsafe.decimal, InvalidOperation),
    "any": _read_json,
}


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


# -- sequences: a model's fields, an operation's parameters, a dict entry -------------------


class Sequence:
    """The fields of one ``xsd:sequence``, read from and written to XML."""

    def __init__(self, codec: Codec, fields: Iterable[FieldSpec]) -> None:
        self.fields = tuple(fields)
        self._codec = codec
        self._slots: dict[str, tuple[str, bool, Reader]] = {}
        self._fills: list[tuple[str, bool]] = []
        self._out: list[tuple[str, str, str, str, bool, Text | None, Writer | None]] = []

    def build(self) -> Sequence:
        """Make the readers and writers (separately from ``__init__``: models may recurse)."""
        codec, tns = self._codec, self._codec.tns
        for spec in self.fields:
            name = spec.wire_name
            bare = field_is_bare(spec)
            node = spec.type.item if bare and isinstance(spec.type, ListOf) else spec.type
            inner, nullable = unwrap_nullable(node)
            read = codec.reader(inner)
            self._slots[f"{{{tns}}}{name}"] = self._slots[name] = (name, bare, read)
            if bare and spec.required:
                self._fills.append((name, True))
            elif nullable and not bare and spec.required:
                self._fills.append((name, False))
            text, write = codec.writer(inner)
            self._out.append(
                (name, f"<{name}>", f"</{name}>", f'<{name} xsi:nil="true"/>', bare, text, write)
            )
        return self

    def read(self, element: Element) -> dict[str, Any]:
        """The children of ``element`` as a dict by wire name (unknown names kept, for pydantic)."""
        out: dict[str, Any] = {}
        slots = self._slots
        for child in element:
            slot = slots.get(child.tag)
            if slot is None:
                out[_local(child.tag)] = child.text
                continue
            name, bare, read = slot
            try:
                value = None if child.get(XSI_NIL) in _NIL else read(child)
            except DecodeError as exc:
                exc.path.insert(0, name if not bare else f"{name}.{len(out.get(name, ()))}")
                raise
            if bare:
                items = out.get(name)
                if items is None:
                    out[name] = [value]
                else:
                    items.append(value)
            elif name in out:
                error = DecodeError("the element appears more than once", "duplicate")
                error.path.append(name)
                raise error
            else:
                out[name] = value
        for name, is_list in self._fills:
            if name not in out:
                out[name] = [] if is_list else None
        return out

    def write(self, values: dict[str, Any], out: list[str]) -> None:
        """Append the fields of ``values`` (a dict by wire name) as elements."""
        append = out.append
        for name, start, end, nil, bare, text, write in self._out:
            value = values[name]
            if value is None:
                append(nil)
            elif bare:
                for item in value:
                    if item is None:
                        append(nil)
                    elif text is not None:
                        append(start + text(item) + end)
                    else:
                        append(start)
                        write(item, out)  # type: ignore[misc]
                        append(end)
            elif text is not None:
                append(start + text(value) + end)
            else:
                append(start)
                write(value, out)  # type: ignore[misc]
                append(end)


# -- the codec of one service ------------------------------------------------------------------


class Codec:
    """Readers and writers for the types of one service's graph, made once and shared."""

    def __init__(self, graph: TypeGraph, tns: str) -> None:
        self.graph = graph
        self.tns = tns
        self._models: dict[str, Sequence] = {}

    def sequence(self, fields: Iterable[FieldSpec]) -> Sequence:
        return Sequence(self, fields).build()

    def model(self, name: str) -> Sequence:
        found = self._models.get(name)
        if found is None:
            found = self._models[name] = Sequence(self, self.graph.model(name).fields)
            found.build()  # after registering it: a model may contain itself
        return found

    # -- reading ------------------------------------------------------------------------

    def reader(self, node: TypeNode) -> Reader:
        """What reads an element whose content is a value of ``node`` (never nil: see Sequence)."""
        if isinstance(node, Scalar):
            return _SCALAR_READ[node.kind]
        if isinstance(node, EnumRef):
            kind = self.graph.enums[node.name].value_kind
            return _SCALAR_READ["int" if kind == "int" else "str"]
        if isinstance(node, LiteralOf):
            return _literal_reader(node)
        if isinstance(node, ModelRef):
            name = node.name
            models = self._models
            self.model(name)
            return lambda element: models[name].read(element)
        if isinstance(node, ListOf):
            items = self.sequence([FieldSpec(ITEM, ITEM, node, True)])
            return lambda element: items.read(element)[ITEM]
        if isinstance(node, DictOf):
            return self._dict_reader(node)
        if isinstance(node, UnionOf):
            return self._union_reader(node)
        if isinstance(node, Nullable):
            return self.reader(node.inner)
        return _text

    def _dict_reader(self, node: DictOf) -> Reader:
        entry = self.sequence(
            [FieldSpec(KEY, KEY, node.key, True), FieldSpec(VALUE, VALUE, node.value, True)]
        )

        def read(element: Element) -> dict[Any, Any]:
            out: dict[Any, Any] = {}
            for index, child in enumerate(element):
                try:
                    pair = entry.read(child)
                    out[pair[KEY]] = pair[VALUE]
                except DecodeError as exc:
                    exc.path.insert(0, str(index))
                    raise
                except KeyError:
                    error = DecodeError("a dict entry needs a <key> and a <value>", "missing")
                    error.path.append(str(index))
                    raise error from None
            return out

        return read

    def _union_reader(self, node: UnionOf) -> Reader:
        names = variant_names(node)
        readers = [self.reader(variant) for variant in node.variants]
        by_tag: dict[str, Reader] = {}
        for name, variant_read in zip(names, readers, strict=True):
            by_tag[name] = by_tag[f"{{{self.tns}}}{name}"] = variant_read
        choices = ", ".join(names)

        def read(element: Element) -> Any:
            for child in element:
                chosen = by_tag.get(child.tag)
                if chosen is None:
                    break
                return chosen(child)
            raise DecodeError(f"give exactly one of: {choices}", "union_tag_invalid")

        return read

    # -- writing ------------------------------------------------------------------------

    def writer(self, node: TypeNode) -> tuple[Text | None, Writer | None]:
        """How to write a value of ``node`` as element content: as text, or by appending."""
        if isinstance(node, Scalar):
            return _SCALAR_TEXT[node.kind], None
        if isinstance(node, EnumRef):
            return _enum_text, None
        if isinstance(node, LiteralOf):
            return _literal_text, None
        if isinstance(node, ModelRef):
            name = node.name
            models = self._models
            self.model(name)
            return None, lambda value, out: models[name].write(value, out)
        if isinstance(node, ListOf):
            items = self.sequence([FieldSpec(ITEM, ITEM, node, True)])
            return None, lambda value, out: items.write({ITEM: value}, out)
        if isinstance(node, DictOf):
            entry = self.sequence(
                [FieldSpec(KEY, KEY, node.key, True), FieldSpec(VALUE, VALUE, node.value, True)]
            )
            start, end = f"<{ENTRY}>", f"</{ENTRY}>"

            def write_dict(value: Any, out: list[str]) -> None:
                for key, item in value.items():
                    out.append(start)
                    entry.write({KEY: key, VALUE: item}, out)
                    out.append(end)

            return None, write_dict
        if isinstance(node, UnionOf):
            return None, self._union_writer(node)
        if isinstance(node, Nullable):
            return self.writer(node.inner)
        return escape, None

    def _union_writer(self, node: UnionOf) -> Writer:
        names = variant_names(node)
        tests = [self._belongs(variant, node.tag) for variant in node.variants]
        # bool before int, models before plain dicts, "any" last: the first test that holds wins
        order = sorted(range(len(names)), key=lambda i: _priority(node.variants[i]))
        choices = []
        for i in order:
            text, write = self.writer(node.variants[i])
            choices.append((tests[i], f"<{names[i]}>", f"</{names[i]}>", text, write))

        def write_union(value: Any, out: list[str]) -> None:
            for test, start, end, text, write in choices:
                if test(value):
                    if text is not None:
                        out.append(start + text(value) + end)
                    else:
                        out.append(start)
                        write(value, out)  # type: ignore[misc]
                        out.append(end)
                    return
            raise XmlUnrepresentable(f"no variant of the union fits a {type(value).__name__}")

        return write_union

    def _belongs(self, node: TypeNode, tag: str | None) -> Callable[[Any], bool]:
        if isinstance(node, Scalar):
            return _SCALAR_TEST[node.kind]
        if isinstance(node, EnumRef):
            python = self.graph.enums[node.name].python
            return lambda v: isinstance(v, python)
        if isinstance(node, LiteralOf):
            literals = {(type(v), v) for v in node.values}
            return lambda v: (type(v), v) in literals
        if isinstance(node, ModelRef):
            model = self.graph.model(node.name)
            names = frozenset(f.wire_name for f in model.fields)
            tag_values: frozenset[Any] = frozenset()
            if tag is not None:
                try:
                    tag_type = model.field(tag).type
                except KeyError:
                    tag_type = None
                if isinstance(tag_type, LiteralOf):
                    tag_values = frozenset(tag_type.values)
            if tag_values:
                return lambda v: isinstance(v, dict) and v.get(tag) in tag_values
            return lambda v: isinstance(v, dict) and v.keys() == names
        if isinstance(node, ListOf):
            return lambda v: isinstance(v, list | tuple | set | frozenset)
        if isinstance(node, DictOf):
            return lambda v: isinstance(v, dict)
        return lambda v: True


def _literal_reader(node: LiteralOf) -> Reader:
    by_text = {_literal_text(v): v for v in reversed(node.values)}

    def read(element: Element) -> Any:
        text = _text(element)
        return by_text.get(text.strip(), text)

    return read


def _priority(node: TypeNode) -> int:
    if isinstance(node, Scalar):
        return {"bool": 0, "any": 9}.get(node.kind, 2)
    if isinstance(node, LiteralOf | EnumRef):
        return 1
    if isinstance(node, ModelRef):
        return 3
    if isinstance(node, DictOf):
        return 4
    return 5


_SCALAR_TEST: dict[str, Callable[[Any], bool]] = {
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "float": lambda v: isinstance(v, float),
    "bool": lambda v: isinstance(v, bool),
    "str": lambda v: isinstance(v, str),
    "bytes": lambda v: isinstance(v, bytes | bytearray),
    "datetime": lambda v: isinstance(v, dt.datetime),
    "date": lambda v: isinstance(v, dt.date) and not isinstance(v, dt.datetime),
    "time": lambda v: isinstance(v, dt.time),
    "uuid": lambda v: isinstance(v, uuid.UUID),
    "decimal": lambda v: isinstance(v, Decimal),
    "any": lambda v: True,
}

"""XML-RPC values ⇄ Python values.

Reading goes through :func:`polyport.xmlsafe.parse` (no DTD, no entities, no
network, bounded depth and size). Writing builds the response text directly:
it is small, regular, and escaping is all it needs.

    XML-RPC          Python (reading)        Python (writing)
    int, i4, i8      int                     int (i4 in range, else i8)
    boolean          bool                    bool
    string, text     str                     str, UUID, date, time, Decimal, enum values
    double           float                   float
    dateTime.iso8601 datetime (naive, UTC)   datetime (converted to UTC)
    base64           bytes                   bytes
    struct           dict                    dict, models
    array            list                    list, tuple, set
    nil              None                    None
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import enum
import uuid
from decimal import Decimal
from typing import Any
from xml.sax.saxutils import escape

from polyport import xmlsafe
from polyport.core.errors import InvalidArgument, OutOfRange
from polyport.xmlsafe import Element

_I4_MIN, _I4_MAX = -(2**31), 2**31 - 1
_I8_MIN, _I8_MAX = -(2**63), 2**63 - 1


class XmlRpcFormatError(InvalidArgument):
    """The document is XML but not a valid XML-RPC call."""


def parse_call(root: Element) -> tuple[str, list[Any]]:
    """``(method name, params)`` of a ``<methodCall>`` root element."""
    if root.tag != "methodCall":
        raise XmlRpcFormatError("the document is not a <methodCall>", unparseable=True)
    name = root.find("methodName")
    if name is None or not (name.text or "").strip():
        raise XmlRpcFormatError("<methodName> is missing", unparseable=True)
    params: list[Any] = []
    holder = root.find("params")
    if holder is not None:
        for param in holder.findall("param"):
            value = param.find("value")
            if value is None:
                raise XmlRpcFormatError("a <param> has no <value>", unparseable=True)
            params.append(read_value(value))
    return name.text.strip(), params


def read_value(value: Element) -> Any:
    children = list(value)
    if not children:
        return value.text or ""  # an untyped value is a string
    if len(children) != 1:
        raise XmlRpcFormatError("a <value> holds one typed element", unparseable=True)
    node = children[0]
    tag = node.tag
    text = node.text or ""
    try:
        if tag in ("int", "i4", "i8"):
            number = xmlsafe.integer(text)
            if not _I8_MIN <= number <= _I8_MAX:
                raise XmlRpcFormatError(f"<{tag}> out of range", unparseable=True)
            return number
        if tag == "string":
            return text
        if tag == "boolean":
            if text.strip() not in ("0", "1"):
                raise XmlRpcFormatError("<boolean> is 0 or 1", unparseable=True)
            return text.strip() == "1"
        if tag == "double":
            return xmlsafe.double(text)
        if tag == "dateTime.iso8601":
            return _read_datetime(text.strip())
        if tag == "base64":
            return base64.b64decode(text.strip(), validate=False)
        if tag == "nil":
            return None
        if tag == "struct":
            out: dict[str, Any] = {}
            for member in node.findall("member"):
                key = member.find("name")
                item = member.find("value")
                if key is None or item is None:
                    raise XmlRpcFormatError("a <member> has a <name> and a <value>")
                out[key.text or ""] = read_value(item)
            return out
        if tag == "array":
            data = node.find("data")
            return [] if data is None else [read_value(v) for v in data.findall("value")]
    except (ValueError, binascii.Error) as exc:
        raise XmlRpcFormatError(f"bad <{tag}> value: {exc}", unparseable=True) from None
    raise XmlRpcFormatError(f"unknown value type <{tag}>", unparseable=True)


def _read_datetime(text: str) -> dt.datetime:
    for form in ("%Y%m%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y%m%dT%H%M%S"):
        try:
            return dt.datetime.strptime(text, form)
        except ValueError:
            continue
    return dt.datetime.fromisoformat(text)


def write_value(value: Any) -> str:
    """One ``<value>`` element for a Python value."""
    if value is None:
        return "<value><nil/></value>"
    if isinstance(value, bool):
        return f"<value><boolean>{int(value)}</boolean></value>"
    if isinstance(value, enum.Enum):
        return write_value(value.value)
    if isinstance(value, int):
        if not _I8_MIN <= value <= _I8_MAX:
            # Declared ints are held to int64 by the dispatcher; an ``Any`` is not.
            raise OutOfRange("an integer beyond 64 bits has no XML-RPC form (<i8> at most)")
        tag = "int" if _I4_MIN <= value <= _I4_MAX else "i8"
        return f"<value><{tag}>{value}</{tag}></value>"
    if isinstance(value, float):
        return f"<value><double>{value!r}</double></value>"
    if isinstance(value, str):
        return f"<value><string>{escape(value)}</string></value>"
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        stamp = value.strftime("%Y%m%dT%H:%M:%S")
        return f"<value><dateTime.iso8601>{stamp}</dateTime.iso8601></value>"
    if isinstance(value, bytes | bytearray):
        return f"<value><base64>{base64.b64encode(value).decode()}</base64></value>"
    if isinstance(value, dt.date | dt.time | uuid.UUID | Decimal):
        return write_value(
            value.isoformat() if isinstance(value, dt.date | dt.time) else str(value)
        )
    if isinstance(value, dict):
        members = "".join(
            f"<member><name>{escape(str(k))}</name>{write_value(v)}</member>"
            for k, v in value.items()
        )
        return f"<value><struct>{members}</struct></value>"
    if isinstance(value, list | tuple | set | frozenset):
        return (
            f"<value><array><data>{''.join(write_value(v) for v in value)}</data></array></value>"
        )
    raise TypeError(f"cannot write {type(value).__name__} as XML-RPC")


def write_response(value: Any) -> bytes:
    return (
        "<?xml version='1.0'?>\n<methodResponse><params><param>"
        + write_value(value)
        + "</param></params></methodResponse>\n"
    ).encode()


def write_fault(code: int, message: str) -> bytes:
    fault = {"faultCode": code, "faultString": message}
    return (
        "<?xml version='1.0'?>\n<methodResponse><fault>"
        + write_value(fault)
        + "</fault></methodResponse>\n"
    ).encode()

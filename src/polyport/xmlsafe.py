"""Parsing untrusted XML safely, for the XML edges (XML-RPC, SOAP).

Three independent walls stand between a request body and the file system or
the network; any one of them is enough on its own:

1. **The encoding is ours to decide.** A body is read as UTF-8 (the default,
   with or without a byte-order mark), US-ASCII, ISO-8859-1, or UTF-16 with a
   byte-order mark; anything else — UTF-32, UTF-16 without a mark, EBCDIC, a
   declared encoding that is not one of these — is refused with a clear fault
   before the parser sees a byte. A UTF-16 body is decoded here and handed to
   the parser as UTF-8, so every check below reads the same characters the
   parser would.
2. **No DTD at all.** Any ``<!DOCTYPE`` or ``<!ENTITY`` in the (decoded)
   document is refused, which rules out entity expansion ("billion laughs"),
   external entities and external DTDs (XXE, SSRF, file-existence oracles).
3. **The parser cannot open anything.** Its resolver answers every URL
   libxml2 asks for (a DTD, an external entity, a parameter entity) with an
   empty document, ``no_network`` is set, DTDs are neither loaded nor
   validated, and a parsed tree that still carries a document type is refused.

The parse itself is bounded by the body size limit (1 MiB by default parses in
a few milliseconds) and the tree by ``max_depth`` and ``max_elements`` before
an edge walks it; nothing here waits on I/O, so nothing can hold the event loop.
Those two are the ``[xml]`` section of the settings (:class:`XmlConfig`), which
both XML edges read; this module imports lxml only when it first parses, so the
settings import without the extra.
"""

from __future__ import annotations

import codecs
import functools
import math
import re
import threading
from decimal import Decimal
from typing import Any

from pydantic import Field

from polyport.core.config import Section
from polyport.core.errors import InvalidArgument, MissingExtra, PayloadTooLarge

Element = Any  # lxml.etree._Element (lxml ships no type information)

#: The encodings a body may be in: Python's codec name → libxml2's name for it.
ACCEPTED = {"utf-8": "UTF-8", "ascii": "US-ASCII", "latin-1": "ISO-8859-1", "utf-16": "UTF-16"}
_ACCEPTED_TEXT = "UTF-8, US-ASCII, ISO-8859-1, or UTF-16 with a byte-order mark"

# The XML declaration, read from ASCII-compatible bytes (XML 1.0 §2.8, §4.3.3).
_DECLARATION = re.compile(
    rb"<\?xml\s+version\s*=\s*[\"'][^\"']*[\"']"
    rb"(?:\s+encoding\s*=\s*[\"']([A-Za-z][A-Za-z0-9._-]*)[\"'])?"
)
_UTF8_BOM = codecs.BOM_UTF8
_UTF32_BOMS = (codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)
_UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)


class XmlConfig(Section):
    """Limits of the XML edges (XML-RPC, SOAP): parsing is hardened whatever these say."""

    max_depth: int = Field(default=64, ge=4, le=1000)
    max_elements: int = Field(default=100_000, ge=10)


class XmlRefused(InvalidArgument):
    """The document is not well-formed, or uses what this parser refuses."""


def _refuse(message: str) -> XmlRefused:
    return XmlRefused(message, unparseable=True)


_local = threading.local()


def _parsers() -> tuple[Any, dict[str, Any]]:
    """``(etree, {encoding: parser})`` for this thread: lxml parsers are not thread-safe."""
    made = getattr(_local, "parsers", None)
    if made is None:
        try:
            from lxml import etree
        except ImportError as exc:
            raise MissingExtra("rpc", "parsing XML (XML-RPC, SOAP)") from exc

        class _RefuseEverything(etree.Resolver):  # type: ignore[misc]
            """Every URL libxml2 asks for resolves to nothing: it never opens a file."""

            def resolve(self, url: str, pubid: str, context: Any) -> Any:
                return self.resolve_string("", context)

        parsers = {}
        # The document's own declaration is overridden: the encoding decided in
        # _decode is the one parsed, whatever the body claims.
        for codec in ("utf-8", "ascii", "latin-1"):
            parser = etree.XMLParser(
                encoding=ACCEPTED[codec],
                resolve_entities=False,
                no_network=True,
                load_dtd=False,
                dtd_validation=False,
                attribute_defaults=False,
                huge_tree=False,
                remove_comments=True,
                remove_pis=True,
                collect_ids=False,
            )
            parser.resolvers.add(_RefuseEverything())
            parsers[codec] = parser
        made = _local.parsers = (etree, parsers)
    return made


def _declared(data: bytes) -> str | None:
    """The encoding named in an ASCII-compatible document's XML declaration, if any."""
    if not data.startswith(b"<?xml"):
        return None
    match = _DECLARATION.match(data)
    if match is None:
        raise _refuse("the XML declaration is malformed")
    name = match.group(1)
    return None if name is None else name.decode("ascii")


def _codec(name: str) -> str:
    """The accepted codec a declared encoding names, or a refusal naming what is accepted."""
    try:
        codec = codecs.lookup(name).name
    except LookupError:
        codec = ""
    codec = {"iso8859-1": "latin-1", "utf-16-le": "utf-16", "utf-16-be": "utf-16"}.get(codec, codec)
    if codec not in ACCEPTED:
        raise _refuse(f"the encoding {name!r} is not accepted; send {_ACCEPTED_TEXT}")
    return codec


def _decode(data: bytes) -> tuple[bytes, str]:
    """``(body, codec)``: the bytes to parse and the accepted codec they are in.

    ASCII-compatible bodies are passed through (the parser decodes them);
    UTF-16 is decoded here and re-encoded as UTF-8.
    """
    if data.startswith(_UTF32_BOMS):  # before UTF-16: FF FE 00 00 starts with FF FE
        raise _refuse(f"UTF-32 is not accepted; send {_ACCEPTED_TEXT}")
    if data.startswith(_UTF16_BOMS):
        try:
            text = data.decode("utf-16")  # reads and drops the mark
        except UnicodeDecodeError:
            raise _refuse("the body is not valid UTF-16") from None
        declared = _declared(text[:200].encode("ascii", "replace"))
        if declared is not None and _codec(declared) != "utf-16":
            raise _refuse(f"the body is UTF-16 but declares the encoding {declared!r}")
        return text.encode("utf-8"), "utf-8"
    if data.startswith(_UTF8_BOM):
        declared = _declared(data[3:])
        if declared is not None and _codec(declared) != "utf-8":
            raise _refuse(f"the body starts with a UTF-8 mark but declares {declared!r}")
        return data[3:], "utf-8"
    if b"\x00" in data[:4]:
        # "<\0" or "\0<": UTF-16 or UTF-32 without a byte-order mark.
        raise _refuse(f"the body is not in an accepted encoding; send {_ACCEPTED_TEXT}")
    declared = _declared(data)
    codec = "utf-8" if declared is None else _codec(declared)
    if codec == "utf-16":
        raise _refuse("a UTF-16 body must start with a byte-order mark")
    return data, codec


def parse(data: bytes, *, max_depth: int, max_elements: int) -> Element:
    """The root element of ``data``, or :class:`XmlRefused` saying why not."""
    etree, parsers = _parsers()
    body, codec = _decode(data)
    # The body is now in an ASCII-compatible encoding, so the markup's own
    # characters are single ASCII bytes: this search sees what the parser would.
    if b"<!DOCTYPE" in body or b"<!ENTITY" in body:
        raise _refuse("DOCTYPE and entity declarations are not accepted")
    try:
        root = etree.fromstring(body, parsers[codec])
    except etree.XMLSyntaxError as exc:
        raise _refuse(f"the body is not well-formed XML: {exc.msg}") from None
    if root is None:
        raise _refuse("the body is empty")
    if root.getroottree().docinfo.doctype:
        raise _refuse("DOCTYPE and entity declarations are not accepted")
    # A well-formed document of n bytes holds at most n/4 elements ("<a/>") and
    # nests at most n/7 deep ("<a></a>"): small ones cannot break the limits.
    if len(body) > 4 * max_elements or len(body) > 7 * max_depth:
        check_limits(root, max_depth=max_depth, max_elements=max_elements)
    return root


# Numbers as XML Schema (and XML-RPC) spell them, whitespace around them aside.
# Python's int(), float() and Decimal() read more — "5_0", Unicode digits, "nan",
# "Infinity" — which no client of either protocol sends and no document allows.
_INTEGER = re.compile(r"[+-]?[0-9]+")
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")
_DOUBLE = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def integer(text: str) -> int:
    """An ``xsd:integer`` (or XML-RPC ``<int>``) text's value; ValueError if it is not one."""
    text = text.strip()
    if _INTEGER.fullmatch(text) is None:
        raise ValueError(f"not an integer: {text[:40]!r}")
    return int(text)


def decimal(text: str) -> Decimal:
    """An ``xsd:decimal`` text's value; ValueError if it is not one."""
    text = text.strip()
    if _DECIMAL.fullmatch(text) is None:
        raise ValueError(f"not a decimal number: {text[:40]!r}")
    return Decimal(text)


#: The doubles that are not finite numbers, in any case: XML Schema spells them INF,
#: -INF and NaN; zeep, a client we interoperate with, writes Python's inf and nan.
_SPECIAL_DOUBLES = {"inf": math.inf, "+inf": math.inf, "-inf": -math.inf, "nan": math.nan}


def double(text: str, *, special: bool = False) -> float:
    """An ``xsd:double`` (or XML-RPC ``<double>``) text's value; ValueError otherwise.

    With ``special``, ``INF``, ``-INF`` and ``NaN`` too, in any case (SOAP
    carries them; XML-RPC has no spelling for them). A finite spelling too
    large for a double is refused, not read as infinity.
    """
    text = text.strip()
    if _DOUBLE.fullmatch(text) is None:
        if special and text.lower() in _SPECIAL_DOUBLES:
            return _SPECIAL_DOUBLES[text.lower()]
        raise ValueError(f"not a number: {text[:40]!r}")
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"out of a double's range: {text[:40]!r}")
    return value


def check_limits(root: Element, *, max_depth: int, max_elements: int) -> None:
    """Refuse trees deeper than ``max_depth`` or larger than ``max_elements``.

    Both are counted by libxml2's XPath engine, in C and in time linear in the
    tree: a walk in Python cost 150 ms on a 1 MiB body of small elements, time
    an anonymous caller could make the event loop spend per request.
    """
    if root.xpath("count(//*)") > max_elements:
        raise PayloadTooLarge(f"the document has more than {max_elements} elements")
    # An element max_depth steps below the root is at depth max_depth + 1.
    if root.xpath(_deeper_than(max_depth)):
        raise XmlRefused(f"the document is nested deeper than {max_depth} levels")


@functools.cache
def _deeper_than(depth: int) -> str:
    return "boolean(" + "/".join(["*"] * depth) + ")"

"""Parsing untrusted XML safely, for the XML edges (XML-RPC, SOAP).

No DTD is loaded and any ``<!DOCTYPE`` is refused outright, so no entity can
be declared — which rules out entity expansion ("billion laughs") and
external entities (XXE, SSRF through ``SYSTEM`` URLs). The parser never
touches the network, and the tree is limited in depth and size before an edge
walks it.
"""

from __future__ import annotations

import threading
from typing import Any

from polyport.core.errors import InvalidArgument, MissingExtra, PayloadTooLarge

Element = Any  # lxml.etree._Element (lxml ships no type information)


class XmlRefused(InvalidArgument):
    """The document is not well-formed, or uses what this parser refuses."""


_local = threading.local()


def _parser() -> tuple[Any, Any]:
    """``(etree, parser)`` for this thread: lxml parsers are not thread-safe."""
    made = getattr(_local, "parser", None)
    if made is None:
        try:
            from lxml import etree
        except ImportError as exc:
            raise MissingExtra("rpc", "parsing XML (XML-RPC, SOAP)") from exc
        parser = etree.XMLParser(
            resolve_entities=False,
            no_network=True,
            load_dtd=False,
            dtd_validation=False,
            huge_tree=False,
            remove_comments=True,
            remove_pis=True,
            collect_ids=False,
        )
        made = _local.parser = (etree, parser)
    return made


def parse(data: bytes, *, max_depth: int, max_elements: int) -> Element:
    """The root element of ``data``, or :class:`XmlRefused` saying why not."""
    etree, parser = _parser()
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise XmlRefused("DOCTYPE and entity declarations are not accepted", unparseable=True)
    try:
        root = etree.fromstring(data, parser)
    except etree.XMLSyntaxError as exc:
        raise XmlRefused(f"the body is not well-formed XML: {exc.msg}", unparseable=True) from None
    if root is None:
        raise XmlRefused("the body is empty", unparseable=True)
    # A well-formed document of n bytes holds at most n/4 elements ("<a/>") and
    # nests at most n/7 deep ("<a></a>"): small ones cannot break the limits.
    if len(data) > 4 * max_elements or len(data) > 7 * max_depth:
        check_limits(root, max_depth=max_depth, max_elements=max_elements)
    return root


def check_limits(root: Element, *, max_depth: int, max_elements: int) -> None:
    """Refuse trees deeper than ``max_depth`` or larger than ``max_elements``."""
    count = 0
    stack = [(root, 1)]
    while stack:
        element, depth = stack.pop()
        count += 1
        if count > max_elements:
            raise PayloadTooLarge(f"the document has more than {max_elements} elements")
        if depth > max_depth:
            raise XmlRefused(f"the document is nested deeper than {max_depth} levels")
        stack.extend((child, depth + 1) for child in element)

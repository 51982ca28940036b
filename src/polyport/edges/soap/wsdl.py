"""The WSDL 1.1 document, with its XSD schema, written from the type graph once.

    definitions
    ├── types/schema      a complexType per model, a simpleType per enum,
    │                     <Op> and <OpResponse> per operation, <ServiceFault>
    ├── message           OpRequest, OpResponse, ServiceFault
    ├── portType          one operation each (documentation from the docstring)
    ├── binding           SOAP 1.1, document/literal, soapAction per operation
    └── service/port      soap:address (filled per request from the Host header)

The codec reads the same decisions from :mod:`.mapping`, so the document
describes exactly what the edge reads and writes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson
from lxml import etree

from polyport.core.contract import MethodKind
from polyport.core.spec import MethodSpec, ServiceSpec
from polyport.core.types import (
    MISSING,
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
    TypeNode,
    UnionOf,
    unwrap_nullable,
)
from polyport.edges.soap.mapping import (
    ENTRY,
    FAULT_DETAIL,
    ITEM,
    KEY,
    UUID_PATTERN,
    VALUE,
    XSD,
    XSD_SCALARS,
    field_is_bare,
    operation_name,
    response_fields,
    variant_names,
    xsd_pattern,
)

WSDL = "http://schemas.xmlsoap.org/wsdl/"
WSDL_SOAP = "http://schemas.xmlsoap.org/wsdl/soap/"
HTTP_TRANSPORT = "http://schemas.xmlsoap.org/soap/http"
#: Replaced per request by the address the client reached the node at.
ADDRESS_PLACEHOLDER = "urn:polyport:address-placeholder"

_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


@dataclass(frozen=True, slots=True)
class OperationInfo:
    """What the document says about one operation."""

    name: str
    action: str
    method: MethodSpec


def _w(tag: str) -> str:
    return f"{{{WSDL}}}{tag}"


def _x(tag: str) -> str:
    return f"{{{XSD}}}{tag}"


def _clean(text: str) -> str:
    return _NOT_XML.sub("", text)


def _pascal(name: str) -> str:
    return operation_name(name.replace("-", "_").replace(".", "_")) or "Service"


class WsdlWriter:
    """Writes the WSDL of one service; :meth:`build` returns the document's bytes."""

    def __init__(self, spec: ServiceSpec, tns: str, operations: Sequence[OperationInfo]) -> None:
        self.spec = spec
        self.graph = spec.graph
        self.tns = tns
        self.operations = operations

    # -- the document -------------------------------------------------------------------

    def build(self) -> bytes:
        spec, tns = self.spec, self.tns
        base = _pascal(spec.name)
        root = etree.Element(
            _w("definitions"),
            nsmap={"wsdl": WSDL, "soap": WSDL_SOAP, "xsd": XSD, "tns": tns},
            name=base,
            targetNamespace=tns,
        )
        self._documentation(root, self._service_text())
        types = etree.SubElement(root, _w("types"))
        schema = etree.SubElement(
            types, _x("schema"), targetNamespace=tns, elementFormDefault="qualified"
        )
        for model in self.graph.models.values():
            self._model(schema, model)
        for enum in self.graph.enums.values():
            self._enum(schema, enum)
        for op in self.operations:
            self._wrapper(schema, op.name, op.method.params)
            self._wrapper(schema, f"{op.name}Response", response_fields(op.method))
        self._fault_element(schema)

        for op in self.operations:
            for suffix, element in (("Request", op.name), ("Response", f"{op.name}Response")):
                message = etree.SubElement(root, _w("message"), name=f"{op.name}{suffix}")
                etree.SubElement(message, _w("part"), name="parameters", element=f"tns:{element}")
        fault = etree.SubElement(root, _w("message"), name=FAULT_DETAIL)
        etree.SubElement(fault, _w("part"), name="detail", element=f"tns:{FAULT_DETAIL}")

        port_type = etree.SubElement(root, _w("portType"), name=f"{base}PortType")
        for op in self.operations:
            operation = etree.SubElement(port_type, _w("operation"), name=op.name)
            self._documentation(operation, _operation_text(op.method))
            etree.SubElement(operation, _w("input"), message=f"tns:{op.name}Request")
            etree.SubElement(operation, _w("output"), message=f"tns:{op.name}Response")
            etree.SubElement(
                operation, _w("fault"), name=FAULT_DETAIL, message=f"tns:{FAULT_DETAIL}"
            )

        binding = etree.SubElement(
            root, _w("binding"), name=f"{base}Binding", type=f"tns:{base}PortType"
        )
        self._documentation(
            binding,
            "SOAP 1.1, document/literal wrapped. Authenticate with a WS-Security "
            "UsernameToken whose PasswordText is an API key or a bearer token (JWT), "
            "or with the HTTP headers Authorization: Bearer … or X-API-Key.",
        )
        etree.SubElement(
            binding, f"{{{WSDL_SOAP}}}binding", style="document", transport=HTTP_TRANSPORT
        )
        for op in self.operations:
            operation = etree.SubElement(binding, _w("operation"), name=op.name)
            etree.SubElement(
                operation, f"{{{WSDL_SOAP}}}operation", soapAction=op.action, style="document"
            )
            for direction in ("input", "output"):
                body = etree.SubElement(operation, _w(direction))
                etree.SubElement(body, f"{{{WSDL_SOAP}}}body", use="literal")
            fault_binding = etree.SubElement(operation, _w("fault"), name=FAULT_DETAIL)
            etree.SubElement(
                fault_binding, f"{{{WSDL_SOAP}}}fault", name=FAULT_DETAIL, use="literal"
            )

        service = etree.SubElement(root, _w("service"), name=f"{base}Service")
        port = etree.SubElement(
            service, _w("port"), name=f"{base}Port", binding=f"tns:{base}Binding"
        )
        etree.SubElement(port, f"{{{WSDL_SOAP}}}address", location=ADDRESS_PLACEHOLDER)
        document = etree.tostring(root, xml_declaration=True, encoding="utf-8", pretty_print=True)
        # The schema re-declares the prefixes its QName values use, so a tool that takes
        # the schema out of the WSDL (lxml's XMLSchema, code generators) still resolves
        # them; lxml itself drops declarations it deems redundant.
        own = f'<xsd:schema xmlns:xsd="{XSD}" xmlns:tns="{tns}" '.encode()
        return bytes(document).replace(b"<xsd:schema ", own, 1)

    def _service_text(self) -> str:
        spec = self.spec
        text = spec.service.description or f"The {spec.name} service, version {spec.version}."
        streams = sorted(m.name for m in spec.methods.values() if m.kind is not MethodKind.UNARY)
        if streams:
            text += (
                " Streaming methods are not served over SOAP (use gRPC, WebSocket, SSE or "
                f"GraphQL subscriptions): {', '.join(streams)}."
            )
        return text

    # -- schema items ---------------------------------------------------------------------

    def _documentation(self, parent: Any, text: str | None) -> None:
        if text:
            etree.SubElement(parent, _w("documentation")).text = _clean(text)

    def _annotation(self, parent: Any, text: str | None) -> None:
        if text:
            annotation = etree.SubElement(parent, _x("annotation"))
            etree.SubElement(annotation, _x("documentation")).text = _clean(text)

    def _model(self, schema: Any, model: ModelType) -> None:
        complex_type = etree.SubElement(schema, _x("complexType"), name=model.name)
        self._annotation(complex_type, model.description)
        sequence = etree.SubElement(complex_type, _x("sequence"))
        for spec in model.fields:
            self._field(sequence, spec)

    def _enum(self, schema: Any, enum: EnumType) -> None:
        simple = etree.SubElement(schema, _x("simpleType"), name=enum.name)
        self._annotation(simple, enum.description)
        base = "xsd:long" if enum.value_kind == "int" else "xsd:string"
        restriction = etree.SubElement(simple, _x("restriction"), base=base)
        for _, value in enum.members:
            etree.SubElement(restriction, _x("enumeration"), value=_clean(str(value)))

    def _wrapper(self, schema: Any, name: str, fields: Sequence[FieldSpec]) -> None:
        element = etree.SubElement(schema, _x("element"), name=name)
        sequence = etree.SubElement(etree.SubElement(element, _x("complexType")), _x("sequence"))
        for spec in fields:
            self._field(sequence, spec)

    def _fault_element(self, schema: Any) -> None:
        element = etree.SubElement(schema, _x("element"), name=FAULT_DETAIL)
        self._annotation(
            element,
            "The detail of every fault: the protocol-neutral error code (NOT_FOUND, "
            "INVALID_ARGUMENT, …), the request id of an internal error, when to retry, "
            "and one entry per invalid field.",
        )
        sequence = etree.SubElement(etree.SubElement(element, _x("complexType")), _x("sequence"))
        etree.SubElement(sequence, _x("element"), name="code", type="xsd:string")
        for name, kind in (("request_id", "xsd:string"), ("retry_after", "xsd:double")):
            etree.SubElement(sequence, _x("element"), name=name, type=kind, minOccurs="0")
        errors = etree.SubElement(sequence, _x("element"), name="errors", minOccurs="0")
        error = etree.SubElement(
            etree.SubElement(etree.SubElement(errors, _x("complexType")), _x("sequence")),
            _x("element"),
            name="error",
            minOccurs="0",
            maxOccurs="unbounded",
        )
        inner = etree.SubElement(etree.SubElement(error, _x("complexType")), _x("sequence"))
        for name in ("field", "message", "type"):
            etree.SubElement(inner, _x("element"), name=name, type="xsd:string", minOccurs="0")

    # -- fields and types ---------------------------------------------------------------------

    def _field(self, sequence: Any, spec: FieldSpec) -> None:
        element = etree.SubElement(sequence, _x("element"), name=spec.wire_name)
        text = spec.description
        if spec.default is not MISSING and spec.default is not None and spec.default != []:
            default = orjson.dumps(spec.default).decode()
            text = f"{text} (default: {default})" if text else f"Default: {default}"
        self._annotation(element, text)
        node = spec.type
        if field_is_bare(spec) and isinstance(node, ListOf):
            bounds = node.constraints
            element.set("minOccurs", str(bounds.min_length or 0) if spec.required else "0")
            element.set(
                "maxOccurs",
                str(bounds.max_length) if bounds.max_length is not None else "unbounded",
            )
            inner, nullable = unwrap_nullable(node.item)
        else:
            inner, nullable = unwrap_nullable(node)
            if nullable or not spec.required:
                element.set("minOccurs", "0")
        if nullable:
            element.set("nillable", "true")
        self._type(element, inner)

    def _type(self, element: Any, node: TypeNode) -> None:
        """Give ``element`` the type of ``node``: a reference or an anonymous type."""
        if isinstance(node, Scalar):
            self._scalar(element, node)
        elif isinstance(node, EnumRef | ModelRef):
            element.set("type", f"tns:{node.name}")
        elif isinstance(node, LiteralOf):
            simple = etree.SubElement(element, _x("simpleType"))
            values = node.values
            if all(isinstance(v, bool) for v in values):
                base = "xsd:boolean"
            elif all(isinstance(v, int) and not isinstance(v, bool) for v in values):
                base = "xsd:long"
            else:
                base = "xsd:string"
            restriction = etree.SubElement(simple, _x("restriction"), base=base)
            for value in values:
                text = ("true" if value else "false") if isinstance(value, bool) else str(value)
                etree.SubElement(restriction, _x("enumeration"), value=_clean(text))
        elif isinstance(node, ListOf):
            sequence = etree.SubElement(
                etree.SubElement(element, _x("complexType")), _x("sequence")
            )
            self._field(sequence, FieldSpec(ITEM, ITEM, node, True))
        elif isinstance(node, DictOf):
            sequence = etree.SubElement(
                etree.SubElement(element, _x("complexType")), _x("sequence")
            )
            entry = etree.SubElement(
                sequence, _x("element"), name=ENTRY, minOccurs="0", maxOccurs="unbounded"
            )
            pair = etree.SubElement(etree.SubElement(entry, _x("complexType")), _x("sequence"))
            self._field(pair, FieldSpec(KEY, KEY, node.key, True))
            self._field(pair, FieldSpec(VALUE, VALUE, node.value, True))
        elif isinstance(node, UnionOf):
            choice = etree.SubElement(etree.SubElement(element, _x("complexType")), _x("choice"))
            for name, variant in zip(variant_names(node), node.variants, strict=True):
                self._type(etree.SubElement(choice, _x("element"), name=name), variant)
        elif isinstance(node, Nullable):
            self._type(element, node.inner)

    def _scalar(self, element: Any, node: Scalar) -> None:
        base = f"xsd:{XSD_SCALARS[node.kind]}"
        facets, notes = _facets(node.kind, node.constraints)
        if node.kind == "uuid":
            facets.insert(0, ("pattern", UUID_PATTERN))
        if node.kind == "any":
            notes.insert(0, "JSON text: any JSON value, written as a string")
        if not facets and not notes:
            element.set("type", base)
            return
        simple = etree.SubElement(element, _x("simpleType"))
        self._annotation(simple, "; ".join(notes) or None)
        restriction = etree.SubElement(simple, _x("restriction"), base=base)
        for facet, value in facets:
            etree.SubElement(restriction, _x(facet), value=_clean(value))


_BOUNDS = (
    ("ge", "minInclusive"),
    ("gt", "minExclusive"),
    ("le", "maxInclusive"),
    ("lt", "maxExclusive"),
)


def _facets(kind: str, constraints: Constraints) -> tuple[list[tuple[str, str]], list[str]]:
    """XSD facets for a scalar's constraints, and notes for what XSD cannot say."""
    facets: list[tuple[str, str]] = []
    notes: list[str] = []
    if not constraints:
        return facets, notes
    for attr, facet in _BOUNDS:
        value = getattr(constraints, attr)
        if value is None:
            continue
        text = _bound_text(kind, attr, value)
        if text is None:
            notes.append(f"{attr} {value}")
        else:
            facets.append((facet, text))
    if constraints.multiple_of is not None:
        notes.append(f"a multiple of {constraints.multiple_of}")
    if kind in ("str", "bytes"):
        if constraints.min_length is not None:
            facets.append(("minLength", str(constraints.min_length)))
        if constraints.max_length is not None:
            facets.append(("maxLength", str(constraints.max_length)))
    if constraints.pattern is not None:
        translated = xsd_pattern(constraints.pattern)
        if translated is None or kind != "str":
            notes.append(f"matches the regular expression {constraints.pattern}")
        else:
            facets.append(("pattern", translated))
    return facets, notes


def _bound_text(kind: str, attr: str, value: Any) -> str | None:
    if kind == "int" and isinstance(value, int | float | Decimal):
        if value != value or value in (math.inf, -math.inf):  # NaN or infinite
            return None
        if value == int(value):
            return str(int(value))
        rounded = math.ceil(value) if attr in ("ge", "lt") else math.floor(value)
        return str(rounded)
    if kind == "float" and isinstance(value, int | float | Decimal):
        double = float(value)
        return repr(double) if math.isfinite(double) else None
    if kind == "decimal" and isinstance(value, int | float | Decimal):
        decimal = Decimal(str(value))
        return format(decimal, "f") if decimal.is_finite() else None
    if kind in ("datetime", "date", "time") and hasattr(value, "isoformat"):
        return str(value.isoformat())
    return None


def _operation_text(method: MethodSpec) -> str:
    parts = [p for p in (method.summary, method.description) if p]
    if method.public:
        parts.append("Public: no credentials needed.")
    elif method.scopes:
        parts.append(f"Needs the scopes: {' '.join(sorted(method.scopes))}.")
    return "\n\n".join(parts)

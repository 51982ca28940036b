"""SOAP 1.1, document/literal wrapped: every unary method as an operation at ``/soap``.

POST /soap         a SOAP 1.1 envelope (text/xml); the body's element names the operation
GET  /soap?wsdl    the WSDL 1.1 with its XSD schema, generated from the type graph

Everything per operation — its reader, its writer, the bytes that frame its
response — is made once at start-up; a call parses the envelope (hardened,
see :mod:`polyport.xmlsafe`), reads the arguments, runs the dispatch
pipeline and joins strings. Streaming methods are not served over SOAP.
"""

from __future__ import annotations

from typing import Any

from polyport.core.errors import (
    ContractError,
    InvalidArgument,
    MissingExtra,
    NotFound,
    ServiceError,
)

try:  # lxml comes with the 'soap' extra
    import lxml  # noqa: F401  (the parser of polyport.xmlsafe and of the WSDL writer)
except ImportError as exc:
    raise MissingExtra("soap", "the SOAP edge") from exc

from polyport import xmlsafe
from polyport.core.contract import MethodKind
from polyport.core.dispatch import Binding, PageResult, internal_error
from polyport.core.runtime import Endpoint as CatalogEntry
from polyport.core.runtime import Runtime
from polyport.core.spec import MethodSpec
from polyport.edges.kinds import HttpEdge
from polyport.edges.soap.codec import Codec, DecodeError, Sequence, XmlUnrepresentable
from polyport.edges.soap.envelope import CLOSE, OPEN, read_envelope
from polyport.edges.soap.errors import (
    UnsupportedMediaType,
    fault_body,
    http_status_of,
)
from polyport.edges.soap.mapping import (
    FAULT_DETAIL,
    ITEMS,
    NEXT_CURSOR,
    RESULT,
    namespace,
    operation_name,
    response_fields,
    soap_action,
)
from polyport.edges.soap.wsdl import ADDRESS_PLACEHOLDER, OperationInfo, WsdlWriter
from polyport.http.openapi import OpenApiDocument
from polyport.http.request import Request, Response
from polyport.http.router import Route
from polyport.xmlsafe import XmlConfig

EDGE = "soap"
PATH = "/soap"
TEXT_XML = b"text/xml; charset=utf-8"
_XML_MEDIA = (b"text/xml", b"application/xml")


class SoapOperation:
    """One method as an operation: its names, its reader, its writer, its response frame."""

    __slots__ = ("action", "binding", "empty", "head", "name", "params", "result", "tail")

    def __init__(self, method: MethodSpec, binding: Binding, codec: Codec) -> None:
        self.name = name = operation_name(method.name)
        self.action = soap_action(codec.tns, name)
        self.binding = binding
        self.params: Sequence = codec.sequence(method.params)
        fields = response_fields(method)
        self.result: Sequence | None = codec.sequence(fields) if fields else None
        self.head = f'{OPEN}<{name}Response xmlns="{codec.tns}">'
        self.tail = f"</{name}Response>{CLOSE}"
        self.empty = f'{OPEN}<{name}Response xmlns="{codec.tns}"/>{CLOSE}'.encode()

    def encode(self, result: Any) -> bytes:
        """The response envelope for what the handler returned."""
        writer = self.result
        if writer is None:
            return self.empty
        dump = self.binding.dump_python
        if isinstance(result, PageResult):
            values = {ITEMS: dump(result.items, mode="python"), NEXT_CURSOR: result.next_cursor}
        else:
            values = {RESULT: dump(result, mode="python")}
        out = [self.head]
        writer.write(values, out)
        out.append(self.tail)
        return "".join(out).encode()


class SoapEdge(HttpEdge):
    """Serves the contract's unary methods as SOAP 1.1 operations, with their WSDL."""

    name = EDGE

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.dispatcher = runtime.dispatcher
        spec = runtime.spec
        self.tns = tns = namespace(spec.name, spec.version)
        self.codec = codec = Codec(spec.graph, tns)
        limits = runtime.settings.section(XmlConfig)
        self.max_depth = limits.max_depth
        self.max_elements = limits.max_elements
        self.operations: dict[str, SoapOperation] = {}
        self.methods: dict[str, SoapOperation] = {}
        elements = {FAULT_DETAIL: "the fault detail"}
        infos = []
        for method in spec.methods.values():
            if method.kind is not MethodKind.UNARY:
                continue
            op = SoapOperation(method, self.dispatcher.bindings[method.name], codec)
            for element in (op.name, f"{op.name}Response"):
                if element in elements:
                    raise ContractError(
                        f"SOAP: method {method.name} would be the element {element}, "
                        f"which is already {elements[element]}; rename one of them"
                    )
                elements[element] = f"method {method.name}'s"
            self.operations[op.name] = self.operations[f"{{{tns}}}{op.name}"] = op
            self.methods[method.name] = op
            infos.append(OperationInfo(op.name, op.action, method))
        document = WsdlWriter(spec, tns, infos).build()
        self._wsdl_head, _, self._wsdl_tail = document.partition(ADDRESS_PLACEHOLDER.encode())
        settings = runtime.settings
        self._default_host = f"{settings.host}:{settings.port}"

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    # -- routes ---------------------------------------------------------------------------

    def routes(self) -> list[Route]:
        return [Route("POST", PATH, self.call, "soap"), Route("GET", PATH, self.wsdl, "wsdl")]

    def describe(self, doc: OpenApiDocument) -> None:
        """Nothing: SOAP's operations are described by the WSDL at ``/soap?wsdl``."""

    def catalog(self) -> list[CatalogEntry]:
        entries = [
            CatalogEntry("SOAP", method, "method", f"POST {PATH} {op.name}")
            for method, op in self.methods.items()
        ]
        entries.append(CatalogEntry("SOAP", "WSDL", "document", f"GET {PATH}?wsdl"))
        return entries

    def wsdl_document(self, address: str) -> bytes:
        """The WSDL, its ``soap:address`` set to ``address``."""
        return self._wsdl_head + _attribute(address).encode() + self._wsdl_tail

    # -- endpoints --------------------------------------------------------------------------

    async def wsdl(self, request: Request) -> Response:
        if not any(key.lower() == "wsdl" for key in request.query):
            raise NotFound(f"GET {PATH}?wsdl is the WSDL; SOAP calls are POSTed to {PATH}")
        host = request.host(self._default_host)
        return Response(
            200,
            self.wsdl_document(f"{request.scheme}://{host}{PATH}"),
            content_type=TEXT_XML,
            headers=[(b"cache-control", b"no-cache")],
        )

    async def call(self, request: Request) -> Response:
        try:
            return await self._call(request)
        except ServiceError as exc:
            return self.fault(exc)
        except XmlUnrepresentable as exc:
            return self.fault(internal_error("SOAP: a result cannot be written as XML", exc))
        except Exception as exc:
            return self.fault(internal_error("SOAP: the call failed", exc))

    async def _call(self, request: Request) -> Response:
        content_type = request.headers.get(b"content-type")
        if content_type is not None:
            media = content_type.split(b";", 1)[0].strip().lower()
            if media not in _XML_MEDIA:
                raise UnsupportedMediaType(_media_message(media))
        root = xmlsafe.parse(
            await request.body(), max_depth=self.max_depth, max_elements=self.max_elements
        )
        envelope = read_envelope(root)
        element = envelope.request
        op = self.operations.get(element.tag)
        if op is None:
            raise NotFound(
                f"no operation {str(element.tag)[:200]!r} in {self.tns}; GET {PATH}?wsdl lists them"
            )
        action = request.headers.get(b"soapaction")
        if action is not None:
            _check_action(action, op)
        caller = request.caller(EDGE)
        if envelope.credentials is not None:
            caller.credentials = envelope.credentials
        binding = op.binding
        try:
            args = op.params.read(element)
        except DecodeError as exc:
            # Who may call comes before what the arguments should look like.
            self.dispatcher.admit(binding.public, binding.scopes, caller)
            raise exc.as_invalid() from None
        result = await self.dispatcher.call(binding, args, caller)
        return Response(200, op.encode(result), content_type=TEXT_XML)

    def fault(self, error: ServiceError) -> Response:
        headers = []
        if error.retry_after is not None:
            headers.append((b"retry-after", str(max(1, round(error.retry_after))).encode()))
        return Response(
            http_status_of(error),
            fault_body(error, self.tns),
            content_type=TEXT_XML,
            headers=headers,
        )


def _check_action(raw: bytes, op: SoapOperation) -> None:
    action = raw.decode("latin-1").strip().strip('"')
    if action and action not in (op.action, op.name):
        raise InvalidArgument(
            f"SOAPAction {action[:200]!r} does not match the operation {op.name} "
            f"(send {op.action!r}, or an empty SOAPAction)"
        )


def _media_message(media: bytes) -> str:
    if media == b"application/soap+xml":
        return "SOAP 1.2 (application/soap+xml) is not served: send SOAP 1.1 as text/xml"
    return f"send the SOAP envelope as text/xml, not {media.decode('latin-1')[:80]!r}"


def _attribute(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace('"', "&quot;")

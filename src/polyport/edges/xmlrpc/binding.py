"""XML-RPC at ``POST /xmlrpc``, with ``system.listMethods``, ``methodHelp``, ``methodSignature``.

Method names are ``{service}.{method}``; the bare name and its camelCase form
are accepted too. Parameters are positional, in the order of the method's
parameters — or, since XML-RPC has no keyword arguments, one ``struct`` whose
keys are the parameter names (``server.createUser({"name": …, "email": …})``).
"""

from __future__ import annotations

from typing import Any

from polyport.core.errors import InvalidArgument, MissingExtra, ServiceError

try:  # lxml comes with the 'rpc' extra
    import lxml  # noqa: F401  (the parser of polyport.xmlsafe)
except ImportError as exc:
    raise MissingExtra("rpc", "the XML-RPC edge") from exc

from polyport.core.contract import MethodKind
from polyport.core.dispatch import Binding, PageResult
from polyport.core.runtime import Endpoint as CatalogEntry
from polyport.core.runtime import Runtime
from polyport.core.types import (
    DictOf,
    ListOf,
    ModelRef,
    Nullable,
    Scalar,
    TypeNode,
    UnitType,
)
from polyport.edges.kinds import HttpEdge
from polyport.edges.xmlrpc.codec import parse_call, write_fault, write_response
from polyport.edges.xmlrpc.errors import fault
from polyport.http.openapi import OpenApiDocument
from polyport.http.request import Request, Response
from polyport.http.router import Route
from polyport.rpccodes import INTERNAL_ERROR, MethodNotFound
from polyport.xmlsafe import XmlConfig, parse

EDGE = "xmlrpc"
PATH = "/xmlrpc"
XML = b"text/xml; charset=utf-8"

_XML_TYPES = {
    "int": "int",
    "float": "double",
    "bool": "boolean",
    "str": "string",
    "bytes": "base64",
    "datetime": "dateTime.iso8601",
    "date": "string",
    "time": "string",
    "uuid": "string",
    "decimal": "string",
    "any": "string",
}


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def xml_type(node: TypeNode) -> str:
    """The XML-RPC type name of a node, for ``system.methodSignature``."""
    if isinstance(node, Nullable):
        return xml_type(node.inner)
    if isinstance(node, Scalar):
        return _XML_TYPES[node.kind]
    if isinstance(node, ModelRef | DictOf):
        return "struct"
    if isinstance(node, ListOf):
        return "array"
    if isinstance(node, UnitType):
        return "nil"
    return "string"  # enums, literals, unions


class XmlRpcEdge(HttpEdge):
    """Serves every unary method over XML-RPC."""

    name = EDGE

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.dispatcher = runtime.dispatcher
        self.limits = runtime.settings.section(XmlConfig)
        service = runtime.spec.name
        self.service = service
        self.methods: dict[str, Binding] = {}
        for name, binding in self.dispatcher.bindings.items():
            if binding.kind is not MethodKind.UNARY:
                continue
            for alias in (f"{service}.{name}", name, camel(name), f"{service}.{camel(name)}"):
                self.methods.setdefault(alias, binding)
        self.system = {
            "system.listMethods": self._list_methods,
            "system.methodHelp": self._method_help,
            "system.methodSignature": self._method_signature,
        }

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def routes(self) -> list[Route]:
        return [Route("POST", PATH, self.post, "xmlrpc")]

    def describe(self, doc: OpenApiDocument) -> None:
        """Nothing: XML-RPC lists its own methods (``system.listMethods``)."""

    def catalog(self) -> list[CatalogEntry]:
        entries = [
            CatalogEntry("XML-RPC", "introspection", "document", f"POST {PATH} system.listMethods")
        ]
        for name, binding in self.dispatcher.bindings.items():
            if binding.kind is MethodKind.UNARY:
                entries.append(
                    CatalogEntry("XML-RPC", name, "method", f"POST {PATH} {self.service}.{name}")
                )
        return entries

    async def post(self, request: Request) -> Response:
        try:
            caller = request.caller(EDGE)
            root = parse(
                await request.body(),
                max_depth=self.limits.max_depth,
                max_elements=self.limits.max_elements,
            )
            method, params = parse_call(root)
            result = self._answer(method, params)
            if result is None:
                binding = self._binding(method)
                value = await self.dispatcher.call(binding, self._named(binding, params), caller)
                result = self._plain(binding, value)
            body = write_response(result)
        except ServiceError as exc:
            body = fault(exc)
        except (TypeError, ValueError) as exc:  # a result XML-RPC cannot carry
            body = write_fault(INTERNAL_ERROR, f"INTERNAL: cannot encode the result: {exc}")
        # XML-RPC answers 200 even for faults: the fault is in the body.
        return Response(200, body, content_type=XML)

    def _binding(self, method: str) -> Binding:
        binding = self.methods.get(method)
        if binding is None:
            raise MethodNotFound(f"no method named {method[:100]!r}")
        return binding

    def _named(self, binding: Binding, params: list[Any]) -> dict[str, Any]:
        names = [p.name for p in binding.spec.params]
        if len(params) == 1 and self._is_keywords(binding, params[0], names):
            return params[0]  # type: ignore[no-any-return]
        if len(params) > len(names):
            raise InvalidArgument(f"{binding.name} takes at most {len(names)} parameters")
        return dict(zip(names, params, strict=False))

    def _is_keywords(self, binding: Binding, value: Any, names: list[str]) -> bool:
        """Whether one struct holds named arguments rather than the first argument.

        It does when its keys are parameter names — unless the only parameter is
        itself a struct (a model or a dict) that those keys could equally fill.
        """
        if not isinstance(value, dict) or not value or not set(value) <= set(names):
            return False
        if len(names) != 1:
            return True
        node = binding.spec.params[0].type
        if isinstance(node, ModelRef):
            fields = {f.wire_name for f in self.runtime.spec.graph.model(node.name).fields}
            return not set(value) <= fields
        if isinstance(node, DictOf):
            return isinstance(value[names[0]], dict)
        return True

    @staticmethod
    def _plain(binding: Binding, value: Any) -> Any:
        if isinstance(value, PageResult):
            return {
                "items": binding.dump_python(value.items, mode="python"),
                "next_cursor": value.next_cursor,
            }
        return binding.dump_python(value, mode="python")

    # -- introspection ------------------------------------------------------------------

    def _answer(self, method: str, params: list[Any]) -> Any:
        handler = self.system.get(method)
        return None if handler is None else handler(params)

    def _list_methods(self, params: list[Any]) -> list[str]:
        names = [
            f"{self.service}.{n}"
            for n, b in self.dispatcher.bindings.items()
            if b.kind is MethodKind.UNARY
        ]
        return sorted(names) + sorted(self.system)

    def _method_help(self, params: list[Any]) -> str:
        binding = self._binding(self._one_name(params))
        spec = binding.spec
        return "\n\n".join(part for part in (spec.summary, spec.description) if part)

    def _method_signature(self, params: list[Any]) -> list[list[str]]:
        spec = self._binding(self._one_name(params)).spec
        return [[xml_type(spec.returns), *(xml_type(p.type) for p in spec.params)]]

    @staticmethod
    def _one_name(params: list[Any]) -> str:
        if len(params) != 1 or not isinstance(params[0], str):
            raise InvalidArgument("give one method name")
        return params[0]

"""The OpenRPC document of a service, written from the type graph."""

from __future__ import annotations

from typing import Any

from polyport._version import __version__
from polyport.core.contract import MethodKind
from polyport.core.jsonschema import JsonSchemas
from polyport.core.spec import ServiceSpec
from polyport.core.types import MISSING
from polyport.rpccodes import CODES, INVALID_REQUEST, PARSE_ERROR


def openrpc_document(spec: ServiceSpec) -> dict[str, Any]:
    """OpenRPC 1.3: every unary method as ``{service}.{method}``, schemas shared."""
    schemas = JsonSchemas(spec.graph, "#/components/schemas/")
    methods = []
    errors = [
        {"code": PARSE_ERROR, "message": "Parse error"},
        {"code": INVALID_REQUEST, "message": "Invalid Request"},
    ]
    for cls, code in CODES:  # each code once, under the first error of the table that has it
        if all(error["code"] != code for error in errors):
            errors.append({"code": code, "message": cls.default_message})
    for method in spec.methods.values():
        if method.kind is not MethodKind.UNARY:
            continue
        params = []
        for param in method.params:
            schema = schemas.schema(param.type)
            if param.default is not MISSING:
                schema = {**schema, "default": param.default}
            entry: dict[str, Any] = {
                "name": param.wire_name,
                "required": param.required,
                "schema": schema,
            }
            if param.description:
                entry["description"] = param.description
            params.append(entry)
        result_schema = schemas.schema(method.returns)
        if method.paged:
            result_schema = {
                "type": "object",
                "properties": {
                    "items": result_schema,
                    "next_cursor": {"anyOf": [{"type": "string"}, {"type": "null"}]},
                },
                "required": ["items", "next_cursor"],
            }
        item: dict[str, Any] = {
            "name": f"{spec.name}.{method.name}",
            "params": params,
            "paramStructure": "either",
            "result": {"name": "result", "schema": result_schema},
            "errors": errors,
        }
        if method.summary:
            item["summary"] = method.summary
        if method.description:
            item["description"] = method.description
        methods.append(item)
    info: dict[str, Any] = {
        "title": f"{spec.name} JSON-RPC API",
        "version": str(spec.version),
        "x-polyport-version": __version__,
    }
    if spec.service.description:
        info["description"] = spec.service.description
    return {
        "openrpc": "1.3.2",
        "info": info,
        "servers": [{"name": "HTTP", "url": "/jsonrpc"}],
        "methods": methods,
        "components": {"schemas": schemas.definitions()},
    }

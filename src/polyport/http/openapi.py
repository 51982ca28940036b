"""The OpenAPI 3.1 document of a node's HTTP API, written from the type graph.

Each HTTP edge describes its own operations into one :class:`OpenApiDocument`
(``edge.describe(document)``); schemas come from
:class:`~polyport.core.jsonschema.JsonSchemas`, so they match what every other
generated document says about the same types.
"""

from __future__ import annotations

from typing import Any

from polyport._version import __version__
from polyport.core.events import (
    CURSOR_EXPRESSION,
    MAX_CHANNEL_LENGTH,
    MAX_PATTERNS,
    PATTERN_EXPRESSION,
)
from polyport.core.jsonschema import JsonSchemas
from polyport.core.spec import MethodSpec, ServiceSpec
from polyport.core.types import MISSING, FieldSpec, unwrap_nullable
from polyport.http.problems import PROBLEM_STATUSES

PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "Problem",
    "description": "An RFC 9457 problem document.",
    "properties": {
        "type": {"type": "string", "format": "uri-reference"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "code": {"type": "string", "description": "The protocol-neutral error code."},
        "instance": {"type": "string"},
        "request_id": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "field": {"type": "string"},
                    "message": {"type": "string"},
                    "type": {"type": "string"},
                },
            },
        },
        "earliest": {"type": ["string", "null"]},
        "latest": {"type": ["string", "null"]},
    },
    "required": ["type", "title", "status", "code"],
}

#: The problems any call may answer with, besides its own.
COMMON_PROBLEMS = (401, 403, 404, 409, 422, 429, 500, 503, 504)

#: What the HTTP server answers by itself, before any route sees the request: a
#: request-target over ``limits.max_url``, headers over their limits. Its body
#: is a bare ``{status, detail}`` (RFC 9457's members, without the route's).
SERVER_PROBLEMS = {414: "URI Too Long", 431: "Request Header Fields Too Large"}
SERVER_PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "ServerProblem",
    "description": "A refusal by the HTTP server itself, before any route.",
    "properties": {"status": {"type": "integer"}, "detail": {"type": "string"}},
    "required": ["status", "detail"],
}


class OpenApiDocument:
    """An OpenAPI 3.1 document under construction."""

    def __init__(self, spec: ServiceSpec, *, auth_optional: bool) -> None:
        self.spec = spec
        self.schemas = JsonSchemas(spec.graph, "#/components/schemas/")
        self.auth_optional = auth_optional
        self.paths: dict[str, dict[str, Any]] = {}
        self.extra_schemas: dict[str, Any] = {
            "Problem": PROBLEM_SCHEMA,
            "ServerProblem": SERVER_PROBLEM_SCHEMA,
        }
        self.tags: dict[str, str | None] = {}

    # -- building blocks used by edges ----------------------------------------------

    def add(self, path: str, verb: str, operation: dict[str, Any]) -> None:
        item = self.paths.setdefault(path, {})
        if verb in item:
            raise ValueError(f"OpenAPI: {verb.upper()} {path} described twice")
        item[verb] = operation

    def tag(self, name: str, description: str | None = None) -> str:
        self.tags.setdefault(name, description)
        return name

    def security(self, public: bool) -> list[dict[str, list[str]]]:
        schemes: list[dict[str, list[str]]] = [{"bearer": []}, {"apiKey": []}]
        if public or self.auth_optional:
            schemes.append({})
        return schemes

    def problems(self, *statuses: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for status in sorted({*statuses, *COMMON_PROBLEMS}):
            out[str(status)] = {
                "description": PROBLEM_STATUSES.get(status, "Error"),
                "content": {"application/problem+json": {"schema": self.schemas.ref("Problem")}},
            }
            if status in (429, 503):
                out[str(status)]["headers"] = {"Retry-After": {"schema": {"type": "integer"}}}
            if status == 401:
                out[str(status)]["headers"] = {"WWW-Authenticate": {"schema": {"type": "string"}}}
        either = {"anyOf": [self.schemas.ref("Problem"), self.schemas.ref("ServerProblem")]}
        for status, title in SERVER_PROBLEMS.items():
            out[str(status)] = {
                "description": title,
                "content": {"application/problem+json": {"schema": either}},
            }
        return out

    def json_content(self, schema: dict[str, Any]) -> dict[str, Any]:
        return {"application/json": {"schema": schema}}

    def parameter(self, field: FieldSpec, where: str) -> dict[str, Any]:
        """A query or path parameter: its value as text, read as the scalar it declares.

        Null has no text form (``?x=null`` is the string "null"), so a nullable
        parameter is described by its inner type: leaving it out means null, or
        its default. See :meth:`~polyport.core.dispatch.Binding.from_text`.
        """
        inner, _ = unwrap_nullable(field.type)
        schema = self.schemas.schema(inner)
        if field.default is not MISSING and field.default is not None:
            schema = {**schema, "default": field.default}
        parameter: dict[str, Any] = {
            "name": field.wire_name,
            "in": where,
            "required": where == "path" or field.required,
            "schema": schema,
        }
        if field.description:
            parameter["description"] = field.description
        return parameter

    def channel_parameter(self) -> dict[str, Any]:
        """``?channel=`` of the event readers: repeatable channels or wildcard patterns.

        The expression is :meth:`Pattern.parse`'s own, and the count is
        :func:`parse_patterns`' (as given, repeats included).
        """
        return {
            "name": "channel",
            "in": "query",
            "required": True,
            "style": "form",
            "explode": True,
            "description": "Channels or patterns (+ one segment, # the rest); repeatable",
            "schema": {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_PATTERNS,
                "items": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": MAX_CHANNEL_LENGTH,
                    "pattern": PATTERN_EXPRESSION,
                },
            },
        }

    @staticmethod
    def cursor_parameter(
        name: str, description: str, *, where: str = "query", empty: bool = False
    ) -> dict[str, Any]:
        """A resume cursor (event id, position, ``now``, ``earliest``) as :class:`Cursor` reads it.

        ``empty``: the reader takes an empty value as "not given".
        """
        pattern = CURSOR_EXPRESSION.replace("^(?:", "^(?:|", 1) if empty else CURSOR_EXPRESSION
        return {
            "name": name,
            "in": where,
            "required": False,
            "description": description,
            "schema": {"type": "string", "pattern": pattern},
        }

    def body_schema(self, fields: list[FieldSpec] | tuple[FieldSpec, ...]) -> dict[str, Any]:
        """The JSON object schema of a call's arguments."""
        properties: dict[str, Any] = {}
        required: list[str] = []
        for field in fields:
            schema = self.schemas.schema(field.type)
            if field.description:
                schema = (
                    {**schema, "description": field.description}
                    if "$ref" not in schema
                    else {"allOf": [schema], "description": field.description}
                )
            if field.default is not MISSING:
                schema = {**schema, "default": field.default}
            properties[field.wire_name] = schema
            if field.required:
                required.append(field.wire_name)
        out: dict[str, Any] = {
            "type": "object",
            "properties": properties,
            "additionalProperties": False,
        }
        if required:
            out["required"] = required
        return out

    def describe_method(self, method: MethodSpec, **operation: Any) -> dict[str, Any]:
        """Common operation members: id, summary, description, security."""
        out: dict[str, Any] = {"operationId": method.name}
        if method.summary:
            out["summary"] = method.summary
        if method.description:
            out["description"] = method.description
        out["security"] = self.security(method.public)
        out.update(operation)
        return out

    # -- the document -----------------------------------------------------------------

    def build(self) -> dict[str, Any]:
        service = self.spec.service
        schemas = self.schemas.definitions()
        schemas.update(self.extra_schemas)
        info: dict[str, Any] = {
            "title": f"{service.name} API",
            "version": f"{service.version}",
            "x-polyport-version": __version__,
        }
        if service.description:
            info["description"] = service.description
        return {
            "openapi": "3.1.0",
            "info": info,
            "jsonSchemaDialect": "https://spec.openapis.org/oas/3.1/dialect/base",
            "tags": [
                {"name": name, **({"description": d} if d else {})} for name, d in self.tags.items()
            ],
            "paths": dict(sorted(self.paths.items())),
            "components": {
                "schemas": schemas,
                "securitySchemes": {
                    "bearer": {
                        "type": "http",
                        "scheme": "bearer",
                        "bearerFormat": "JWT or API key",
                        "description": "A JWT (HS256/RS256) or an API key as a bearer token.",
                    },
                    "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                },
            },
        }

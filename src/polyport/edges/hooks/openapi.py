"""The webhook receivers in the OpenAPI document.

A receiver's body type is not part of the service's type graph (no other
pattern carries it), so its schema comes from Pydantic, its definitions
named ``hooks.{receiver}.{Model}`` so that they never collide with the graph's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from polyport.core.inbox import INBOX_STATUSES as STATUSES
from polyport.core.textforms import integer_pattern

if TYPE_CHECKING:
    from polyport.edges.hooks.binding import HooksEdge
    from polyport.edges.hooks.handler import ReceiverHandler
    from polyport.http.openapi import OpenApiDocument

SUMMARY: dict[str, Any] = {
    "type": "object",
    "title": "HookDelivery",
    "description": "One received webhook and where its processing stands.",
    "properties": {
        "id": {"type": "string", "description": "The sender's delivery id"},
        "receiver": {"type": "string"},
        "status": {"type": "string", "enum": list(STATUSES)},
        "event_type": {"type": ["string", "null"]},
        "signed_at": {"type": ["integer", "null"], "description": "Signed Unix time"},
        "received": {"type": "number", "description": "Unix time it was accepted"},
        "attempts": {"type": "integer", "minimum": 0},
        "next_attempt": {"type": ["number", "null"]},
        "finished": {"type": ["number", "null"]},
        "error": {"type": ["string", "null"], "description": "The last failure"},
    },
    "required": ["id", "receiver", "status", "received", "attempts"],
}


def _body_schema(handler: ReceiverHandler, doc: OpenApiDocument) -> dict[str, Any]:
    prefix = f"hooks.{handler.name}."
    schema = handler.adapter.json_schema(ref_template=f"#/components/schemas/{prefix}{{model}}")
    for name, definition in schema.pop("$defs", {}).items():
        doc.extra_schemas[prefix + name] = definition
    return schema


def _header_parameter(name: str, pattern: str | None) -> dict[str, Any]:
    """A signature header: required, of the verifier's own form, where it declares one."""
    if pattern is None:
        return {"name": name, "in": "header", "required": False, "schema": {"type": "string"}}
    schema = {"type": "string", "pattern": pattern}
    return {"name": name, "in": "header", "required": True, "schema": schema}


def describe(edge: HooksEdge, doc: OpenApiDocument) -> None:
    """Add each receiver's endpoint and its delivery log to the OpenAPI document."""
    if not edge.handlers:
        return
    doc.extra_schemas["HookDelivery"] = SUMMARY
    tag = doc.tag("webhook receivers", "Inbound webhooks: verified, deduplicated, queued")
    admin = doc.security(False)
    for name, handler in edge.handlers.items():
        verifier = handler.verifier
        headers = getattr(verifier, "headers", ())
        scheme = getattr(verifier, "scheme", "custom")
        base = f"/hooks/{name}"
        doc.add(
            base,
            "post",
            {
                "operationId": f"hook_{name}",
                "summary": handler.description or f"Receive {name} webhooks ({scheme})",
                "description": (
                    f"Signed with the {scheme} scheme. Answered 200 once stored, before "
                    "the handler runs; a repeated delivery id is answered 200 and not "
                    "processed again."
                ),
                "tags": [tag],
                "security": [{}],  # the signature is the credential
                "parameters": [
                    _header_parameter(h, getattr(verifier, "header_patterns", {}).get(h))
                    for h in headers
                ],
                "requestBody": {
                    "required": True,
                    "content": doc.json_content(_body_schema(handler, doc)),
                },
                "responses": {
                    "200": {
                        "description": "Stored (accepted) or already known (duplicate)",
                        "content": doc.json_content(
                            {
                                "type": "object",
                                "properties": {
                                    "id": {"type": "string"},
                                    "status": {"type": "string", "enum": ["accepted", "duplicate"]},
                                },
                                "required": ["id", "status"],
                            }
                        ),
                    },
                    **doc.problems(400, 401, 413, 415, 422),
                },
            },
        )
        listing = doc.json_content(
            {
                "type": "object",
                "properties": {
                    "receiver": {"type": "string"},
                    "counts": {
                        "type": "object",
                        "additionalProperties": {"type": "integer"},
                    },
                    "items": {"type": "array", "items": doc.schemas.ref("HookDelivery")},
                    "next_cursor": {"type": ["string", "null"]},
                },
                "required": ["receiver", "counts", "items", "next_cursor"],
            }
        )
        doc.add(
            f"{base}/deliveries",
            "get",
            {
                "operationId": f"hook_{name}_deliveries",
                "summary": f"The {name} receiver's deliveries, newest first (scope hooks:admin)",
                "tags": [tag],
                "security": admin,
                "parameters": [
                    {
                        "name": "status",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string", "enum": list(STATUSES)},
                    },
                    {
                        "name": "limit",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "integer", "minimum": 1, "maximum": 500, "default": 50},
                    },
                    {
                        "name": "before",
                        "in": "query",
                        "required": False,
                        "description": "The next_cursor of the previous page",
                        # What the listing reads: a row id, 1 to 2**63 - 1.
                        "schema": {"type": "string", "pattern": integer_pattern(1, 2**63 - 1)},
                    },
                ],
                "responses": {
                    "200": {"description": "Deliveries", "content": listing},
                    **doc.problems(),
                },
            },
        )
        one = doc.json_content(
            {
                "allOf": [doc.schemas.ref("HookDelivery")],
                "properties": {
                    "headers": {"type": "object", "additionalProperties": {"type": "string"}},
                    "body": {"description": "The body as received"},
                },
            }
        )
        id_param = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
        doc.add(
            f"{base}/deliveries/{{id}}",
            "get",
            {
                "operationId": f"hook_{name}_delivery",
                "summary": "One delivery with its headers and body (scope hooks:admin)",
                "tags": [tag],
                "security": admin,
                "parameters": [id_param],
                "responses": {
                    "200": {"description": "The delivery", "content": one},
                    **doc.problems(),
                },
            },
        )
        doc.add(
            f"{base}/deliveries/{{id}}/retry",
            "post",
            {
                "operationId": f"hook_{name}_retry",
                "summary": "Run a dead (or waiting) delivery again now (scope hooks:admin)",
                "tags": [tag],
                "security": admin,
                "parameters": [id_param],
                "responses": {
                    "202": {
                        "description": "Pending again",
                        "content": doc.json_content(doc.schemas.ref("HookDelivery")),
                    },
                    **doc.problems(),
                },
            },
        )

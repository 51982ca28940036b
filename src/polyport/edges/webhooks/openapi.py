"""The subscriptions API in the OpenAPI document, and the webhook itself as a ``webhooks`` entry.

OpenAPI 3.1 has a top-level ``webhooks`` map for requests the API *sends*;
the document builder has no slot for it, so the outgoing message is
described as the ``WebhookMessage`` schema and referenced from the test
operation, and the headers are listed in its description.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from polyport.edges.webhooks.api import LOG_CURSOR, MAX_UNIX_SECONDS, STATUSES
from polyport.edges.webhooks.endpoints import check_filter, compile_filters
from polyport.webhooks.signing import SECRET_PATTERN

if TYPE_CHECKING:
    from polyport.edges.webhooks.binding import WebhooksEdge
    from polyport.http.openapi import OpenApiDocument

_TIME = {"type": ["string", "null"], "format": "date-time"}
_MOMENT = {"type": "string", "format": "date-time"}
_UNIX_SECONDS = {"type": "number", "minimum": 0, "maximum": MAX_UNIX_SECONDS}
_FILTERS = {
    "type": "array",
    "maxItems": 100,
    "items": {"type": "string", "maxLength": 200},
    "description": (
        "Event types to deliver; + stands for one segment, * for one or more, a final # "
        "for any number (orders.+, *.created, orders.#). Empty: every event type. Each "
        "filter must match a known event type (422) the caller may read (403); only event "
        "types the owner may read are delivered."
    ),
}

#: Past this many, the filters are described by their syntax alone (and a 422 for one
#: that matches no event type is a refusal the document cannot foresee).
MAX_LISTED_FILTERS = 2000


def _filters_of(name: str) -> set[str]:
    """Every filter that matches the event type ``name``.

    The segments are split into consecutive groups, each written as itself,
    ``+`` or ``*`` (one segment) or ``*`` (several), and any tail may become a
    final ``#``: every filter that matches is one of these.
    """
    segments = name.split(".")
    found = {"#"}
    for cut in range(len(segments) + 1):  # segments[cut:] go to a final '#'
        head = segments[:cut]
        for sizes in _compositions(len(head)):
            choices, at = [], 0
            for size in sizes:
                group = head[at : at + size]
                choices.append([group[0], "+", "*"] if size == 1 else ["*"])
                at += size
            for combo in itertools.product(*choices):
                text = ".".join(combo)
                if text:
                    found.add(f"{text}.#")  # '#' also stands for no segment at all
                    if cut == len(segments):
                        found.add(text)
    return found


def _compositions(total: int) -> list[tuple[int, ...]]:
    if total == 0:
        return [()]
    return [
        (first, *rest) for first in range(1, total + 1) for rest in _compositions(total - first)
    ]


def _filters_schema(event_types: Iterable[str]) -> dict[str, Any]:
    """``event_types`` as the API takes it: an array of the filters that match some type.

    Exactly what ``check_filters`` accepts, listed (the check itself confirms each).
    """
    names = sorted(event_types)
    listed: set[str] = set()
    for name in names:
        listed |= _filters_of(name)
        if len(listed) > MAX_LISTED_FILTERS:
            return _FILTERS
    matcher = {f: compile_filters([f]) for f in listed}
    valid = sorted(
        f
        for f in listed
        if _checked(f) and any(matcher[f].match(n) for n in names)  # type: ignore[union-attr]
    )
    return {**_FILTERS, "items": {"type": "string", "enum": valid}}


def _checked(pattern: str) -> bool:
    try:
        check_filter(pattern)
    except ValueError:
        return False
    return True


SCHEMAS: dict[str, Any] = {
    "WebhookEndpoint": {
        "type": "object",
        "description": "A subscription: where to POST which event types, and its health.",
        "properties": {
            "id": {"type": "string"},
            "url": {"type": "string", "format": "uri"},
            "description": {"type": "string"},
            "event_types": _FILTERS,
            "enabled": {"type": "boolean"},
            "disabled_reason": {"type": ["string", "null"]},
            "disabled_at": _TIME,
            "failing_since": _TIME,
            "created": _TIME,
            "updated": _TIME,
            "previous_secret_expires": _TIME,
            "owner": {
                "type": ["string", "null"],
                "description": "The subject whose read rights bound what is delivered "
                "(who created the subscription or last changed its url or event_types)",
            },
            "secret": {
                "type": "string",
                "pattern": "^whsec_",
                "description": "Only in the answers to create and rotate",
            },
        },
        "required": ["id", "url", "description", "event_types", "enabled", "created"],
    },
    "WebhookDelivery": {
        "type": "object",
        "description": "One message owed to one endpoint, and how its last attempt went.",
        "properties": {
            "event_id": {"type": "string", "description": "Also the webhook-id header"},
            "endpoint_id": {"type": "string"},
            "type": {"type": "string"},
            "status": {"type": "string", "enum": list(STATUSES)},
            "attempts": {"type": "integer", "minimum": 0},
            "created": _TIME,
            "next_attempt": _TIME,
            "last_attempt": _TIME,
            "response_code": {"type": ["integer", "null"]},
            "latency_ms": {"type": ["number", "null"]},
            "response_body": {"type": ["string", "null"], "description": "Truncated"},
            "error": {"type": ["string", "null"]},
        },
        "required": ["event_id", "endpoint_id", "type", "status", "attempts"],
    },
    "WebhookMessage": {
        "type": "object",
        "description": (
            "The body POSTed to a subscriber, with the Standard Webhooks headers "
            "webhook-id (the event id, the same on every attempt), webhook-timestamp and "
            "webhook-signature (v1,<base64 HMAC-SHA256 of id.timestamp.body>, several "
            "space-separated during a secret rotation)."
        ),
        "properties": {
            "id": {"type": "string"},
            "type": {"type": "string"},
            "timestamp": {"type": "string", "format": "date-time"},
            "channel": {"type": "string"},
            "offset": {"type": "integer"},
            "epoch": {"type": "string"},
            "data": {},
        },
        "required": ["id", "type", "timestamp", "data"],
    },
}


def describe(edge: WebhooksEdge, doc: OpenApiDocument) -> None:
    """Add the subscriptions API to the OpenAPI document."""
    doc.extra_schemas.update(SCHEMAS)
    tag = doc.tag("webhooks", "Outbound webhooks: subscriptions and their delivery log")
    security = doc.security(False)
    p = edge.prefix
    endpoint = doc.json_content(doc.schemas.ref("WebhookEndpoint"))
    delivery = doc.json_content(doc.schemas.ref("WebhookDelivery"))
    id_param = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
    event_param = {"name": "event_id", "in": "path", "required": True, "schema": {"type": "string"}}

    def query(name: str, schema: dict[str, Any], description: str = "") -> dict[str, Any]:
        out = {"name": name, "in": "query", "required": False, "schema": schema}
        if description:
            out["description"] = description
        return out

    def body(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
        schema = {"type": "object", "additionalProperties": False, "properties": properties}
        if required:
            schema["required"] = required
        return {"required": bool(required), "content": doc.json_content(schema)}

    def op(
        path: str,
        verb: str,
        name: str,
        summary: str,
        responses: dict[str, Any],
        *,
        params: list[dict[str, Any]] | None = None,
        request: dict[str, Any] | None = None,
    ) -> None:
        operation: dict[str, Any] = {
            "operationId": name,
            "summary": summary + " (scope webhooks:admin)",
            "tags": [tag],
            "security": security,
            "responses": {**responses, **doc.problems(400, 415)},
        }
        if params:
            operation["parameters"] = params
        if request:
            operation["requestBody"] = request
        doc.add(path, verb, operation)

    fields = {
        "url": {"type": "string", "format": "uri", "maxLength": 2048},
        "event_types": _filters_schema(edge.rights.events),
        "description": {"type": "string", "maxLength": 1000},
    }
    # Null is read as absent wherever the request models say ``| None``.
    secret = {"type": ["string", "null"], "pattern": SECRET_PATTERN, "maxLength": 200}
    secret["description"] = "Generated when absent"
    op(
        p,
        "post",
        "webhooks_create",
        "Subscribe a URL to events; the secret is shown once",
        {"201": {"description": "Created", "content": endpoint}},
        request=body({**fields, "secret": secret, "enabled": {"type": "boolean"}}, ["url"]),
    )
    listing = doc.json_content(
        {
            "type": "object",
            "properties": {
                "items": {"type": "array", "items": doc.schemas.ref("WebhookEndpoint")},
                "next_cursor": {"type": ["string", "null"]},
            },
            "required": ["items", "next_cursor"],
        }
    )
    page = [
        query("limit", {"type": "integer", "minimum": 1, "maximum": 500, "default": 50}),
        query("cursor", {"type": "string"}, "The next_cursor of the previous page"),
    ]
    op(
        p,
        "get",
        "webhooks_list",
        "List subscriptions",
        {"200": {"description": "Subscriptions", "content": listing}},
        params=page,
    )
    one = f"{p}/{{id}}"
    op(
        one,
        "get",
        "webhooks_get",
        "One subscription",
        {"200": {"description": "The subscription", "content": endpoint}},
        params=[id_param],
    )
    op(
        one,
        "patch",
        "webhooks_update",
        "Change a subscription",
        {"200": {"description": "Changed", "content": endpoint}},
        params=[id_param],
        request=body(
            {
                name: {**schema, "type": [schema["type"], "null"]}
                for name, schema in {**fields, "enabled": {"type": "boolean"}}.items()
            }
        ),
    )
    op(
        one,
        "delete",
        "webhooks_delete",
        "Unsubscribe, forgetting the delivery log",
        {"204": {"description": "Deleted"}},
        params=[id_param],
    )
    op(
        f"{one}/rotate",
        "post",
        "webhooks_rotate",
        "New signing secret; the previous one keeps signing for webhooks.rotation_overlap",
        {"200": {"description": "Rotated; the new secret shown once", "content": endpoint}},
        params=[id_param],
        request=body({"secret": secret}),
    )
    for verb in ("enable", "disable"):
        op(
            f"{one}/{verb}",
            "post",
            f"webhooks_{verb}",
            f"{verb.capitalize()} delivery",
            {"200": {"description": "Done", "content": endpoint}},
            params=[id_param],
        )
    op(
        f"{one}/test",
        "post",
        "webhooks_test",
        "Send a webhooks.test message",
        {
            "202": {
                "description": "Queued",
                "content": doc.json_content(
                    {
                        "type": "object",
                        "properties": {
                            "event_id": {"type": "string"},
                            "type": {"const": "webhooks.test"},
                        },
                        "required": ["event_id", "type"],
                    }
                ),
            }
        },
        params=[id_param],
        request=body({"data": {"description": "The message's data"}}),
    )
    log_page = doc.json_content(
        {
            "type": "object",
            "properties": {
                "endpoint_id": {"type": "string"},
                "items": {"type": "array", "items": doc.schemas.ref("WebhookDelivery")},
                "next_cursor": {"type": ["string", "null"]},
            },
            "required": ["endpoint_id", "items", "next_cursor"],
        }
    )
    op(
        f"{one}/deliveries",
        "get",
        "webhooks_deliveries",
        "The delivery log, newest first",
        {"200": {"description": "Deliveries", "content": log_page}},
        params=[
            id_param,
            query("status", {"type": "string", "enum": list(STATUSES)}),
            page[0],
            query(
                "before",
                {"type": "string", "pattern": LOG_CURSOR},
                "The next_cursor of the previous page",
            ),
        ],
    )
    attempt = {
        "type": "object",
        "properties": {
            "attempt": {"type": "integer"},
            "time": _TIME,
            "response_code": {"type": ["integer", "null"]},
            "latency_ms": {"type": ["number", "null"]},
            "error": {"type": ["string", "null"]},
            "response_body": {"type": ["string", "null"]},
        },
    }
    op(
        f"{one}/deliveries/{{event_id}}",
        "get",
        "webhooks_delivery",
        "One delivery with every attempt",
        {
            "200": {
                "description": "The delivery",
                "content": doc.json_content(
                    {
                        "allOf": [doc.schemas.ref("WebhookDelivery")],
                        "properties": {"history": {"type": "array", "items": attempt}},
                    }
                ),
            }
        },
        params=[id_param, event_param],
    )
    op(
        f"{one}/deliveries/{{event_id}}/replay",
        "post",
        "webhooks_replay",
        "Attempt one delivery again now, as a fresh round of retries",
        {"202": {"description": "Pending again", "content": delivery}},
        params=[id_param, event_param],
    )
    op(
        f"{one}/recover",
        "post",
        "webhooks_recover",
        "Attempt again every failed delivery created since a time",
        {
            "202": {
                "description": "Requeued",
                "content": doc.json_content(
                    {
                        "type": "object",
                        "properties": {
                            "endpoint_id": {"type": "string"},
                            "recovered": {"type": "integer"},
                        },
                        "required": ["endpoint_id", "recovered"],
                    }
                ),
            }
        },
        params=[id_param],
        request=body(
            {
                # A time is RFC 3339 text or Unix seconds, as the request model reads it.
                "since": {"anyOf": [_MOMENT, _UNIX_SECONDS]},
                "until": {"anyOf": [_MOMENT, _UNIX_SECONDS, {"type": "null"}]},
            },
            ["since"],
        ),
    )
    doc.extra_schemas.setdefault("WebhookMessage", SCHEMAS["WebhookMessage"])

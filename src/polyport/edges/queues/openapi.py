"""The queues in the OpenAPI and AsyncAPI documents.

OpenAPI: one send operation per queue, and the admin routes. AsyncAPI: a
channel per queue, its message, and the operation of sending it over HTTP.
A queue's message schema is its model's, from the service's type graph (the
same definitions as every other pattern's).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from polyport.core.broker import NAME_PATTERN
from polyport.core.queuerunner import MAX_DELAY

if TYPE_CHECKING:
    from polyport.edges.queues.binding import QueuesEdge
    from polyport.http.asyncapi import AsyncApiDocument
    from polyport.http.openapi import OpenApiDocument

#: A message id or ordering key, as the broker port accepts it.
NAME_SCHEMA: dict[str, Any] = {
    "type": "string",
    "minLength": 1,
    "maxLength": 200,
    "pattern": NAME_PATTERN,
}
STATS: dict[str, Any] = {
    "waiting": {"type": "integer", "minimum": 0, "description": "Ready or delayed"},
    "in_flight": {"type": "integer", "minimum": 0, "description": "Received, not settled"},
    "dead": {"type": "integer", "minimum": 0, "description": "Dead letters"},
}
MESSAGE: dict[str, Any] = {
    "type": "object",
    "title": "QueuedMessage",
    "description": "A message of a queue, as a listing shows it.",
    "properties": {
        "id": {"type": "string"},
        "state": {"type": "string", "enum": ["waiting", "in_flight", "dead"]},
        "key": {"type": ["string", "null"], "description": "The ordering key"},
        "attempts": {"type": "integer", "minimum": 0},
        "sent": {"type": "number", "description": "Unix time it was sent (or redriven)"},
        "due": {"type": ["number", "null"], "description": "Next attempt, or the lease's end"},
        "died": {"type": ["number", "null"]},
        "error": {"type": ["string", "null"], "description": "The last failure"},
        "headers": {"type": "object", "additionalProperties": {"type": "string"}},
        "body": {"description": "The message as stored"},
    },
    "required": ["id", "state", "attempts", "sent", "headers", "body"],
}


def describe(edge: QueuesEdge, doc: OpenApiDocument) -> None:
    """Add each queue's send operation and the operations on queues (scope queues:admin)."""
    bindings = edge.runner.bindings
    if not bindings:
        return
    queues = edge.runtime.spec.queues
    doc.extra_schemas["QueuedMessage"] = MESSAGE
    tag = doc.tag("queues", "Durable message queues: send, inspect, redrive")
    admin = doc.security(False)
    base = edge.prefix
    stats = {"type": "object", "properties": STATS, "required": list(STATS)}
    doc.add(
        base,
        "get",
        {
            "operationId": "queues",
            "summary": "Every queue and its counts (scope queues:admin)",
            "tags": [tag],
            "security": admin,
            "responses": {
                "200": {
                    "description": "The queues",
                    "content": doc.json_content(
                        {
                            "type": "object",
                            "properties": {
                                "broker": {"type": "string"},
                                "queues": {
                                    "type": "array",
                                    "items": {
                                        "type": "object",
                                        "properties": {"name": {"type": "string"}, **STATS},
                                        "required": ["name", *STATS],
                                    },
                                },
                            },
                            "required": ["broker", "queues"],
                        }
                    ),
                },
                **doc.problems(),
            },
        },
    )
    listing = doc.json_content(
        {
            "type": "object",
            "properties": {
                "queue": {"type": "string"},
                "items": {"type": "array", "items": doc.schemas.ref("QueuedMessage")},
                "next_cursor": {"type": ["string", "null"]},
            },
            "required": ["queue", "items", "next_cursor"],
        }
    )
    limit = {
        "name": "limit",
        "in": "query",
        "required": False,
        "schema": {"type": "integer", "minimum": 1, "maximum": 500, "default": 50},
    }
    for name, binding in bindings.items():
        queue = binding.queue
        path = f"{base}/{name}"
        spec = queues[name]
        doc.add(
            path,
            "post",
            {
                "operationId": f"queue_{name}_send",
                "summary": spec.description or f"Send a message to queue {name}",
                "description": (
                    "Answered 202 once the message is durable; its handler runs later, at "
                    "least once. A repeated Idempotency-Key within the queue's dedup window "
                    "is stored once and answered with duplicate: true."
                ),
                "tags": [tag],
                "security": doc.security(queue.public),
                "parameters": [
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "required": False,
                        "description": "The message id (default: a new one)",
                        "schema": NAME_SCHEMA,
                    },
                    {
                        "name": "key",
                        "in": "query",
                        "required": False,
                        "description": "Ordering key: one at a time per key, in order",
                        "schema": NAME_SCHEMA,
                    },
                    {
                        "name": "delay",
                        "in": "query",
                        "required": False,
                        "description": "Seconds before it may be handled",
                        "schema": {"type": "number", "minimum": 0, "maximum": MAX_DELAY},
                    },
                ],
                "requestBody": {
                    "required": True,
                    "content": doc.json_content(doc.schemas.schema(spec.payload)),
                },
                "responses": {
                    "202": {
                        "description": "Stored (or already known: duplicate)",
                        "content": doc.json_content(
                            {
                                "type": "object",
                                "properties": {
                                    "id": {"type": "string"},
                                    "queue": {"type": "string"},
                                    "duplicate": {"type": "boolean"},
                                },
                                "required": ["id", "queue", "duplicate"],
                            }
                        ),
                    },
                    **doc.problems(400, 413, 415, 422),
                },
            },
        )
        reply = doc.schemas.schema(spec.reply) if spec.reply is not None else {}
        doc.add(
            f"{path}/call",
            "post",
            {
                "operationId": f"queue_{name}_call",
                "summary": f"Send a request to queue {name} and wait for its consumer's reply",
                "description": (
                    "The message carries reply-to and correlation-id; the consumer's return "
                    "value comes back as the answer. 504 when no reply came within the timeout "
                    "(the request may still be handled later); 500 when the consumer failed "
                    "for good."
                ),
                "tags": [tag],
                "security": doc.security(queue.public),
                "parameters": [
                    {
                        "name": "timeout",
                        "in": "query",
                        "required": False,
                        "description": "Seconds to wait for the reply (default 30)",
                        "schema": {"type": "number", "minimum": 0.001, "maximum": 3600},
                    },
                    {
                        "name": "key",
                        "in": "query",
                        "required": False,
                        "description": "Ordering key",
                        "schema": NAME_SCHEMA,
                    },
                ],
                "requestBody": {
                    "required": True,
                    "content": doc.json_content(doc.schemas.schema(spec.payload)),
                },
                "responses": {
                    "200": {"description": "The reply", "content": doc.json_content(reply)},
                    **doc.problems(400, 413, 415, 422, 500, 504),
                },
            },
        )
        doc.add(
            path,
            "get",
            {
                "operationId": f"queue_{name}",
                "summary": f"Queue {name}: counts and consumer (scope queues:admin)",
                "tags": [tag],
                "security": admin,
                "responses": {
                    "200": {"description": "The queue", "content": doc.json_content(stats)},
                    **doc.problems(),
                },
            },
        )
        doc.add(
            f"{path}/messages",
            "get",
            {
                "operationId": f"queue_{name}_messages",
                "summary": "Messages waiting or in flight (scope queues:admin)",
                "tags": [tag],
                "security": admin,
                "parameters": [limit],
                "responses": {
                    "200": {"description": "Messages", "content": listing},
                    **doc.problems(),
                },
            },
        )
        doc.add(
            f"{path}/messages",
            "delete",
            {
                "operationId": f"queue_{name}_purge",
                "summary": "Delete every message of the queue, dead letters too "
                "(scope queues:admin)",
                "tags": [tag],
                "security": admin,
                "parameters": [
                    {
                        "name": "confirm",
                        "in": "query",
                        "required": True,
                        "description": "The queue's name, to confirm",
                        "schema": {"type": "string", "enum": [name]},
                    }
                ],
                "responses": {
                    "200": {
                        "description": "Deleted",
                        "content": doc.json_content(
                            {
                                "type": "object",
                                "properties": {"deleted": {"type": "integer"}},
                                "required": ["deleted"],
                            }
                        ),
                    },
                    **doc.problems(),
                },
            },
        )
        doc.add(
            f"{path}/dead",
            "get",
            {
                "operationId": f"queue_{name}_dead",
                "summary": "The dead letters, with attempts and last error (scope queues:admin)",
                "tags": [tag],
                "security": admin,
                "parameters": [
                    limit,
                    {
                        "name": "after",
                        "in": "query",
                        "required": False,
                        "description": "The next_cursor of the previous page",
                        "schema": {"type": "string", "maxLength": 200},
                    },
                ],
                "responses": {
                    "200": {"description": "Dead letters", "content": listing},
                    **doc.problems(),
                },
            },
        )
        doc.add(
            f"{path}/redrive",
            "post",
            {
                "operationId": f"queue_{name}_redrive",
                "summary": "Make dead letters ready again: those named, or all "
                "(scope queues:admin)",
                "tags": [tag],
                "security": admin,
                "requestBody": {
                    "required": False,
                    "content": doc.json_content(
                        {
                            "type": "object",
                            "properties": {
                                "ids": {
                                    "type": "array",
                                    "items": NAME_SCHEMA,
                                    "minItems": 1,
                                    "maxItems": 1000,
                                }
                            },
                            "required": ["ids"],
                        }
                    ),
                },
                "responses": {
                    "200": {
                        "description": "How many were redriven",
                        "content": doc.json_content(
                            {
                                "type": "object",
                                "properties": {"redriven": {"type": "integer"}},
                                "required": ["redriven"],
                            }
                        ),
                    },
                    **doc.problems(400, 422),
                },
            },
        )


def describe_channels(edge: QueuesEdge, doc: AsyncApiDocument) -> None:
    """Each queue as a channel the node receives messages on, sent with ``POST``."""
    bindings = edge.runner.bindings
    if not bindings:
        return
    doc.server(
        "queues",
        "http",
        pathname=edge.prefix,
        title="Message queues",
        description="POST /{queue} with the message as the JSON body; 202 with its id once "
        "it is durable. Idempotency-Key is the message id (deduplicated within the queue's "
        "window), ?key= its ordering key, ?delay= seconds before it may be handled.",
    )
    for name, binding in bindings.items():
        spec = edge.runtime.spec.queues[name]
        key = f"queue.{name}"
        doc.message(key, doc.schemas.schema(spec.payload), title=name, description=spec.description)
        doc.channel(
            key,
            name,
            messages=[key],
            title=f"queue {name}",
            description=spec.description,
        )
        security, extensions = doc.security(
            ("bearer", "apiKey"), public=binding.queue.public, scopes=binding.queue.scopes
        )
        consumer = binding.consumer
        handled = (
            f"handled at least once by its consumer (up to {consumer.max_attempts} attempts, "
            "then a dead letter)"
            if consumer is not None
            else "stored for a consumer elsewhere"
        )
        if spec.reply is not None:
            reply_key = f"queue.{name}.reply"
            doc.message(
                reply_key,
                doc.schemas.schema(spec.reply),
                title=f"{name} reply",
                description="The consumer's return value, with the request's correlation-id",
            )
            doc.channel(
                reply_key,
                None,
                messages=[reply_key],
                title=f"replies of queue {name}",
                description="The queue a request names in its reply-to header",
            )
            doc.operation(
                f"queues.{name}.call",
                "receive",
                key,
                server="queues",
                summary=f"Send a request to queue {name} and receive its reply",
                description=f"POST {edge.prefix}/{name}/call answers with the reply; over the "
                "broker, a request carries reply-to and correlation-id headers and the reply "
                "goes to that queue.",
                security=security,
                bindings={"http": {"method": "POST", "bindingVersion": "0.3.0"}},
                extensions=extensions,
                reply={
                    "address": {
                        "location": "$message.header#/reply-to",
                        "description": "The queue the request names",
                    },
                    "channel": {"$ref": f"#/channels/{reply_key}"},
                    "messages": [{"$ref": f"#/channels/{reply_key}/messages/{reply_key}"}],
                },
            )
        doc.operation(
            f"queues.{name}.send",
            "receive",
            key,
            server="queues",
            summary=f"Send a message to queue {name}",
            description=f"POST {edge.prefix}/{name}: answered 202 once durable; {handled}.",
            security=security,
            bindings={
                "http": {"method": "POST", "bindingVersion": "0.3.0"},
            },
            extensions=extensions,
        )

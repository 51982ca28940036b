"""Outbound webhooks in the AsyncAPI document: every event type, POSTed to subscribers.

The server is a subscriber's endpoint, not the node: its host is a variable,
each subscription's URL (``POST /v{n}/webhooks``). The body is the event
envelope in the Standard Webhooks shape, its ``data`` the message; the
signature headers are listed in each operation's description (a message is
the channel's, shared by every pattern, so its headers cannot be the
webhook's alone).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from polyport.edges.webhooks.binding import WebhooksEdge
    from polyport.http.asyncapi import AsyncApiDocument


def describe_channels(edge: WebhooksEdge, doc: AsyncApiDocument) -> None:
    """A ``send`` operation per event type, on the ``webhooks`` server."""
    doc.server(
        "webhooks",
        "http",
        host="{subscriber}",
        variables={
            "subscriber": {
                "description": f"The host of a subscription's URL (POST {edge.prefix}); "
                "https or http, as the URL says.",
                "examples": ["partner.example.com"],
            }
        },
        title="Webhook subscribers",
        description="Each event is POSTed to every enabled subscription whose filters match "
        "its type and whose owner may read it, from a durable outbox, at least once, with "
        "retries (Standard Webhooks; docs/webhooks.md).",
    )
    for name, event in doc.events.items():
        if event.public:
            owner = ""
        elif event.scopes:
            owner = f" whose owner holds {' '.join(sorted(event.scopes))}"
        else:
            owner = " made with credentials"
        doc.operation(
            f"webhooks.{name}",
            "send",
            doc.event_channel(name),
            server="webhooks",
            summary=f"{name} events, POSTed to subscribers",
            description=f"POST to every subscription filtering on {name} (or on a wildcard "
            f"matching it){owner}: the body is "
            "{id, type, timestamp, channel, offset, epoch, data}, whose `data` is this "
            "message; headers webhook-id (the event id, the same on every attempt), "
            "webhook-timestamp and webhook-signature (v1,<base64 HMAC-SHA256 of "
            "id.timestamp.body>).",
            bindings={"http": {"method": "POST"}},
            tags=["webhooks"],
        )

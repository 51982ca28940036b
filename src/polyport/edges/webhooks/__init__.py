"""Outbound webhooks: subscriptions, a durable outbox, signed at-least-once delivery."""

from polyport.edges.webhooks.binding import ADMIN_SCOPE, WebhooksEdge

__all__ = ["ADMIN_SCOPE", "WebhooksEdge"]

"""Outbound webhooks: subscriptions, a durable outbox, signed at-least-once delivery.

The edge is :class:`~polyport.edges.webhooks.binding.WebhooksEdge`; its
settings section, :class:`~polyport.edges.webhooks.config.WebhooksConfig`,
imports without anything the edge needs. Nothing is imported here, so that
importing a module of this package never loads the edge itself.
"""

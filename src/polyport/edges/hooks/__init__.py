"""Inbound webhook receivers: ``POST /hooks/{name}``, verified, deduplicated, queued."""

from polyport.edges.hooks.binding import HooksEdge

__all__ = ["HooksEdge"]

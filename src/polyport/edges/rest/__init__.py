"""The REST edge: resource URLs, JSON bodies, problem+json errors, HTTP caching."""

from polyport.edges.rest.binding import RestEdge

__all__ = ["RestEdge"]

"""The REST edge: resource URLs, JSON bodies, problem+json errors, HTTP caching.

The edge is :class:`~polyport.edges.rest.binding.RestEdge`. Nothing is imported
here, so that importing a module of this package never loads the edge itself.
"""

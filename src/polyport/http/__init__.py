"""The HTTP layer shared by HTTP edges: router, request/response, problems, OpenAPI.

Not an edge itself: edges build on it, and the node serves their routes
through one :class:`~polyport.http.app.HttpApp`.
"""

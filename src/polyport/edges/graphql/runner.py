"""What a GraphQL transport needs from the edge: authenticate, execute, subscribe.

The HTTP transport (``transport_http.py``) and the ``graphql-transport-ws``
transport (``transport_ws.py``) are both drivers of one
:class:`OperationRunner`: they decode their wire into a *payload* — the
GraphQL-over-HTTP request object ``{"query", "variables", "operationName",
"extensions"}`` — and send back what the runner returns. Neither parses,
validates or executes GraphQL itself.

Results are GraphQL *execution results* as plain JSON-ready dicts:
``{"data": …}``, ``{"data": …, "errors": […]}`` or, for a request that could
not be executed at all (syntax, validation, limits), ``{"errors": […]}``
without ``data``. Every error carries ``extensions.code``
(see :mod:`polyport.edges.graphql.errors`).

Authentication raises :class:`~polyport.core.errors.Unauthenticated` (bad or
missing credentials where the node requires them); the WebSocket transport
answers that by closing with 4403 "Forbidden".

The hand-off on the WebSocket: the edge builds one
``transport_ws.GraphQLTransportWs(runner, config, metrics=…)`` and mounts it
as the ``/graphql`` handler of its ``websocket_routes()``; its
``subprotocols`` attribute makes the server's handshake select
``graphql-transport-ws``, and the edge calls its ``shutdown()`` when the node
stops.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any, Protocol

from polyport.core.context import Principal

#: An execution result: ``{"data": …, "errors": […], "extensions": …}`` (JSON-ready).
ExecutionResult = dict[str, Any]


class OperationRunner(Protocol):
    """Runs GraphQL operations for a transport; one per edge, shared by every connection."""

    async def authenticate(
        self, connection_params: Mapping[str, Any] | None, headers: Mapping[str, str]
    ) -> Principal:
        """The principal for a connection.

        ``connection_params`` is the ``connection_init`` payload (it may hold
        ``Authorization`` / ``authorization`` as ``"Bearer <token>"``, or
        ``X-API-Key`` / ``apiKey``); ``headers`` are the upgrade request's
        headers, lower-cased names. Credentials in the payload win over headers.
        Anonymous callers get the anonymous principal when the node allows them.

        Raises:
            Unauthenticated: credentials are malformed or unknown.
        """
        ...

    async def execute(
        self, payload: Mapping[str, Any], principal: Principal, *, peer: str | None = None
    ) -> ExecutionResult:
        """Run a query or mutation and return its execution result.

        ``peer`` is the client's address: an anonymous caller's rate limit is its own.

        Never raises for a GraphQL-level problem: parse, validation and limit
        errors come back as ``{"errors": [...]}`` without ``data``. A
        subscription operation passed here is refused the same way.
        """
        ...

    async def subscribe(
        self, payload: Mapping[str, Any], principal: Principal, *, peer: str | None = None
    ) -> AsyncIterator[ExecutionResult] | ExecutionResult:
        """Start a subscription (``peer`` as for :meth:`execute`).

        Returns an async iterator of execution results (one per event, each
        ``{"data": {...}}`` projected through the selection set, or
        ``{"data": null, "errors": [...]}`` for an event that fails), or — when
        the operation cannot start (invalid document, not a subscription,
        unauthorized, bad resume cursor) — one execution result holding the
        errors (``{"errors": [...]}``), which the transport sends as an
        ``error`` message. Query and mutation operations are answered with their
        single result wrapped in a one-item iterator, as the protocol allows.

        The iterator ends when the source ends; the transport closes it
        (``aclose()``) when the client completes or disconnects.
        """
        ...


__all__ = ["ExecutionResult", "OperationRunner"]

"""GraphQL over WebSocket: the ``graphql-transport-ws`` protocol on ``/graphql``.

The protocol of the ``graphql-ws`` library (its PROTOCOL.md, also the GraphQL
over WebSocket RFC), spoken by Apollo Client, urql, GraphiQL and ``gql``::

    client                                    server
    ── handshake, subprotocol graphql-transport-ws ──▶   (else close 4406)
    {"type":"connection_init","payload":{…}} ──▶   authenticate (4403 if refused)
                                             ◀──  {"type":"connection_ack"}
    {"id":"1","type":"subscribe","payload":{"query":…}} ──▶
                                             ◀──  {"id":"1","type":"next","payload":<result>} …
                                             ◀──  {"id":"1","type":"complete"}
    {"id":"1","type":"complete"} ──▶               (the client stops it early)
    {"type":"ping"} ──▶ ◀── {"type":"pong"}        (either side; the payload is echoed)

Fatal mistakes close the socket with the protocol's codes: 4400 an invalid
message (the reason says why), 4401 ``subscribe`` before the acknowledgement,
4408 no ``connection_init`` within ``connection_init_timeout``, 4409 an id
already in use, 4429 a second ``connection_init``. An operation that cannot
start gets an ``error`` message (the GraphQL errors) and the socket stays open;
so does one over the per-connection cap (``RATE_LIMITED``).

GraphQL itself is the edge's business: this module only drives an
:class:`~polyport.edges.graphql.runner.OperationRunner`. The socket is any
server's :class:`~polyport.http.websocket.WebSocket`, so keep-alive pings,
the inbound message limit (1009) and the slow-consumer rule are the server's,
as on ``/ws``. Outgoing messages are queued per connection and written once
per loop iteration (a burst of results is one system call); a result object
the runner hands to many subscribers is serialised once (:class:`EncodedResults`). When
the client reads slower than results come, its operations stop pulling from
their sources — events wait in the hub's bounded buffer, then in the event
log — and a client that reads nothing for ``stall_timeout`` seconds is closed
with 1013, as on ``/ws``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any, Protocol, cast

import orjson

from polyport.core.context import Principal, new_request_id
from polyport.core.errors import (
    Internal,
    PermissionDenied,
    RateLimited,
    ServiceError,
    Unauthenticated,
)
from polyport.edges.graphql.config import GraphQLConfig
from polyport.edges.graphql.errors import field_error
from polyport.edges.graphql.runner import ExecutionResult, OperationRunner
from polyport.edges.graphql.ws_messages import (
    CLOSE_FORBIDDEN,
    CLOSE_INIT_TIMEOUT,
    CLOSE_INTERNAL,
    CLOSE_SUBPROTOCOL,
    CLOSE_SUBSCRIBER_EXISTS,
    CLOSE_TOO_MANY_INITS,
    CLOSE_UNAUTHORIZED,
    SUBPROTOCOL,
    EncodedResults,
    ProtocolViolation,
    close_reason,
    frame_head,
    loop_results,
    next_frame,
    next_prefix,
    parse_message,
)
from polyport.http.origins import OriginPolicy, Trust
from polyport.http.request import Request
from polyport.http.websocket import EncodedFrames, WebSocket

log = logging.getLogger("polyport.graphql.ws")

#: Seconds to let operations finish their clean-up once the socket is gone.
_CLEANUP_TIMEOUT = 5.0
#: Queued bytes written at once, without waiting for the end of the loop iteration.
_FLUSH_AT = 64 * 1024


class BatchedResults(Protocol):
    """A subscription source that can also hand over everything it has at once.

    Optional: a source returned by ``OperationRunner.subscribe`` that has
    ``batch()`` is read with it, so a burst of events costs one wake-up per
    subscriber instead of one per event (as the WebSocket edge reads the hub).
    """

    async def batch(self) -> list[ExecutionResult]:
        """The next results: at least one, or none once the source has ended."""
        ...


class _Metrics(Protocol):
    def set(self, name: str, help: str, value: float, **labels: str) -> None: ...


class TransportWsConnection:
    """One socket: its state (initialised, acknowledged, principal) and running operations."""

    def __init__(
        self,
        ws: WebSocket,
        request: Request,
        runner: OperationRunner,
        config: GraphQLConfig,
        encoded: EncodedResults | None = None,
    ) -> None:
        self.ws = ws
        self.request = request
        self.runner = runner
        self.config = config
        self.encoded = encoded or loop_results()
        self.init_received = False
        self.acknowledged = False
        self.principal: Principal | None = None
        #: Running operations by the client's id (reserved from ``subscribe`` on).
        self.operations: dict[str, asyncio.Task[None]] = {}
        # Messages wait here until the end of the loop iteration (or _FLUSH_AT
        # bytes), so a burst of results goes out in one write.
        self._outbox: list[bytes] = []
        self._outbox_bytes = 0
        self._flush_pending = False
        # One waiter for a slow client at a time (the transport has one drain waiter).
        self._waiting = asyncio.Lock()

    async def run(self) -> None:
        """Serve the socket until it closes; every operation is stopped before this returns."""
        ws = self.ws
        if ws.subprotocol != SUBPROTOCOL:
            ws.close(CLOSE_SUBPROTOCOL, "Subprotocol not acceptable")
            return
        timer = asyncio.get_running_loop().call_later(
            self.config.connection_init_timeout, self._init_timeout
        )
        try:
            async for text in ws:
                try:
                    await self.receive(parse_message(text))
                except ProtocolViolation as exc:
                    self.flush()  # what was answered before goes out before the close
                    ws.close(exc.code, close_reason(exc.reason))
                if ws.closed:
                    break
        finally:
            timer.cancel()
            await self.stop_all()

    def _init_timeout(self) -> None:
        # As graphql-ws: what must arrive in time is connection_init, not our ack.
        if not self.init_received:
            self.flush()
            self.ws.close(CLOSE_INIT_TIMEOUT, "Connection initialisation timeout")

    async def receive(self, message: dict[str, Any]) -> None:
        """Act on one valid message.

        Raises:
            ProtocolViolation: the message is not allowed now.
        """
        kind = message["type"]
        if kind == "subscribe":
            self.subscribe(message["id"], message["payload"])
        elif kind == "complete":
            task = self.operations.pop(message["id"], None)
            if task is not None:
                task.cancel()  # its clean-up closes the source; no "complete" goes back
        elif kind == "ping":
            pong: dict[str, Any] = {"type": "pong"}
            if message.get("payload") is not None:
                pong["payload"] = message["payload"]
            self.post(orjson.dumps(pong))
        elif kind == "pong":
            return
        else:  # connection_init
            await self.connect(message.get("payload"))

    async def connect(self, params: Mapping[str, Any] | None) -> None:
        if self.init_received:
            raise ProtocolViolation(CLOSE_TOO_MANY_INITS, "Too many initialisation requests")
        self.init_received = True
        headers = {
            name.decode("latin-1").lower(): value.decode("latin-1")
            for name, value in self.request.headers_list
        }
        try:
            principal = await self.runner.authenticate(params, headers)
        except (Unauthenticated, PermissionDenied):
            raise ProtocolViolation(CLOSE_FORBIDDEN, "Forbidden") from None
        except Exception:
            log.exception("graphql-transport-ws: authentication failed unexpectedly")
            raise ProtocolViolation(CLOSE_INTERNAL, "Internal server error") from None
        if self.ws.closed:  # the init timeout fired while authenticating
            return
        self.principal = principal
        self.acknowledged = True
        self.post(b'{"type":"connection_ack"}')

    def subscribe(self, operation_id: str, payload: dict[str, Any]) -> None:
        if not self.acknowledged or self.principal is None:
            raise ProtocolViolation(CLOSE_UNAUTHORIZED, "Unauthorized")
        if operation_id in self.operations:
            raise ProtocolViolation(
                CLOSE_SUBSCRIBER_EXISTS,
                close_reason(f"Subscriber for {operation_id} already exists"),
            )
        if len(self.operations) >= self.config.max_subscriptions:
            limit = self.config.max_subscriptions
            self._send_errors(
                operation_id,
                [field_error(RateLimited(f"at most {limit} operations per connection"), None)],
            )
            return
        task = asyncio.get_running_loop().create_task(
            self._operate(operation_id, payload, self.principal),
            name=f"graphql-transport-ws {operation_id[:64]}",
        )
        self.operations[operation_id] = task

    async def _operate(
        self, operation_id: str, payload: dict[str, Any], principal: Principal
    ) -> None:
        """Run one operation: ``next``… then ``complete``, or one ``error``."""
        source: AsyncIterator[ExecutionResult] | None = None
        prefix = next_prefix(operation_id)
        frame_of = self.encoded.next_frame
        ws = self.ws
        try:
            started = await self.runner.subscribe(payload, principal, peer=self.request.peer)
            if isinstance(started, dict):
                if "data" not in started:  # it could not start: the errors, no complete
                    self._send_errors(operation_id, started.get("errors") or [])
                    return
                self.post_frame(next_frame(prefix, orjson.dumps(started)))
            else:
                source = started
                if hasattr(source, "batch"):
                    batched = cast(BatchedResults, source)
                    while results := await batched.batch():
                        if ws.closed:
                            return
                        if len(results) == 1:  # events one by one: the common case, inline
                            self.post_frame(frame_of(prefix, results[0]))
                            if ws.write_paused:
                                await self.paced()
                        else:
                            await self._post_burst(prefix, results)
                else:
                    async for result in source:
                        if ws.closed:
                            return
                        self.post_frame(frame_of(prefix, result))
                        if ws.write_paused:
                            await self.paced()
            self._send(operation_id, "complete")
        except ServiceError as exc:
            self._send_errors(operation_id, [field_error(exc, None)])
        except Exception:
            # Not the client's fault, and nothing of it is for the client to see.
            error = Internal()
            error.request_id = new_request_id()
            log.exception(
                "graphql-transport-ws: operation %r failed",
                operation_id[:64],
                extra={"request_id": error.request_id},
            )
            self._send_errors(operation_id, [field_error(error, None)])
        finally:
            if source is not None:
                await _close(source)
            if self.operations.get(operation_id) is asyncio.current_task():
                del self.operations[operation_id]

    async def _post_burst(self, prefix: bytes, results: list[ExecutionResult]) -> None:
        """Queue a burst's ``next`` frames ``_FLUSH_AT`` bytes at a time, paced in between.

        A large burst never sits whole in the transport's buffer. The pieces
        are built once for every subscriber handed the same burst (the same
        list) with the same operation id: what is left per subscriber is
        queueing them.
        """
        ws = self.ws
        for piece in self.encoded.burst(prefix, results, _FLUSH_AT):
            self.post_frame(piece)
            if ws.write_paused:
                await self.paced()

    def _send(self, operation_id: str, kind: str) -> None:
        if self.operations.get(operation_id) is asyncio.current_task():
            self.post(orjson.dumps({"id": operation_id, "type": kind}))

    def _send_errors(self, operation_id: str, errors: list[dict[str, Any]]) -> None:
        self.post(orjson.dumps({"id": operation_id, "type": "error", "payload": errors}))

    # -- to the client -------------------------------------------------------------------

    def post(self, message: bytes) -> None:
        """Queue one message; it goes out with the others of this loop iteration, in order."""
        self.post_frame(frame_head(len(message)) + message)

    def post_frame(self, frame: bytes) -> None:
        if self.ws.closed:
            return
        self._outbox.append(frame)
        self._outbox_bytes += len(frame)
        if self._outbox_bytes >= _FLUSH_AT:
            self.flush()
        elif not self._flush_pending:
            self._flush_pending = True
            asyncio.get_running_loop().call_soon(self.flush)

    def post_frames(self, frames: list[bytes], size: int) -> None:
        """Queue several frames, ``size`` bytes in all; written at once from ``_FLUSH_AT`` on."""
        if self.ws.closed:
            return
        self._outbox.extend(frames)
        self._outbox_bytes += size
        if self._outbox_bytes >= _FLUSH_AT:
            self.flush()
        elif not self._flush_pending:
            self._flush_pending = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        """Write what is queued, in one piece (a client far behind is closed with 1013)."""
        self._flush_pending = False
        if self._outbox:
            # Whole frames, from ws_messages' encoder (frame_head), as text_frame makes them.
            data = EncodedFrames(b"".join(self._outbox))
            self._outbox.clear()
            self._outbox_bytes = 0
            self.ws.send_frames(data)

    async def paced(self) -> None:
        """Wait while the client is behind; it has ``stall_timeout`` to read, or gets 1013.

        Meanwhile the operation pulls nothing from its source, so its events wait
        in the hub's bounded buffer and then in the event log, not in memory here.
        """
        ws = self.ws
        while ws.write_paused and not ws.closed:
            async with self._waiting:
                self.flush()
                await ws.drain()

    async def stop_all(self) -> None:
        """Cancel every operation and wait until each has closed its source."""
        tasks = list(self.operations.values())
        self.operations.clear()
        for task in tasks:
            task.cancel()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=_CLEANUP_TIMEOUT)
            if pending:
                log.warning(
                    "graphql-transport-ws: %d operation(s) ignored cancellation", len(pending)
                )


async def _close(source: AsyncIterator[ExecutionResult]) -> None:
    close = getattr(source, "aclose", None)
    if close is None:
        return
    try:
        await close()
    except Exception:
        log.exception("graphql-transport-ws: closing a subscription source failed")


class GraphQLTransportWs:
    """The ``/graphql`` WebSocket endpoint; mount it as the route's handler.

    It carries ``subprotocols`` so that the server's handshake selects
    ``graphql-transport-ws`` (a client offering only others is closed with 4406).
    A browser page on an origin the node does not allow is closed with 4403
    before anything else: the origin rule of every WebSocket endpoint
    (:mod:`polyport.http.origins`; without ``origins``, same-origin pages only).
    """

    subprotocols: tuple[str, ...] = (SUBPROTOCOL,)

    def __init__(
        self,
        runner: OperationRunner,
        config: GraphQLConfig,
        *,
        metrics: _Metrics | None = None,
        origins: OriginPolicy | None = None,
    ) -> None:
        self.runner = runner
        self.config = config
        self.metrics = metrics
        self.origins = origins if origins is not None else OriginPolicy()
        self.connections: set[TransportWsConnection] = set()

    async def __call__(self, ws: WebSocket, request: Request) -> None:
        # Credentials here come from connection_init or headers, never from a
        # cookie; the rule still keeps other sites' pages away altogether.
        if self.origins.trust(request) is Trust.REFUSED:
            ws.close(CLOSE_FORBIDDEN, "Forbidden: origin not allowed")
            return
        connection = TransportWsConnection(ws, request, self.runner, self.config)
        self.connections.add(connection)
        self._count()
        try:
            await connection.run()
        finally:
            self.connections.discard(connection)
            self._count()

    def operations(self) -> int:
        """Operations running on every connection (for tests and metrics)."""
        return sum(len(c.operations) for c in self.connections)

    def shutdown(self) -> None:
        """The node is stopping: close every socket with 1001."""
        for connection in list(self.connections):
            connection.ws.shutdown()

    def _count(self) -> None:
        if self.metrics is not None:
            self.metrics.set(
                "polyport_graphql_ws_connections",
                "Open graphql-transport-ws connections.",
                len(self.connections),
            )


async def serve(
    ws: WebSocket, request: Request, runner: OperationRunner, config: GraphQLConfig
) -> None:
    """Serve one upgraded connection (the handshake must have chosen ``graphql-transport-ws``)."""
    await TransportWsConnection(ws, request, runner, config).run()


__all__ = [
    "SUBPROTOCOL",
    "BatchedResults",
    "GraphQLTransportWs",
    "ProtocolViolation",
    "TransportWsConnection",
    "parse_message",
    "serve",
]

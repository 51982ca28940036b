"""Server-Sent Events: the event log, and server streams, as ``text/event-stream``.

    GET /v1/events/stream?channel=orders/%23[&channel=…][&last_event_id=…]
    GET /v1/{stream method}/stream?arg=…

Each event is ``id: {event id}``, ``event: {type}``, ``data: {envelope}``.
``Last-Event-ID`` (which browsers send when ``EventSource`` reconnects) or
``?last_event_id=`` resumes without a gap; a cursor history no longer holds is
answered with ``event: recovery-failed`` and the stream continues live. A
comment every 15 s keeps proxies from closing an idle stream. A client that
reads too slowly (its send buffer over the limit for ``sse.stall_timeout``) is
dropped (the carrier resets the connection: a close would wait on the unread
bytes): it reconnects and resumes from its last id, so memory stays bounded and
nothing is lost while history holds it. Server streams are paced the same way.

Every event is encoded once and the same bytes go to every subscriber; a
burst of events is one write per subscriber.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import orjson

from polyport.core.contract import MethodKind
from polyport.core.dispatch import Binding
from polyport.core.errors import RecoveryFailed, ServiceError
from polyport.core.events import Event, parse_patterns
from polyport.core.runtime import Endpoint as CatalogEntry
from polyport.core.runtime import Runtime
from polyport.edges.kinds import ChannelEdge, HttpEdge
from polyport.edges.sse.config import SseConfig
from polyport.http.asyncapi import AsyncApiDocument
from polyport.http.openapi import OpenApiDocument
from polyport.http.request import Request, Response, Stream
from polyport.http.router import Endpoint, Route

log = logging.getLogger("polyport.sse")

EDGE = "sse"
HEARTBEAT = 15.0
RETRY_MS = 2000
#: Bytes a client may leave unread before it is disconnected as too slow.
SEND_BUFFER = 1024 * 1024
HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-store"),
    (b"x-accel-buffering", b"no"),  # tell nginx not to buffer the stream
]


def sse_bytes(event: Event) -> bytes:
    """The event as an SSE message, encoded once per event for every subscriber."""
    encoded = event.wire.get("sse")
    if encoded is None:
        encoded = event.wire["sse"] = b"id: %b\nevent: %b\ndata: %b\n\n" % (
            event.id.encode(),
            event.type.encode(),
            event.to_json(),
        )
    return encoded


def sse_message(event: str, data: Any, *, id: str | None = None) -> bytes:
    head = b"id: %b\n" % id.encode() if id is not None else b""
    return head + b"event: %b\ndata: %b\n\n" % (event.encode(), orjson.dumps(data))


class SseEdge(HttpEdge, ChannelEdge):
    """Streams events and server-streaming methods to ``EventSource`` clients."""

    name = EDGE

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.prefix = f"/v{runtime.spec.version}"
        config = runtime.settings.section(SseConfig)
        self.heartbeat = config.heartbeat
        self.send_buffer = config.send_buffer
        self.stall_timeout = config.stall_timeout
        self.streams: set[Stream] = set()

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        for stream in list(self.streams):
            stream.close()

    def routes(self) -> list[Route]:
        routes = [Route("GET", f"{self.prefix}/events/stream", self.stream_events, "sse_events")]
        for name, binding in self.runtime.dispatcher.bindings.items():
            if binding.kind is MethodKind.SERVER_STREAM:
                routes.append(
                    Route("GET", f"{self.prefix}/{name}/stream", self._method(binding), name)
                )
        return routes

    def catalog(self) -> list[CatalogEntry]:
        entries = []
        for name, event in self.runtime.spec.events.items():
            entries.append(
                CatalogEntry(
                    "SSE",
                    name,
                    "event",
                    f"GET {self.prefix}/events/stream?channel={event.event.channel}",
                )
            )
        for name, binding in self.runtime.dispatcher.bindings.items():
            if binding.kind is MethodKind.SERVER_STREAM:
                entries.append(
                    CatalogEntry("SSE", name, "method", f"GET {self.prefix}/{name}/stream")
                )
        return entries

    # -- the event log ------------------------------------------------------------------

    async def stream_events(self, request: Request) -> Response | None:
        caller = request.caller(EDGE, query_token=True)
        channels = request.query_all("channel")
        patterns = parse_patterns(channels)
        dispatcher = self.runtime.dispatcher
        types = dispatcher.admit_subscribe(patterns, caller)
        after = (
            request.header(b"last-event-id")
            or request.query.get("last_event_id")
            or request.query.get("after")
            or "now"
        )
        hub = self.runtime.hub
        failed: RecoveryFailed | None = None
        try:
            subscription = await hub.subscribe(patterns, after=after, types=types)
        except RecoveryFailed as exc:
            failed = exc
            subscription = await hub.subscribe(patterns, after="now", types=types)
        stream = request.stream(200, HEADERS, buffer=self.send_buffer)
        self.streams.add(stream)
        opening = [b": polyport\n", b"retry: %d\n\n" % RETRY_MS]
        try:
            stream.write(b"".join(opening))
            if failed is not None:
                # The id moves the browser's Last-Event-ID to where the new
                # subscription starts, so a reconnect resumes from there.
                stream.write(
                    sse_message(
                        "recovery-failed",
                        {
                            "message": failed.message,
                            "earliest": failed.earliest,
                            "latest": failed.latest,
                        },
                        id=subscription.cursor,
                    )
                )
            await self._pump(subscription, stream)
        finally:
            subscription.close()
            self.streams.discard(stream)
        return None

    async def _pump(self, subscription: Any, stream: Stream) -> None:
        closer = asyncio.ensure_future(stream.wait_closed())
        closer.add_done_callback(lambda _: subscription.close())
        write = stream.write
        try:
            while not stream.closed:
                try:
                    async with asyncio.timeout(self.heartbeat):
                        events = await subscription.batch()
                except TimeoutError:
                    write(b": ping\n\n")
                    continue
                except RecoveryFailed as exc:
                    # End the stream; the browser reconnects from `latest`.
                    write(
                        sse_message(
                            "recovery-failed",
                            {
                                "message": exc.message,
                                "earliest": exc.earliest,
                                "latest": exc.latest,
                            },
                            id=exc.latest,
                        )
                    )
                    return
                if not events:
                    return  # closed
                write(b"".join([sse_bytes(e) for e in events]))
                # Pace a burst to the reader; a reader that has stalled is dropped
                # (it reconnects with Last-Event-ID and resumes from history).
                if not await stream.drain(self.stall_timeout):
                    log.info("dropped a stalled SSE client")
                    return
        finally:
            closer.cancel()
            stream.close()

    # -- server streams ------------------------------------------------------------------

    def _method(self, binding: Binding) -> Endpoint:
        dispatcher = self.runtime.dispatcher

        async def stream_method(request: Request) -> Response | None:
            caller = request.caller(EDGE, query_token=True)
            args = binding.from_text(
                {k: v for k, v in request.query.items() if k != "access_token"}
            )
            items = await dispatcher.open_stream(binding, args, caller)
            stream = request.stream(200, HEADERS, buffer=self.send_buffer)
            self.streams.add(stream)
            closer = asyncio.ensure_future(stream.wait_closed())
            count = 0
            try:
                stream.write(b"retry: %d\n\n" % RETRY_MS)
                iterator = aiter(items)
                while not stream.closed:
                    next_item = asyncio.ensure_future(anext(iterator))
                    done, _ = await asyncio.wait(
                        {next_item, closer}, return_when=asyncio.FIRST_COMPLETED
                    )
                    if next_item not in done:
                        next_item.cancel()
                        break
                    try:
                        item = next_item.result()
                    except StopAsyncIteration:
                        stream.write(sse_message("end", {"items": count}))
                        break
                    except ServiceError as exc:
                        stream.write(
                            sse_message("error", {"code": exc.code, "message": exc.message})
                        )
                        break
                    count += 1
                    data = binding.dump_json(item)
                    stream.write(b"id: %d\nevent: item\ndata: %b\n\n" % (count, data))
                    # A generator can outrun any reader: the next item waits while
                    # the client is behind, and a client that has stalled is let go.
                    if not await stream.drain(self.stall_timeout):
                        log.info("dropped a stalled SSE client of %s", binding.name)
                        break
            finally:
                closer.cancel()
                with contextlib.suppress(Exception):
                    await items.aclose()
                stream.close()
                self.streams.discard(stream)
            return None

        return stream_method

    def describe(self, doc: OpenApiDocument) -> None:
        """Document the stream endpoints (their bodies are text/event-stream)."""
        public_events = any(e.event.public for e in self.runtime.spec.events.values())
        tag = doc.tag("streams", "Server-Sent Events: the event log and server streams")
        stream = {"text/event-stream": {"schema": {"type": "string"}}}
        doc.add(
            f"{self.prefix}/events/stream",
            "get",
            {
                "operationId": "stream_events",
                "summary": "Events of some channels as Server-Sent Events, live and resumable",
                "tags": [tag],
                "security": doc.security(public_events),
                "parameters": [
                    doc.channel_parameter(),
                    doc.cursor_parameter("last_event_id", "Resume after this event id", empty=True),
                    doc.cursor_parameter(
                        "Last-Event-ID", "Resume after this event id", where="header", empty=True
                    ),
                    {
                        "name": "access_token",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string"},
                        "description": "A ticket from POST /auth/ticket (for browsers)",
                    },
                ],
                "responses": {
                    "200": {"description": "The stream", "content": stream},
                    **doc.problems(400, 422),
                },
                "x-polyport-streaming": True,
            },
        )
        for name, binding in self.runtime.dispatcher.bindings.items():
            if binding.kind is not MethodKind.SERVER_STREAM:
                continue
            method = binding.spec
            doc.add(
                f"{self.prefix}/{name}/stream",
                "get",
                doc.describe_method(
                    method,
                    operationId=f"{name}_stream",
                    tags=[tag],
                    parameters=[doc.parameter(p, "query") for p in method.params],
                    responses={
                        "200": {
                            "description": "One `item` event per streamed value, "
                            "then `end` (or `error`)",
                            "content": stream,
                        },
                        **doc.problems(422),
                    },
                ),
            )

    def describe_channels(self, doc: AsyncApiDocument) -> None:
        """Every event type, sent to ``EventSource`` clients of ``/v{n}/events/stream``."""
        doc.server(
            "sse",
            "http",
            pathname=f"{self.prefix}/events/stream",
            title="Server-Sent Events",
            description="GET with ?channel= (repeatable, + and # wildcards) opens a "
            "text/event-stream; Last-Event-ID (or ?last_event_id=) resumes after an event "
            "id, and a cursor history no longer holds is answered with "
            "`event: recovery-failed`.",
        )
        for name, event in doc.events.items():
            security, extensions = doc.security(
                ("bearer", "apiKey", "accessToken", "ticketCookie"),
                public=event.public,
                scopes=event.scopes,
            )
            doc.operation(
                f"sse.{name}",
                "send",
                doc.event_channel(name),
                server="sse",
                summary=f"{name} events, streamed as Server-Sent Events",
                description=f"GET {self.prefix}/events/stream?channel={doc.query_pattern(event)}: "
                f"each event is `id:` its id, `event: {name}`, and `data:` its envelope "
                "{id, channel, offset, epoch, type, time, data}, whose `data` is this message.",
                security=security,
                bindings={
                    "http": {
                        "method": "GET",
                        "query": {
                            "type": "object",
                            "properties": {
                                "channel": doc.channels_query(event),
                                "last_event_id": doc.cursor(
                                    "Resume after this event id (or send Last-Event-ID)",
                                    empty=True,
                                ),
                                "access_token": {
                                    "type": "string",
                                    "description": "A ticket from POST /auth/ticket",
                                },
                            },
                            "required": ["channel"],
                        },
                    }
                },
                tags=["sse"],
                extensions=extensions,
            )

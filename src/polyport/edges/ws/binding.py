"""The WebSocket edge: the session protocol at ``/ws``.

A thin driver of :class:`polyport.core.session.Session`: it takes the
credentials from wherever a client could put them, sends the session's frames
as text messages, and writes event batches as frames serialised once for
every subscriber. See ``docs/websocket-protocol.md``.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson

from polyport.core.errors import MissingExtra, ServiceError

try:  # the websockets library comes with the 'realtime' extra
    import websockets  # noqa: F401  (the frames of polyport.http.websocket)
except ImportError as exc:
    raise MissingExtra("realtime", "the WebSocket edge") from exc

from polyport.core.contract import MethodKind
from polyport.core.events import Event
from polyport.core.runtime import Endpoint as CatalogEntry
from polyport.core.runtime import Runtime
from polyport.core.session import Session, SessionLimits, error_frame, event_frame
from polyport.edges.kinds import ChannelEdge, WebSocketEdge
from polyport.http.asyncapi import AsyncApiDocument
from polyport.http.origins import (
    BEARER_SUBPROTOCOL,
    OriginPolicy,
    OriginRefused,
    websocket_credentials,
)
from polyport.http.request import Request
from polyport.http.websocket import (
    CLOSE_POLICY,
    SUBPROTOCOL,
    EncodedFrames,
    WebSocket,
    WebSocketEndpoint,
    join_frames,
    text_frame,
)
from polyport.http.websocket_config import WebSocketConfig

log = logging.getLogger("polyport.ws")

EDGE = "ws"
PATH = "/ws"


def ws_frame(event: Event) -> EncodedFrames:
    """The event's frame, serialised once however many clients receive it."""
    frame = event.wire.get("ws")
    if frame is None:
        frame = event.wire["ws"] = text_frame(event_frame(event))
    # The core's cache holds plain bytes; only this function fills "ws", with
    # text_frame. A cast would cost a call per subscriber.
    return frame  # type: ignore[return-value]


class WsEdge(WebSocketEdge, ChannelEdge):
    """Serves the session protocol over WebSocket."""

    name = EDGE

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        settings = runtime.settings
        self.options = options = settings.section(WebSocketConfig)
        self.limits = SessionLimits(
            max_subscriptions=options.max_subscriptions,
            max_streams=options.max_subscriptions,
        )
        self.origins = OriginPolicy.from_settings(settings.cors_origins)
        self.sockets: set[WebSocket] = set()

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        for ws in list(self.sockets):
            ws.shutdown()

    def websocket_routes(self) -> dict[str, WebSocketEndpoint]:
        return {PATH: self.serve}

    def catalog(self) -> list[CatalogEntry]:
        entries = [CatalogEntry("WebSocket", "session", "document", f"ws {PATH}")]
        for name, event in self.runtime.spec.events.items():
            entries.append(
                CatalogEntry(
                    "WebSocket",
                    name,
                    "event",
                    f'{PATH} {{"type":"subscribe","channels":["{event.event.channel}"]}}',
                )
            )
        for name, binding in self.runtime.dispatcher.bindings.items():
            # Inputs cannot be streamed over the session: client and bidirectional
            # streams are gRPC's (a call of one is refused with INVALID_ARGUMENT).
            if binding.kind in (MethodKind.UNARY, MethodKind.SERVER_STREAM):
                entries.append(
                    CatalogEntry(
                        "WebSocket", name, "method", f'{PATH} {{"type":"call","method":"{name}"}}'
                    )
                )
        return entries

    def describe_channels(self, doc: AsyncApiDocument) -> None:
        """Every event type sent to subscribers of the session; received from publishers
        of the types clients may publish (declared with ``publish_scopes``)."""
        doc.server(
            "ws",
            "ws",
            pathname=PATH,
            title="WebSocket session",
            description=f"The session protocol (subprotocol {SUBPROTOCOL}; "
            "docs/websocket-protocol.md): subscribe, unsubscribe, publish, call, ping. "
            "Credentials: an Authorization or X-API-Key header, a "
            f"`{BEARER_SUBPROTOCOL}<token>` subprotocol, ?access_token=, the ticket cookie "
            'of POST /auth/ticket, or an {"type":"auth"} frame.',
        )
        schemes = ("bearer", "apiKey", "accessToken", "ticketCookie")
        for name, event in doc.events.items():
            channel = doc.event_channel(name)
            security, extensions = doc.security(schemes, public=event.public, scopes=event.scopes)
            doc.operation(
                f"ws.{name}",
                "send",
                channel,
                server="ws",
                summary=f"{name} events, sent to the session's subscribers",
                description=f'After {{"type":"subscribe","channels":["{event.channel_pattern}"]}} '
                '(an "after" cursor resumes), each event arrives as '
                '{"type":"event","event":{id, channel, offset, epoch, type, time, data}}, '
                "whose `data` is this message.",
                security=security,
                tags=["ws"],
                extensions=extensions,
            )
            allowed = event.publish_scopes
            if allowed is None:
                continue  # clients may not publish it: only the service's own code does
            security, extensions = doc.security(
                schemes, public=event.public and not allowed, scopes=allowed
            )
            doc.operation(
                f"ws.publish.{name}",
                "receive",
                channel,
                server="ws",
                summary=f"{name} events, published by clients",
                description=f'{{"type":"publish","event":"{name}","data":…}} with this '
                "message as `data` (validated against the event type; the channel is filled "
                'from it, or given as "channel" if it fits '
                f'{event.channel}); answered with {{"type":"published","event_id":…}} once '
                "durable.",
                security=security,
                tags=["ws"],
                extensions=extensions,
            )

    async def serve(self, ws: WebSocket, request: Request) -> None:
        runtime = self.runtime
        try:
            credentials = websocket_credentials(request, ws.offered, self.origins)
        except OriginRefused:
            ws.close(CLOSE_POLICY, "origin not allowed")
            return
        except ServiceError:
            ws.close(CLOSE_POLICY, "malformed credentials")
            return

        def send(frame: dict[str, Any]) -> None:
            ws.send_text(orjson.dumps(frame))

        async def deliver(events: list[Event]) -> None:
            if len(events) == 1:
                await ws.deliver(ws_frame(events[0]))
            else:
                await ws.deliver(join_frames([ws_frame(e) for e in events]))

        async def deliver_frame(payload: bytes) -> None:
            await ws.deliver(text_frame(payload))

        session = Session(
            dispatcher=runtime.dispatcher,
            hub=runtime.hub,
            codec=runtime.codec,
            send=send,
            deliver=deliver,
            deliver_frame=deliver_frame,
            edge=EDGE,
            credentials=credentials,
            peer=ws.peer,
            limits=self.limits,
        )
        self.sockets.add(ws)
        metrics = runtime.metrics
        metrics.set(
            "polyport_websocket_connections", "Open WebSocket connections.", len(self.sockets)
        )
        try:
            try:
                welcome = session.welcome(
                    self.options.ping_interval,
                    {
                        "max_message": self.options.max_message,
                        "max_subscriptions": self.options.max_subscriptions,
                    },
                )
            except ServiceError as exc:  # bad credentials: say so, then close
                send(error_frame(None, exc))
                ws.close(CLOSE_POLICY, "authentication failed")
                return
            send(welcome)
            async for message in ws:
                await session.receive(message)
        finally:
            await session.close()
            self.sockets.discard(ws)
            metrics.set(
                "polyport_websocket_connections", "Open WebSocket connections.", len(self.sockets)
            )

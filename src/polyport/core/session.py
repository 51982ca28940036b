"""The session protocol of bidirectional transports, independent of the transport.

A transport (the WebSocket edge at ``/ws``; any later bidirectional one, such
as a WebRTC data channel) feeds each incoming text message to
:meth:`Session.receive` and gives the session three callables: ``send`` for one
JSON frame, ``deliver`` for a batch of events and ``deliver_frame`` for one
encoded frame (a streamed item) — the last two wait while the client catches
up. The frames are documented in ``docs/websocket-protocol.md``.

``call`` serves unary methods (one ``result``) and server-streaming ones
(``item`` frames, then ``end``, as the SSE edge streams them); client- and
bidirectional-streaming methods are refused with ``INVALID_ARGUMENT`` naming
the method's kind — the protocol has no frame to stream inputs with.

Event frames are the same bytes for every subscriber —
``{"type":"event","event":<envelope>}`` — encoded once per event and kept in
``event.wire["session"]``; a transport wraps them in its own framing once too.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import ValidationError

from polyport.core.auth import Credentials
from polyport.core.contract import EventMessage, MethodKind
from polyport.core.dispatch import Binding, Caller, Dispatcher, PageResult, invalid
from polyport.core.errors import (
    Conflict,
    InvalidArgument,
    NotFound,
    RateLimited,
    RecoveryFailed,
    ServiceError,
)
from polyport.core.events import Event, Pattern, check_channel, parse_patterns
from polyport.core.hub import EventHub, Subscription, settle_published
from polyport.core.runtime import EventCodec

log = logging.getLogger("polyport.session")

_ID_MAX = 64
_CLIENT_TYPES = frozenset({"auth", "subscribe", "unsubscribe", "publish", "call", "cancel", "ping"})
#: How each kind the session cannot carry is named when a call is refused.
_NOT_CARRIED = {
    MethodKind.CLIENT_STREAM: "client-streaming",
    MethodKind.BIDI_STREAM: "bidirectional-streaming",
}


@dataclass(frozen=True, slots=True)
class SessionLimits:
    max_subscriptions: int = 64
    max_channels: int = 64
    #: Server-streaming calls open at once.
    max_streams: int = 64


def event_frame(event: Event) -> bytes:
    """``{"type":"event","event":<envelope>}``, encoded once per event."""
    encoded = event.wire.get("session")
    if encoded is None:
        encoded = event.wire["session"] = b'{"type":"event","event":' + event.to_json() + b"}"
    return encoded


def error_frame(frame_id: Any, error: ServiceError) -> dict[str, Any]:
    body: dict[str, Any] = {"code": error.code, "message": error.message}
    if error.details:
        body["details"] = error.details
    if isinstance(error, RecoveryFailed):
        body["earliest"], body["latest"] = error.earliest, error.latest
    if error.retry_after is not None:
        body["retry_after"] = round(error.retry_after, 3)
    return {"id": frame_id, "type": "error", "error": body}


class _Live:
    """One subscription of a session and the task that feeds its events out."""

    def __init__(self, sid: str, patterns: tuple[Pattern, ...], subscription: Subscription):
        self.sid = sid
        self.patterns = patterns
        self.subscription = subscription
        self.task: asyncio.Task[None] | None = None


class Session:
    """One client's session: its credentials, subscriptions and in-flight calls."""

    def __init__(
        self,
        *,
        dispatcher: Dispatcher,
        hub: EventHub,
        codec: EventCodec,
        send: Callable[[dict[str, Any]], None],
        deliver: Callable[[list[Event]], Awaitable[None]],
        deliver_frame: Callable[[bytes], Awaitable[None]],
        edge: str,
        credentials: Credentials,
        peer: str | None,
        limits: SessionLimits | None = None,
    ) -> None:
        self.dispatcher = dispatcher
        self.hub = hub
        self.codec = codec
        self.send = send
        self.deliver = deliver
        self.deliver_frame = deliver_frame
        self.edge = edge
        self.credentials = credentials
        self.peer = peer
        self.limits = limits or SessionLimits()
        self.subscriptions: dict[str, _Live] = {}
        self._ids = itertools.count(1)
        self.id = secrets.token_hex(8)
        self._calls: set[asyncio.Task[None]] = set()
        #: Server-streaming calls in progress, by the id of their ``call`` frame.
        self.streams: dict[Any, asyncio.Task[None]] = {}
        self.closed = False

    def caller(self) -> Caller:
        return Caller(self.edge, self.credentials, self.peer)

    def welcome(self, heartbeat: float, limits: dict[str, Any]) -> dict[str, Any]:
        principal = self.dispatcher.authenticate(self.caller())
        return {
            "type": "welcome",
            "session": self.id,
            "subject": None if principal.anonymous else principal.subject,
            "heartbeat": heartbeat,
            "limits": limits,
        }

    # -- incoming frames ----------------------------------------------------------------

    async def receive(self, message: str | bytes) -> None:
        """Handle one client message; every outcome is a frame sent back."""
        frame_id: Any = None
        try:
            try:
                frame = orjson.loads(message)
            except orjson.JSONDecodeError:
                raise InvalidArgument("the frame is not JSON", unparseable=True) from None
            if not isinstance(frame, dict):
                raise InvalidArgument("a frame is a JSON object")
            frame_id = frame.get("id")
            if not (
                (isinstance(frame_id, str) and 0 < len(frame_id) <= _ID_MAX)
                or (isinstance(frame_id, int) and not isinstance(frame_id, bool))
            ):
                bad = frame_id
                frame_id = None
                raise InvalidArgument(
                    "every frame needs an 'id': a string (at most 64 characters) or an integer"
                    + ("" if bad is None else f", not {type(bad).__name__}")
                )
            kind = frame.get("type")
            if kind not in _CLIENT_TYPES:
                known = ", ".join(sorted(_CLIENT_TYPES))
                raise InvalidArgument(f"unknown frame type {str(kind)[:40]!r}; known: {known}")
            handler = getattr(self, f"_on_{kind}")
            await handler(frame_id, frame)
        except ServiceError as exc:
            self.send(error_frame(frame_id, exc))

    async def _on_ping(self, frame_id: Any, frame: dict[str, Any]) -> None:
        self.send({"id": frame_id, "type": "pong"})

    async def _on_auth(self, frame_id: Any, frame: dict[str, Any]) -> None:
        token, api_key = frame.get("token"), frame.get("api_key")
        if not isinstance(token, str | None) or not isinstance(api_key, str | None):
            raise InvalidArgument("'token' and 'api_key' are strings")
        if token is None and api_key is None:
            raise InvalidArgument("give 'token' or 'api_key'")
        credentials = Credentials(bearer=token, api_key=api_key)
        principal = self.dispatcher.authenticator.authenticate(credentials)
        self.credentials = credentials
        self.send({"id": frame_id, "type": "authenticated", "subject": principal.subject})
        await self._readmit()

    async def _readmit(self) -> None:
        """Check every subscription again with the session's new credentials.

        Rights were checked at ``subscribe``; an ``auth`` frame may change them.
        A subscription the new principal may not read at all ends with a
        ``subscription-ended`` frame; one whose readable event types changed
        goes on from where it stands (its cursor) with the new ones — nothing
        missed, nothing repeated.
        """
        caller = self.caller()
        for sid, live in list(self.subscriptions.items()):
            try:
                types = self.dispatcher.admit_subscribe(live.patterns, caller)
            except ServiceError as exc:
                self.subscriptions.pop(sid, None)
                self._stop(live)
                ended = error_frame(None, exc)
                self.send(
                    {"type": "subscription-ended", "subscription": sid, "error": ended["error"]}
                )
                continue
            old = live.subscription
            if types == old._types:
                continue
            cursor = old.cursor
            self._stop(live)
            try:
                live.subscription = await self.hub.subscribe(
                    live.patterns, after=cursor, types=types
                )
            except RecoveryFailed as exc:
                live.subscription = await self.hub.subscribe(
                    live.patterns, after="now", types=types
                )
                self.send(
                    {
                        "type": "recovery-failed",
                        "subscription": sid,
                        "earliest": exc.earliest,
                        "latest": exc.latest,
                    }
                )
            live.task = asyncio.create_task(self._pump(live), name=f"polyport-session-{sid}")

    async def _on_subscribe(self, frame_id: Any, frame: dict[str, Any]) -> None:
        channels = frame.get("channels")
        if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
            raise InvalidArgument("'channels' is a list of channel names or patterns")
        after = frame.get("after", "now")
        if not isinstance(after, str):
            raise InvalidArgument("'after' is a cursor string")
        patterns = parse_patterns(channels, limit=self.limits.max_channels)
        if len(self.subscriptions) >= self.limits.max_subscriptions:
            raise RateLimited(f"at most {self.limits.max_subscriptions} subscriptions per session")
        for live in self.subscriptions.values():
            if any(p.overlaps(q) for p in patterns for q in live.patterns):
                raise Conflict(
                    f"these channels overlap subscription {live.sid}; "
                    "unsubscribe it or subscribe to channels it does not cover"
                )
        types = self.dispatcher.admit_subscribe(patterns, self.caller())
        reply: dict[str, Any] = {"id": frame_id, "type": "subscribed", "recovered": True}
        try:
            subscription = await self.hub.subscribe(patterns, after=after, types=types)
        except RecoveryFailed as exc:
            subscription = await self.hub.subscribe(patterns, after="now", types=types)
            reply.update(recovered=False, earliest=exc.earliest, latest=exc.latest)
        sid = f"s{next(self._ids)}"
        live = _Live(sid, patterns, subscription)
        self.subscriptions[sid] = live
        reply["subscription"] = sid
        reply["channels"] = [p.text for p in patterns]
        reply["cursor"] = subscription.cursor  # resume from here if nothing arrives first
        self.send(reply)
        live.task = asyncio.create_task(self._pump(live), name=f"polyport-session-{sid}")

    async def _pump(self, live: _Live) -> None:
        """Feed one subscription's events out, a batch per wake-up."""
        while not self.closed:
            try:
                events = await live.subscription.batch()
            except RecoveryFailed as exc:
                self.send(
                    {
                        "type": "recovery-failed",
                        "subscription": live.sid,
                        "earliest": exc.earliest,
                        "latest": exc.latest,
                    }
                )
                live.subscription.close()
                live.subscription = await self.hub.subscribe(
                    live.patterns, after="now", types=live.subscription._types
                )
                continue
            if not events:
                return
            await self.deliver(events)  # paced: waits while the client catches up

    async def _on_unsubscribe(self, frame_id: Any, frame: dict[str, Any]) -> None:
        sid = frame.get("subscription")
        live = self.subscriptions.pop(sid, None) if isinstance(sid, str) else None
        if live is None:
            raise NotFound(f"no subscription {str(sid)[:40]!r} in this session")
        self._stop(live)
        self.send({"id": frame_id, "type": "unsubscribed", "subscription": sid})

    async def _on_publish(self, frame_id: Any, frame: dict[str, Any]) -> None:
        name = frame.get("event")
        if not isinstance(name, str) or name not in self.dispatcher.service.events:
            raise NotFound(f"no event type {str(name)[:80]!r}")
        event_type = self.dispatcher.service.events[name]
        self.dispatcher.admit_publish(event_type, self.caller())
        try:
            data = self.codec.adapter(name).validate_python(frame.get("data"))
        except ValidationError as exc:
            raise invalid(exc) from None
        channel = event_type.channel_for(data)
        asked = frame.get("channel")
        if asked is not None:
            if not isinstance(asked, str) or not Pattern.parse(event_type.channel_pattern).matches(
                check_channel(asked)
            ):
                raise InvalidArgument(f"channel must fit {event_type.channel}")
            channel = asked
        message = EventMessage(event_type, data, channel)
        event = await self.hub.publish(channel, name, self.codec.encode(message))
        await settle_published()  # "published" means durable
        self.send({"id": frame_id, "type": "published", "event_id": event.id})

    async def _on_call(self, frame_id: Any, frame: dict[str, Any]) -> None:
        method = frame.get("method")
        args = frame.get("args", {})
        if not isinstance(method, str):
            raise InvalidArgument("'method' names a method")
        if not isinstance(args, dict):
            raise InvalidArgument("'args' is an object of named arguments")
        binding = self.dispatcher.binding(method)
        refused = _NOT_CARRIED.get(binding.kind)
        if refused is not None:
            message = (
                f"{method} is a {refused} method: the session protocol carries unary and "
                "server-streaming calls only; call it over gRPC"
            )
            raise InvalidArgument(message, details=[{"field": "method", "message": message}])
        if binding.kind is MethodKind.SERVER_STREAM:
            self._open_stream(frame_id, binding, args)
            return
        # Calls run concurrently: a slow method must not hold up the session.
        task = asyncio.create_task(self._call(frame_id, binding, args))
        self._calls.add(task)
        task.add_done_callback(self._calls.discard)

    def _open_stream(self, frame_id: Any, binding: Binding, args: dict[str, Any]) -> None:
        if frame_id in self.streams:
            raise Conflict(f"a stream with id {frame_id!r} is open; ids of open streams differ")
        if len(self.streams) >= self.limits.max_streams:
            raise RateLimited(f"at most {self.limits.max_streams} open streams per session")
        task = asyncio.create_task(self._stream(frame_id, binding, args))
        self.streams[frame_id] = task
        task.add_done_callback(lambda _: self._stream_done(frame_id, task))

    def _stream_done(self, frame_id: Any, task: asyncio.Task[None]) -> None:
        if self.streams.get(frame_id) is task:
            del self.streams[frame_id]

    async def _stream(self, frame_id: Any, binding: Binding, args: dict[str, Any]) -> None:
        """``item`` frames, paced to the client, then ``end`` (or one ``error``)."""
        head = b'{"id":' + orjson.dumps(frame_id) + b',"type":"item","item":'
        try:
            items = await self.dispatcher.open_stream(binding, args, self.caller())
        except ServiceError as exc:
            self.send(error_frame(frame_id, exc))
            return
        count = 0
        try:
            async for item in items:
                count += 1
                await self.deliver_frame(head + binding.dump_json(item) + b"}")
            self.send({"id": frame_id, "type": "end", "items": count})
        except ServiceError as exc:
            self.send(error_frame(frame_id, exc))
        finally:
            close = getattr(items, "aclose", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    await close()

    async def _on_cancel(self, frame_id: Any, frame: dict[str, Any]) -> None:
        call = frame.get("call")
        known = isinstance(call, str | int) and not isinstance(call, bool)
        task = self.streams.pop(call, None) if known else None
        if task is None:
            raise NotFound(f"no open stream {str(call)[:40]!r} in this session")
        task.cancel()
        self.send({"id": frame_id, "type": "cancelled", "call": call})

    async def _call(self, frame_id: Any, binding: Any, args: dict[str, Any]) -> None:
        try:
            result = await self.dispatcher.call(binding, args, self.caller())
            if isinstance(result, PageResult):
                payload = {
                    "items": binding.dump_python(result.items),
                    "next_cursor": result.next_cursor,
                }
            else:
                payload = binding.dump_python(result)
            self.send({"id": frame_id, "type": "result", "result": payload})
        except ServiceError as exc:
            self.send(error_frame(frame_id, exc))

    # -- ending ---------------------------------------------------------------------------

    def _stop(self, live: _Live) -> None:
        live.subscription.close()
        if live.task is not None:
            live.task.cancel()

    async def close(self) -> None:
        """End every subscription and in-flight call."""
        self.closed = True
        for live in self.subscriptions.values():
            self._stop(live)
        streams = list(self.streams.values())
        tasks = [
            t for t in (*self._calls, *streams, *(s.task for s in self.subscriptions.values())) if t
        ]
        for task in (*self._calls, *streams):
            task.cancel()
        self.streams.clear()
        self.subscriptions.clear()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

"""MQTT 5 request/response: a PUBLISH to ``$polyport/call/{method}`` calls the method.

    PUBLISH $polyport/call/calibrate  {"sensor": "s1", "offset": 0.5}
            Response Topic replies/dash-1 · Correlation Data b"7" · QoS 1
        ─▶ PUBACK 0x00 (accepted: an answer will come)
        ─▶ Dispatcher.call: authentication, scopes, rate limit, validation, deadline
        ─▶ PUBLISH replies/dash-1  {"sensor": "s1", "offset": 0.5}     (the result's JSON)
                   Correlation Data b"7" · content type application/json · QoS 1
           or, failed: {"code": "PERMISSION_DENIED", "message": "missing scope: calibrate"}
                   with user properties error-code, reason-code (0x87), reason-string

The answer goes to the calling connection only: it is not an event, it is
not stored, no other client or pattern sees it (a response topic need not be
a channel, and need not be subscribed to). ``$polyport/…`` is never a channel
nor an open topic, so request topics cannot collide with events. Errors come
from the core's one hierarchy through the edge's error table
(:mod:`polyport.edges.mqtt.errors`); an internal error's message never leaves
the process. See ``docs/mqtt.md``, "Request/response".
"""

from __future__ import annotations

import asyncio
import contextlib

import orjson

from polyport.core.contract import MethodKind
from polyport.core.dispatch import Caller, Dispatcher, PageResult, internal_error
from polyport.core.errors import NotFound, ServiceError
from polyport.edges.mqtt.codec import (
    CONTENT_TYPE,
    CORRELATION_DATA,
    PAYLOAD_FORMAT,
    USER_PROPERTY,
    properties,
    text,
)
from polyport.edges.mqtt.errors import message_of, reason_of
from polyport.edges.mqtt.outbound import CONTENT, Outbox
from polyport.edges.mqtt.packets import Publish, Reason
from polyport.edges.mqtt.topics import topic_name_is_valid

#: A PUBLISH to ``CALL_PREFIX + method`` is a call of ``method``.
CALL_PREFIX = "$polyport/call/"


def is_call(topic: str) -> bool:
    return topic.startswith(CALL_PREFIX)


def error_payload(error: ServiceError) -> tuple[bytes, list[tuple[int, object]]]:
    """A failed call's answer: its JSON payload and user properties."""
    reason = reason_of(error)
    message = message_of(error)
    body: dict[str, object] = {"code": error.code, "message": message}
    if error.details and type(error).code != "INTERNAL":
        body["details"] = error.details
    if error.retry_after is not None:
        body["retry_after"] = round(error.retry_after, 3)
    if error.request_id:
        body["request_id"] = error.request_id
    props: list[tuple[int, object]] = [
        (USER_PROPERTY, ("error-code", error.code)),
        (USER_PROPERTY, ("reason-code", f"0x{reason:02x}")),
        (USER_PROPERTY, ("reason-string", message)),
    ]
    return orjson.dumps(body), props


class MethodCalls:
    """The calls one connection has running, at most ``limit`` at once."""

    def __init__(self, dispatcher: Dispatcher, outbox: Outbox, caller: Caller, limit: int) -> None:
        self.dispatcher = dispatcher
        self.outbox = outbox
        self.caller = caller
        self.limit = limit
        self.running: set[asyncio.Task[None]] = set()

    def refusal(self, packet: Publish) -> tuple[int, str] | None:
        """Why a request cannot even be answered (reason code, text), or None."""
        topic = packet.response_topic
        if topic is None:
            return (
                Reason.IMPLEMENTATION_SPECIFIC_ERROR,
                "a call needs a Response Topic (and may carry Correlation Data)",
            )
        if not topic or not topic_name_is_valid(topic):
            return Reason.TOPIC_NAME_INVALID, "the Response Topic is not a topic name"
        if len(self.running) >= self.limit:
            return Reason.QUOTA_EXCEEDED, f"at most {self.limit} calls run at once per connection"
        return None

    def start(self, packet: Publish) -> None:
        """Run the call of ``packet`` (refusal checked): its answer is published when done."""
        task = asyncio.create_task(self._call(packet), name="polyport-mqtt-call")
        self.running.add(task)
        task.add_done_callback(self.running.discard)

    async def close(self) -> None:
        """The connection ended: calls still running are cancelled, their answers dropped."""
        for task in list(self.running):
            task.cancel()
        for task in list(self.running):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _call(self, packet: Publish) -> None:
        name = packet.topic[len(CALL_PREFIX) :]
        caller = self.caller
        if packet.message_expiry is not None:
            # A request that expires in N seconds is not worth answering later: its
            # deadline (and the handler's Context.deadline) is N seconds.
            caller = Caller(
                caller.edge, caller.credentials, caller.peer, timeout=float(packet.message_expiry)
            )
        props: list[tuple[int, object]] = [(PAYLOAD_FORMAT, 1), (CONTENT_TYPE, CONTENT)]
        if packet.correlation_data is not None:
            props.append((CORRELATION_DATA, packet.correlation_data))
        try:
            binding = self.dispatcher.bindings.get(name)
            if binding is None:
                raise NotFound(f"no method named {name[:100]!r}")
            if binding.kind is not MethodKind.UNARY:
                raise NotFound(
                    f"{name} is a streaming method: MQTT calls unary methods only; "
                    "stream it over SSE, WebSocket or gRPC"
                )
            value = await self.dispatcher.call(binding, packet.payload, caller)
            if isinstance(value, PageResult):
                payload = (
                    b'{"items":'
                    + binding.dump_json(value.items)
                    + b',"next_cursor":'
                    + orjson.dumps(value.next_cursor)
                    + b"}"
                )
            else:
                payload = binding.dump_json(value)
        except ServiceError as exc:
            payload, more = error_payload(exc)
            props += more
        except Exception as exc:  # a result that would not encode: the service's fault
            payload, more = error_payload(internal_error(f"MQTT call of {name}", exc, caller))
            props += more
        assert packet.response_topic is not None
        qos = packet.qos
        outbox = self.outbox
        await outbox.ready(qos)
        outbox.put(text(packet.response_topic), properties(props) + payload, qos, "", 0)
        with contextlib.suppress(TimeoutError, ConnectionError):
            await outbox.drain()

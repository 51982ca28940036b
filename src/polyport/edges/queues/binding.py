"""The service's message queues over HTTP.

POST   /v{n}/queues/{name}                    send one message; 202 with its id
POST   /v{n}/queues/{name}/call[?timeout=]    send it as a request; 200 with the consumer's reply
GET    /v{n}/queues                           every queue and its counts (admin)
GET    /v{n}/queues/{name}                    one queue: counts, consumer (admin)
GET    /v{n}/queues/{name}/messages           messages waiting or in flight (admin)
GET    /v{n}/queues/{name}/dead[?limit=&after=]   the dead letters, with bodies (admin)
POST   /v{n}/queues/{name}/redrive            dead letters ready again (admin):
                                              all, or those of {"ids": [...]}
DELETE /v{n}/queues/{name}/messages?confirm={name}   delete every message of the queue (admin)

Sending takes the message as the JSON body, validated against the queue's
model (400 unreadable, 422 invalid, 413 too large, 415 not JSON), from callers holding the
queue's scopes (anyone, for a ``public`` queue); an ``Idempotency-Key``
header is the message id (a repeat within the dedup window is stored once
and answered ``"duplicate": true``), ``?key=`` its ordering key and
``?delay=`` seconds to hold it back. The answer is 202 once the message is
durable. Admin routes need the scope ``queues:admin``.
"""

from __future__ import annotations

from typing import Any

import orjson

from polyport.core.broker import QueuedMessage, QueueStats, check_name
from polyport.core.errors import InvalidArgument
from polyport.core.queuerunner import (
    EDGE,
    MAX_CALL_TIMEOUT,
    MAX_DELAY,
    QueueBinding,
    QueueRunner,
)
from polyport.core.queues import traceparent_of
from polyport.core.runtime import Endpoint as CatalogEntry
from polyport.core.runtime import Runtime
from polyport.edges.kinds import ChannelEdge, HttpEdge
from polyport.http.asyncapi import AsyncApiDocument
from polyport.http.openapi import OpenApiDocument
from polyport.http.request import Request, Response
from polyport.http.router import Endpoint, Route

#: The scope that may inspect, redrive and purge queues (``*`` holds it too).
ADMIN_SCOPE = "queues:admin"
NO_STORE = (b"cache-control", b"no-store")
#: The most dead letters or messages one listing returns.
MAX_LIMIT = 500


class QueuesEdge(HttpEdge, ChannelEdge):
    """Serves sending to the service's queues, and their operations, over HTTP."""

    name = EDGE

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.runner: QueueRunner = runtime.queues
        self.prefix = f"/v{runtime.spec.version}/queues"

    async def start(self) -> None:
        """Nothing of its own: the queues run in the core."""

    async def stop(self) -> None:
        """Nothing of its own."""

    def routes(self) -> list[Route]:
        if not self.runner.bindings:
            return []
        base = self.prefix
        routes = [Route("GET", base, self._all, "queues")]
        for name, binding in self.runner.bindings.items():
            path = f"{base}/{name}"
            routes += [
                Route("POST", path, self._sender(binding), f"queue_{name}_send"),
                Route("POST", f"{path}/call", self._caller(binding), f"queue_{name}_call"),
                Route("GET", path, self._info(binding), f"queue_{name}"),
                Route("GET", f"{path}/messages", self._peeker(name), f"queue_{name}_messages"),
                Route("DELETE", f"{path}/messages", self._purger(name), f"queue_{name}_purge"),
                Route("GET", f"{path}/dead", self._dead(name), f"queue_{name}_dead"),
                Route("POST", f"{path}/redrive", self._redriver(name), f"queue_{name}_redrive"),
            ]
        return routes

    def catalog(self) -> list[CatalogEntry]:
        return [
            CatalogEntry("queues", name, "method", f"POST {self.prefix}/{name}")
            for name in self.runner.bindings
        ]

    def describe(self, doc: OpenApiDocument) -> None:
        from polyport.edges.queues.openapi import describe

        describe(self, doc)

    def describe_channels(self, doc: AsyncApiDocument) -> None:
        from polyport.edges.queues.openapi import describe_channels

        describe_channels(self, doc)

    # -- sending ----------------------------------------------------------------------------

    def _sender(self, binding: QueueBinding) -> Endpoint:
        queue = binding.queue
        dispatcher = self.runtime.dispatcher
        runner = self.runner
        max_message = runner.config.max_message

        async def send(request: Request) -> Response:
            caller = request.caller(EDGE)
            dispatcher.admit(queue.public, queue.scopes, caller)
            # The connection refuses more than the limit (413) without reading it all.
            body = await request.json_body(max_message)
            sent = await runner.send_encoded(
                binding,
                binding.encode_json(body),
                id=request.header(b"idempotency-key"),
                key=request.query.get("key"),
                delay=_delay(request.query.get("delay")),
                headers=_traced(caller.trace_id),
            )
            answer = {"id": sent.id, "queue": sent.queue, "duplicate": sent.duplicate}
            return Response(202, orjson.dumps(answer), headers=[NO_STORE])

        return send

    def _caller(self, binding: QueueBinding) -> Endpoint:
        queue = binding.queue
        dispatcher = self.runtime.dispatcher
        runner = self.runner
        max_message = runner.config.max_message

        async def call(request: Request) -> Response:
            caller = request.caller(EDGE)
            dispatcher.admit(queue.public, queue.scopes, caller)
            body = await request.json_body(max_message)
            timeout = _seconds(request.query.get("timeout"), "timeout", 30.0, MAX_CALL_TIMEOUT)
            result = await runner.call_encoded(
                binding,
                binding.encode_json(body),
                timeout=timeout,
                key=request.query.get("key"),
                headers=_traced(caller.trace_id),
            )
            return Response(
                200, binding.reply_adapter.dump_json(result, by_alias=True), headers=[NO_STORE]
            )

        return call

    # -- operations (admin) -------------------------------------------------------------------

    def _admit(self, request: Request) -> None:
        self.runtime.dispatcher.admit(False, frozenset({ADMIN_SCOPE}), request.caller(EDGE))

    async def _all(self, request: Request) -> Response:
        self._admit(request)
        items = [
            {"name": name, **_stats(await self.runner.stats(name))} for name in self.runner.bindings
        ]
        body = {"broker": self.runner.broker.kind, "queues": items}
        return Response(200, orjson.dumps(body), headers=[NO_STORE])

    def _info(self, binding: QueueBinding) -> Endpoint:
        async def info(request: Request) -> Response:
            self._admit(request)
            consumer = binding.consumer
            body: dict[str, Any] = {
                "name": binding.name,
                "broker": self.runner.broker.kind,
                **_stats(await self.runner.stats(binding.name)),
                "consumer": None
                if consumer is None
                else {
                    "concurrency": consumer.concurrency,
                    "prefetch": consumer.prefetch,
                    "max_attempts": consumer.max_attempts,
                    "timeout": consumer.timeout,
                    "lease": consumer.lease,
                },
                "dedup_window": binding.queue.dedup_window,
            }
            return Response(200, orjson.dumps(body), headers=[NO_STORE])

        return info

    def _peeker(self, name: str) -> Endpoint:
        async def messages(request: Request) -> Response:
            self._admit(request)
            limit = request.query_integer("limit", 50, 1, MAX_LIMIT)
            found = await self.runner.peek(name, limit=limit)
            return _listing(name, found, limit)

        return messages

    def _dead(self, name: str) -> Endpoint:
        async def dead(request: Request) -> Response:
            self._admit(request)
            limit = request.query_integer("limit", 50, 1, MAX_LIMIT)
            after = request.query.get("after")
            if after is not None and len(after) > 200:
                raise InvalidArgument("after must be a cursor from a previous page")
            found = await self.runner.dead(name, limit=limit, after=after)
            return _listing(name, found, limit)

        return dead

    def _redriver(self, name: str) -> Endpoint:
        async def redrive(request: Request) -> Response:
            self._admit(request)
            body = await request.body()
            ids: list[str] | None = None
            if body.strip():
                try:
                    parsed = orjson.loads(body)
                except orjson.JSONDecodeError:
                    raise InvalidArgument("the body is not valid JSON", unparseable=True) from None
                raw = parsed.get("ids") if isinstance(parsed, dict) else None
                if (
                    not isinstance(raw, list)
                    or not 1 <= len(raw) <= 1000
                    or not all(isinstance(i, str) for i in raw)
                ):
                    raise InvalidArgument(
                        'the body is {"ids": [...]}: 1 to 1000 message ids (or no body: all)',
                        details=[{"field": "ids", "message": "1-1000 strings"}],
                    )
                for id_ in raw:
                    check_name("id", id_)
                ids = raw
            count = await self.runner.redrive(name, ids)
            return Response(200, orjson.dumps({"redriven": count}), headers=[NO_STORE])

        return redrive

    def _purger(self, name: str) -> Endpoint:
        async def purge(request: Request) -> Response:
            self._admit(request)
            if request.query.get("confirm") != name:
                raise InvalidArgument(
                    f"purging deletes every message of queue {name}: say so with ?confirm={name}",
                    details=[{"field": "confirm", "message": f"must be {name}"}],
                )
            count = await self.runner.purge(name)
            return Response(200, orjson.dumps({"deleted": count}), headers=[NO_STORE])

        return purge


def _traced(trace_id: str | None) -> dict[str, str] | None:
    """The ``traceparent`` a message carries on, when the request came with one."""
    traced = traceparent_of(trace_id)
    return None if traced is None else {"traceparent": traced}


def _delay(raw: str | None) -> float | None:
    return None if raw is None else _seconds(raw, "delay", 0.0, MAX_DELAY, low=0.0)


def _seconds(raw: str | None, name: str, default: float, high: float, low: float = 0.001) -> float:
    """A number of seconds from ``low`` to ``high`` given as a query value."""
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not low <= value <= high:  # also refuses nan
        raise InvalidArgument(
            f"{name} is seconds from {low:g} to {high:g}",
            details=[{"field": name, "message": "out of range"}],
        )
    return value


def _stats(stats: QueueStats) -> dict[str, int]:
    return {"waiting": stats.waiting, "in_flight": stats.in_flight, "dead": stats.dead}


def _listing(name: str, found: list[QueuedMessage], limit: int) -> Response:
    items = b",".join(_message(m) for m in found)
    cursor = found[-1].cursor if len(found) == limit else None
    head = orjson.dumps({"queue": name, "next_cursor": cursor})
    return Response(200, head[:-1] + b',"items":[' + items + b"]}", headers=[NO_STORE])


def _message(message: QueuedMessage) -> bytes:
    """A listed message as JSON, its body as it was stored (JSON, unless another client
    wrote to the broker: then a string)."""
    meta = orjson.dumps(
        {
            "id": message.id,
            "state": message.state,
            "key": message.key,
            "attempts": message.attempts,
            "sent": message.sent,
            "due": message.due,
            "died": message.died,
            "error": message.error,
            "headers": dict(message.headers),
        }
    )
    try:
        orjson.loads(message.body)
        body = message.body
    except orjson.JSONDecodeError:
        body = orjson.dumps(message.body.decode("utf-8", "replace"))
    return meta[:-1] + b',"body":' + body + b"}"

"""JSON-RPC 2.0 processing, independent of what carries it (HTTP or WebSocket).

    {"jsonrpc": "2.0", "method": "shop.multiply", "params": {"a": 5, "b": 7}, "id": 1}
    → {"jsonrpc": "2.0", "result": 35, "id": 1}

Method names are ``{service}.{method}``; the bare method name and its
camelCase form (``createUser``) are accepted too, so the guide's
``server.createUser(name=…, email=…)`` style works. Params may be named (an
object) or positional (an array, in the order of the method's parameters).
Requests without an ``id`` are notifications: run, never answered. Batches
run concurrently and are answered in request order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import orjson

from polyport.core.contract import MethodKind
from polyport.core.dispatch import Binding, Caller, Dispatcher, PageResult
from polyport.core.errors import InvalidArgument, ServiceError
from polyport.rpccodes import InvalidRequest, MethodNotFound, rpc_code

VERSION = "2.0"


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def error_object(error: ServiceError) -> dict[str, Any]:
    """The ``error`` member for ``error``: its code from :mod:`polyport.rpccodes`."""
    data: dict[str, Any] = {"code": error.code}
    if error.details:
        data["details"] = error.details
    if error.retry_after is not None:
        data["retry_after"] = round(error.retry_after, 3)
    if error.request_id:
        data["request_id"] = error.request_id
    return {"code": rpc_code(error), "message": error.message, "data": data}


def error_response(error: ServiceError, request_id: Any) -> bytes:
    return orjson.dumps({"jsonrpc": VERSION, "error": error_object(error), "id": request_id})


#: What ``id`` may be (besides null; a bool is not a number here).
_ID_TYPES = (str, int, float)
_PARAMS_TYPES = (dict, list)


_KINDS = {
    MethodKind.SERVER_STREAM: "server-streaming",
    MethodKind.CLIENT_STREAM: "client-streaming",
    MethodKind.BIDI_STREAM: "bidirectional-streaming",
}


class JsonRpc:
    """Answers JSON-RPC payloads for one service through the dispatch pipeline."""

    def __init__(
        self,
        dispatcher: Dispatcher,
        *,
        max_batch: int,
        discover: Callable[[], bytes],
    ) -> None:
        self.dispatcher = dispatcher
        self.max_batch = max_batch
        self._discover = discover
        service = dispatcher.service.name
        self.methods: dict[str, Binding] = {}
        #: Streaming methods by every alias: named precisely when called here.
        self.streams: dict[str, Binding] = {}
        for name, binding in dispatcher.bindings.items():
            # Streams are served by SSE, WebSocket and gRPC, not by JSON-RPC.
            table = self.methods if binding.kind is MethodKind.UNARY else self.streams
            for alias in (f"{service}.{name}", name, camel(name), f"{service}.{camel(name)}"):
                table.setdefault(alias, binding)
        self.methods.pop("rpc.discover", None)  # the OpenRPC document, whatever the service

    async def handle(self, payload: bytes, caller: Caller) -> bytes | None:
        """The response to ``payload`` (None when it held only notifications)."""
        try:
            request = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return error_response(
                InvalidArgument("the body is not valid JSON", unparseable=True), None
            )
        if isinstance(request, list):
            return await self._batch(request, caller)
        return await self._one(request, caller)

    async def _batch(self, requests: list[Any], caller: Caller) -> bytes | None:
        if not requests:
            return error_response(InvalidRequest("an empty batch is not a request"), None)
        if len(requests) > self.max_batch:
            return error_response(
                InvalidRequest(f"a batch holds at most {self.max_batch} requests"), None
            )
        answers = await asyncio.gather(*(self._one(r, caller) for r in requests))
        present = [a for a in answers if a is not None]
        if not present:
            return None
        return b"[" + b",".join(present) + b"]"

    async def _one(self, request: Any, caller: Caller) -> bytes | None:
        request_id: Any = None
        try:
            if not isinstance(request, dict):
                raise InvalidRequest("a request is a JSON object")
            notification = "id" not in request
            request_id = request.get("id")
            if request_id is not None and (
                type(request_id) is bool or not isinstance(request_id, _ID_TYPES)
            ):
                request_id = None
                raise InvalidRequest("'id' is a string, a number or null")
            if request.get("jsonrpc") != VERSION:
                raise InvalidRequest("'jsonrpc' must be exactly \"2.0\"")
            method = request.get("method")
            if not isinstance(method, str):
                raise InvalidRequest("'method' is a string")
            params = request.get("params", {})
            if not isinstance(params, _PARAMS_TYPES):
                raise InvalidRequest("'params' is an object or an array")
        except InvalidRequest as exc:
            return error_response(exc, request_id)
        # The call is inlined (no coroutine of its own): this is the hot path.
        try:
            binding = self.methods.get(method)
            if binding is None:
                if method != "rpc.discover":
                    raise self._not_found(method)
                result = self._discover()
            else:
                if type(params) is not dict:
                    params = self._named(binding, params)
                value = await self.dispatcher.call(binding, params, caller)
                if isinstance(value, PageResult):
                    result = (
                        b'{"items":'
                        + binding.dump_json(value.items)
                        + b',"next_cursor":'
                        + orjson.dumps(value.next_cursor)
                        + b"}"
                    )
                else:
                    result = binding.dump_json(value)
        except ServiceError as exc:
            if notification:
                return None
            return error_response(exc, request_id)
        if notification:
            return None
        if type(request_id) is int:
            return b'{"jsonrpc":"2.0","result":%b,"id":%d}' % (result, request_id)
        return b'{"jsonrpc":"2.0","result":%b,"id":%b}' % (result, orjson.dumps(request_id))

    def _not_found(self, method: str) -> MethodNotFound:
        stream = self.streams.get(method)
        if stream is None:
            return MethodNotFound(f"no method named {method[:100]!r}")
        if stream.kind is MethodKind.SERVER_STREAM:
            where = "stream it over SSE, WebSocket (/ws) or gRPC"
        else:
            where = "call it over gRPC"
        kind = _KINDS[stream.kind]
        return MethodNotFound(
            f"{stream.name} is a {kind} method and JSON-RPC carries unary methods only; {where}"
        )

    @staticmethod
    def _named(binding: Binding, params: dict[str, Any] | list[Any]) -> dict[str, Any]:
        """Named parameters from positional ones (in the order of the method's parameters)."""
        if isinstance(params, dict):
            return params
        names = [p.name for p in binding.spec.params]
        if len(params) > len(names):
            raise InvalidArgument(
                f"{binding.name} takes at most {len(names)} positional parameters"
            )
        return dict(zip(names, params, strict=False))

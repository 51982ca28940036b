"""polyport's HTTP application as an ASGI app, for mounting under any ASGI server.

polyport serves itself with its own HTTP/1.1 server (:mod:`polyport.server`);
this adapter exists so a node's HTTP edges can also run behind uvicorn,
Hypercorn or inside another ASGI application. WebSocket edges need polyport's
own server and are refused here with close code 1011.
"""

from __future__ import annotations

import asyncio
from typing import Any

from polyport.core.errors import InvalidArgument, PayloadTooLarge
from polyport.http.app import HttpApp
from polyport.http.request import Headers, Request, response_headers

Scope = dict[str, Any]


class AsgiStream:
    """A chunked response over ASGI ``send``: writes queue, a pump sends them."""

    def __init__(self, send: Any, start: dict[str, Any], disconnected: asyncio.Event) -> None:
        self._send = send
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._size = 0
        self._done = asyncio.Event()
        self._disconnected = disconnected
        self._pump = asyncio.ensure_future(self._run(start))

    @property
    def closed(self) -> bool:
        return self._done.is_set() or self._disconnected.is_set()

    def write(self, data: bytes) -> None:
        if not self.closed:
            self._size += len(data)
            self._queue.put_nowait(data)

    def buffered(self) -> int:
        return self._size

    async def drain(self, seconds: float) -> bool:
        # ASGI servers pace ``send`` themselves: wait until the pump has sent everything.
        try:
            async with asyncio.timeout(seconds):
                await self._queue.join()
        except TimeoutError:
            return False
        return True

    async def wait_closed(self) -> None:
        done = asyncio.ensure_future(self._done.wait())
        gone = asyncio.ensure_future(self._disconnected.wait())
        await asyncio.wait({done, gone}, return_when=asyncio.FIRST_COMPLETED)
        done.cancel()
        gone.cancel()

    def close(self) -> None:
        self._queue.put_nowait(None)

    async def _run(self, start: dict[str, Any]) -> None:
        try:
            await self._send(start)
            while (data := await self._queue.get()) is not None:
                self._size -= len(data)
                await self._send({"type": "http.response.body", "body": data, "more_body": True})
                self._queue.task_done()
            await self._send({"type": "http.response.body", "body": b""})
        except OSError:
            pass
        finally:
            self._done.set()


class AsgiConnection:
    """The :class:`~polyport.http.request.Connection` of one ASGI HTTP request."""

    def __init__(self, scope: Scope, receive: Any, send: Any) -> None:
        self.scope = scope
        self.receive = receive
        self.send = send
        self.disconnected = asyncio.Event()
        self.stream: AsgiStream | None = None

    async def read_body(self, limit: int) -> bytes:
        for name, value in self.scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    raise InvalidArgument("bad Content-Length", unparseable=True) from None
                if declared > limit:
                    raise PayloadTooLarge(f"the body is over the {limit}-byte limit")
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                self.disconnected.set()
                break
            chunk = message.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(f"the body is over the {limit}-byte limit")
                chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    async def wait_disconnect(self) -> None:
        while not self.disconnected.is_set():
            if (await self.receive())["type"] == "http.disconnect":
                self.disconnected.set()

    def start_stream(self, status: int, headers: Headers, buffer: int) -> AsgiStream:
        start = {"type": "http.response.start", "status": status, "headers": headers}
        self.stream = AsgiStream(self.send, start, self.disconnected)
        self._watch = asyncio.ensure_future(self.wait_disconnect())
        return self.stream


class AsgiApp:
    """``HttpApp`` as an ASGI 3 application."""

    def __init__(self, app: HttpApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "websocket":
            await send(
                {
                    "type": "websocket.close",
                    "code": 1011,
                    "reason": "WebSocket needs polyport's own server",
                }
            )
        elif kind == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return

    async def _http(self, scope: Scope, receive: Any, send: Any) -> None:
        connection = AsgiConnection(scope, receive, send)
        peer = scope.get("client")
        # The ASGI server may have read forwarding headers already (uvicorn's
        # --forwarded-allow-ips): then the client is an untrusted peer here.
        client = self.app.proxies.client(
            peer[0] if peer else None, scope["headers"], scope.get("scheme", "http")
        )
        raw_path = scope.get("raw_path")
        request = Request(
            scope["method"],
            raw_path.decode("latin-1") if raw_path else scope["path"],
            scope.get("query_string", b""),
            scope["headers"],
            client.address,
            connection,
            self.app.max_body,
            client.scheme,
        )
        response, head = await self.app.handle(request)
        if response is None:
            if connection.stream is not None:
                await connection.stream.wait_closed()
            return
        headers = response_headers(response)
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        body = b"" if head or response.status in (204, 304) else response.body
        await send({"type": "http.response.body", "body": body})

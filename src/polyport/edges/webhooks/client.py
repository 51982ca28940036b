"""A small HTTP/1.1 client for webhook POSTs: keep-alive pools, one buffer per request.

General clients cost more per request than a webhook needs (httpx spends
~300 µs of CPU on a POST); this one writes the request as one buffer,
parses the answer with httptools (the parser the server uses) and keeps
connections open per endpoint, so a busy endpoint costs one write and one
read per delivery. What it does not do, on purpose: follow redirects (a 3xx
is the answer), send cookies, or decompress.

Every new connection goes through the :class:`~.ssrf.AddressPolicy`: the host
is resolved, every answer checked, and the socket connected to the checked
address itself, so nothing reaches a refused address — not even a SYN.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections import deque
from dataclasses import dataclass
from typing import cast

import httptools

from polyport._version import __version__
from polyport.edges.webhooks.ssrf import AddressPolicy, IPAddress, Refused, Target

USER_AGENT = f"polyport-webhooks/{__version__}".encode()
#: Bytes of a response read at most; a bigger answer is cut and its connection closed.
MAX_READ = 256 * 1024
#: How long an idle pooled connection is kept.
IDLE_TIMEOUT = 30.0


class DeliveryError(Exception):
    """No HTTP answer: unreachable, timed out, or garbled."""


class AttemptTimeout(DeliveryError):
    """No complete answer before the attempt's deadline."""


@dataclass(frozen=True, slots=True)
class HttpAnswer:
    """What the receiver answered."""

    status: int
    headers: dict[bytes, bytes]  # lower-case names; a repeated header keeps its last value
    body: bytes  # at most the size asked for


class _Connection(asyncio.Protocol):
    """One keep-alive connection; one request at a time."""

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[HttpAnswer] | None = None
        # One timer per request instead of asyncio.timeout(): a third of the cost.
        self.timer: asyncio.TimerHandle | None = None
        self.closed = False
        self.reusable = True
        self.received = False
        self.idle_since = 0.0
        self._headers: dict[bytes, bytes] = {}
        self._body = bytearray()
        self._size = 0
        self._header_name = b""

    # -- asyncio.Protocol ----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses; they quack alike.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.received = True
        if self.waiter is None:  # nothing asked for: the server is misbehaving
            self.close()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(DeliveryError("the receiver switched protocols"))
        except httptools.HttpParserError as exc:
            self._fail(DeliveryError(f"malformed HTTP response: {exc}"))

    def eof_received(self) -> bool | None:
        self._ended()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._ended(exc)

    # -- httptools callbacks ------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.lower()] = value

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        room = self.keep - len(self._body)
        if room > 0:
            self._body += body[:room]
        if self._size > MAX_READ:  # not worth reading on: answer with what we have
            self.reusable = False
            self._complete()
            self.close()

    def on_message_complete(self) -> None:
        if not self.parser.should_keep_alive():
            self.reusable = False
        self._complete()

    # -- the client's side ---------------------------------------------------------------

    def _complete(self) -> None:
        self._stop_timer()
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(
                HttpAnswer(self.parser.get_status_code(), self._headers, bytes(self._body))
            )
        self.waiter = None

    def _fail(self, error: Exception) -> None:
        self._stop_timer()
        self.reusable = False
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)
        self.waiter = None
        self.close()

    def _ended(self, exc: Exception | None = None) -> None:
        self.closed = True
        self.reusable = False
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        if (
            self._headers
            and b"content-length" not in self._headers
            and (b"chunked" not in self._headers.get(b"transfer-encoding", b"").lower())
        ):
            self._complete()  # a body delimited by the end of the connection
            return
        reason = f": {exc}" if exc else ""
        self._fail(DeliveryError(f"the receiver closed the connection{reason}"))

    def _stop_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _expire(self) -> None:
        self.timer = None
        self._fail(AttemptTimeout("no complete answer in time"))

    def request(self, data: bytes, deadline: float) -> asyncio.Future[HttpAnswer]:
        """Send ``data``; the answer, or :class:`AttemptTimeout` at ``deadline`` (loop time)."""
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        self.waiter = loop.create_future()
        self.timer = loop.call_at(deadline, self._expire)
        self._headers = {}
        self._body = bytearray()
        self._size = 0
        self.received = False
        self.transport.write(data)
        return self.waiter

    def close(self) -> None:
        self._stop_timer()
        self.closed = True
        self.reusable = False
        if self.transport is not None:
            self.transport.close()


async def open_connection(
    protocol: _Connection, address: IPAddress, target: Target, context: ssl.SSLContext | None
) -> None:
    """Connect ``protocol`` to ``address`` (already checked): the one place a socket opens."""
    loop = asyncio.get_running_loop()
    await loop.create_connection(
        lambda: protocol,
        host=str(address),
        port=target.port,
        ssl=context,
        server_hostname=target.host if context is not None else None,
    )


class ConnectionPool:
    """Idle keep-alive connections to one endpoint's URL."""

    def __init__(self, target: Target, policy: AddressPolicy, *, keep: int) -> None:
        self.target = target
        self.policy = policy
        self.keep = keep
        self._idle: deque[_Connection] = deque()
        self.closed = False
        self._context: ssl.SSLContext | None = (
            ssl.create_default_context() if target.scheme == "https" else None
        )
        self._prefix = (
            b"POST "
            + target.path.encode("ascii", "strict")
            + b" HTTP/1.1\r\nhost: "
            + target.host_header.encode("ascii")
            + b"\r\nuser-agent: "
            + USER_AGENT
            + b"\r\ncontent-type: application/json\r\naccept: */*\r\n"
        )

    def request_bytes(self, headers: list[tuple[bytes, bytes]], body: bytes) -> bytes:
        parts = [self._prefix]
        for name, value in headers:
            parts += (name, b": ", value, b"\r\n")
        parts += (b"content-length: ", str(len(body)).encode(), b"\r\n\r\n", body)
        return b"".join(parts)

    async def _connect(self) -> _Connection:
        try:
            addresses = await self.policy.resolve(self.target.host, self.target.port)
        except Refused:
            raise
        errors = []
        for address in addresses:
            protocol = _Connection(self.keep)
            try:
                await open_connection(protocol, address, self.target, self._context)
            except (OSError, ssl.SSLError) as exc:
                errors.append(f"{address}: {exc.strerror or exc}")
                continue
            return protocol
        raise DeliveryError("cannot connect: " + "; ".join(errors))

    def _take_idle(self) -> _Connection | None:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()  # the most recently used is the likeliest alive
            if not conn.closed and now - conn.idle_since < IDLE_TIMEOUT:
                return conn
            conn.close()
        return None

    async def post(
        self, headers: list[tuple[bytes, bytes]], body: bytes, within: float = 15.0
    ) -> HttpAnswer:
        """POST once within ``within`` s: the answer, :class:`DeliveryError` or :class:`Refused`.

        A kept-alive connection the receiver closed meanwhile fails before any
        answer arrives; the request then goes once more on a fresh connection.
        """
        deadline = asyncio.get_running_loop().time() + within
        data = self.request_bytes(headers, body)
        conn = self._take_idle()
        if conn is not None:
            try:
                return await self._exchange(conn, data, deadline)
            except DeliveryError as exc:
                if conn.received or isinstance(exc, AttemptTimeout):
                    raise
        try:
            async with asyncio.timeout_at(deadline):
                fresh = await self._connect()
        except TimeoutError:
            raise AttemptTimeout("no connection in time") from None
        return await self._exchange(fresh, data, deadline)

    async def _exchange(self, conn: _Connection, data: bytes, deadline: float) -> HttpAnswer:
        try:
            answer = await conn.request(data, deadline)
        except BaseException:
            conn.close()
            raise
        if conn.reusable and not conn.closed and not self.closed:
            conn.idle_since = time.monotonic()
            self._idle.append(conn)
        else:
            conn.close()
        return answer

    def close(self) -> None:
        """Close the idle connections; those in use close when their exchange ends."""
        self.closed = True
        while self._idle:
            self._idle.pop().close()


async def cancel_quietly(task: asyncio.Task[object]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task

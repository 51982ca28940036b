"""One NATS connection and the few JetStream requests the log makes, on the wire.

nats-py is imported only when a connection is made; without the ``nats``
extra, :meth:`JetStreamClient.connect` raises
:class:`~polyport.core.errors.MissingExtra` naming it.

Requests go out raw (``$JS.API.…``, direct gets, pull requests) with replies
on one wildcard inbox, so many can be in flight at once (pipelined) and each
costs one publish and one future — no per-request subscription nor timer (one
timer gives up on every request unanswered within the timeout, oldest first),
no nats-py JetStream context between the log and the wire. A request whose
answer nobody needs goes without a reply subject, and one whose answer is only
acted on goes with :meth:`JetStreamClient.answer_later`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import orjson

from polyport.core.errors import MissingExtra, Unavailable

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS
    from nats.aio.msg import Msg
    from nats.aio.subscription import Subscription

log = logging.getLogger("polyport.backends.nats")

#: Seconds to wait for NATS to connect or answer before a call is Unavailable.
TIMEOUT = 5.0
#: A server's ``max_payload`` unless it says otherwise.
DEFAULT_MAX_PAYLOAD = 1024 * 1024
#: What a client that gets Unavailable is told to wait before trying again.
RETRY_AFTER = 1.0
#: JetStream's error codes the log acts on.
WRONG_LAST_SEQUENCE = 10071  # Nats-Expected-Last-Subject-Sequence did not hold
STREAM_NOT_FOUND = 10059
STREAM_NAME_IN_USE = 10058
CONSUMER_NOT_FOUND = 10014
#: Messages asked for in one pull request.
PAGE = 1000


class ApiError(Exception):
    """JetStream refused a request: its HTTP-like ``code`` and its ``err_code``."""

    def __init__(self, code: int, err_code: int, description: str) -> None:
        super().__init__(f"JetStream error {err_code} ({code}): {description}")
        self.code = code
        self.err_code = err_code
        self.description = description

    @classmethod
    def of(cls, error: dict[str, Any]) -> ApiError:
        """From the ``error`` object of a JetStream answer."""
        return cls(error.get("code", 0), error.get("err_code", 0), error.get("description", ""))


def unavailable(what: str) -> Unavailable:
    return Unavailable(f"NATS JetStream {what}; try again", retry_after=RETRY_AFTER)


def _driver() -> Any:
    try:
        import nats
    except ImportError as exc:
        if exc.name and exc.name.split(".")[0] == "nats":
            raise MissingExtra("nats", "the NATS JetStream backend") from exc
        raise
    return nats


@contextlib.contextmanager
def engine_errors(what: str) -> Iterator[None]:
    """Turn NATS being unreachable, slow or closed into Unavailable."""
    from nats import errors

    try:
        yield
    except (errors.Error, TimeoutError, ConnectionError, OSError) as exc:
        raise unavailable(f"could not {what} ({type(exc).__name__})") from exc


def status(msg: Msg) -> str | None:
    """A status reply's code (``404``, ``408``, ``503``…), or None for a message."""
    headers = msg.headers
    if headers and not msg.data:
        return headers.get("Status")
    return None


class JetStreamClient:
    """A connection to NATS with a reply inbox that routes answers to waiters."""

    def __init__(self, servers: str | Sequence[str], *, timeout: float = TIMEOUT) -> None:
        self.servers = [servers] if isinstance(servers, str) else list(servers)
        self.timeout = timeout
        self.nc: NATS | None = None
        self._inbox = ""
        self._cut = 0
        self._tokens = itertools.count(1)
        self._waiting: dict[str, Callable[[Msg], None]] = {}
        #: Replies expected once: a future awaiting each, or a coroutine taking it that
        #: nobody awaits (see :meth:`answer_later`); and when each is given up (the
        #: loop's clock), oldest first, checked by one timer rather than one per request.
        self._answers: dict[str, asyncio.Future[Msg] | Callable[[Msg], Awaitable[None]]] = {}
        self._deadlines: deque[tuple[float, str]] = deque()
        self._reaper: asyncio.TimerHandle | None = None
        #: What nats-py raises when the server is unreachable, slow or closed (set at connect).
        self._engine_errors: tuple[type[BaseException], ...] = (
            TimeoutError,
            ConnectionError,
            OSError,
        )
        #: How many times the connection was made again; messages sent before a
        #: reconnection were either handled by the server or lost with the connection.
        self.generation = 0
        self.on_reconnect: list[Callable[[], None]] = []

    async def connect(self, name: str) -> None:
        nats = _driver()

        async def on_error(exc: Exception) -> None:
            log.warning("NATS connection error: %s", exc)

        async def on_disconnect() -> None:
            if self.nc is not None and not self.nc.is_closed:
                log.warning("disconnected from NATS; reconnecting")

        async def on_reconnect() -> None:
            log.info("reconnected to NATS")
            self.generation += 1
            for listener in self.on_reconnect:
                listener()

        self._engine_errors = (nats.errors.Error, TimeoutError, ConnectionError, OSError)
        with engine_errors("connect"):
            # Unlimited reconnection also makes nats-py retry a *first* connection
            # forever: an engine unreachable at start is Unavailable after the timeout.
            async with asyncio.timeout(self.timeout):
                self.nc = await nats.connect(
                    self.servers,
                    name=name,
                    connect_timeout=max(1, int(self.timeout)),
                    max_reconnect_attempts=-1,  # a node never gives up on its engine
                    reconnect_time_wait=1,
                    allow_reconnect=True,
                    error_cb=on_error,
                    disconnected_cb=on_disconnect,
                    reconnected_cb=on_reconnect,
                )
            self._inbox = self.nc.new_inbox()
            self._cut = len(self._inbox) + 1
            await self.nc.subscribe(self._inbox + ".*", cb=self._on_reply)

    async def close(self) -> None:
        nc, self.nc = self.nc, None
        self._waiting.clear()
        answers, self._answers = self._answers, {}
        for answer in answers.values():  # what is awaited gets no answer now
            _give_up_on(answer)
        self._deadlines.clear()
        if self._reaper is not None:
            self._reaper.cancel()
            self._reaper = None
        if nc is not None and not nc.is_closed:
            with contextlib.suppress(Exception):
                await nc.close()

    @property
    def connected(self) -> bool:
        return self.nc is not None and self.nc.is_connected

    @property
    def max_message(self) -> int:
        """The largest message the server takes (its ``max_payload``, headers included)."""
        if self.nc is None or not self.nc.max_payload:
            return DEFAULT_MAX_PAYLOAD
        return int(self.nc.max_payload)

    @property
    def conn(self) -> NATS:
        if self.nc is None:
            raise unavailable("is not connected")
        return self.nc

    async def _on_reply(self, msg: Msg) -> None:
        token = msg.subject[self._cut :]
        handler = self._waiting.get(token)
        if handler is not None:
            handler(msg)
            return
        answer = self._answers.pop(token, None)
        if answer is None:
            return
        if isinstance(answer, asyncio.Future):
            if not answer.done():
                answer.set_result(msg)
        else:
            await answer(msg)

    def _expect(
        self, token: str, answer: asyncio.Future[Msg] | Callable[[Msg], Awaitable[None]]
    ) -> None:
        loop = asyncio.get_running_loop()
        answers, deadlines = self._answers, self._deadlines
        answers[token] = answer
        while deadlines and deadlines[0][1] not in answers:  # answered: forgotten
            deadlines.popleft()
        deadlines.append((loop.time() + self.timeout, token))
        if self._reaper is None:
            self._reaper = loop.call_at(deadlines[0][0], self._give_up)

    def _give_up(self) -> None:
        """Fail the futures whose answer did not come within the timeout (TimeoutError),
        forget the handlers of the others, and set the timer for the next."""
        self._reaper = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        answers, deadlines = self._answers, self._deadlines
        while deadlines:
            when, token = deadlines[0]
            if token in answers and when > now:
                self._reaper = loop.call_at(when, self._give_up)
                return
            deadlines.popleft()
            answer = answers.pop(token, None)
            if answer is not None:
                _give_up_on(answer)

    def answer_later(self, handler: Callable[[Msg], Awaitable[None]]) -> str:
        """A reply subject for one answer that nobody awaits: ``handler`` takes it when it
        comes (on the connection's reply task, so it must not wait long); forgotten
        without a word after the timeout."""
        token = format(next(self._tokens), "x")
        self._expect(token, handler)
        return f"{self._inbox}.{token}"

    def reply_to(self, handler: Callable[[Msg], None]) -> tuple[str, str]:
        """A fresh reply subject whose messages go to ``handler``; forget it with :meth:`drop`."""
        token = format(next(self._tokens), "x")
        self._waiting[token] = handler
        return f"{self._inbox}.{token}", token

    def drop(self, token: str) -> None:
        self._waiting.pop(token, None)
        self._answers.pop(token, None)

    def expect(self) -> tuple[str, str, asyncio.Future[Msg]]:
        """A reply subject for one answer, and the future that gets it — or TimeoutError
        once the timeout passed without it; forget it with :meth:`drop`."""
        future: asyncio.Future[Msg] = asyncio.get_running_loop().create_future()
        token = format(next(self._tokens), "x")
        self._expect(token, future)
        return f"{self._inbox}.{token}", token, future

    async def send(
        self, subject: str, payload: bytes, reply: str, headers: dict[str, str] | None = None
    ) -> None:
        conn = self.conn
        if not conn.is_connected:
            # Refused now rather than buffered: the caller learns at once, and
            # nothing it was told failed is sent after the reconnection.
            raise unavailable("is not reachable (reconnecting)")
        try:
            await conn.publish(subject, payload, reply=reply, headers=headers)
        except self._engine_errors as exc:  # engine_errors, without its cost per message
            raise unavailable(f"could not take a message ({type(exc).__name__})") from exc

    async def publish(
        self, subject: str, payload: bytes, headers: dict[str, str] | None = None
    ) -> None:
        """Send with no reply subject: nothing is answered (a JetStream API call is still
        carried out), so nothing is waited for."""
        await self.send(subject, payload, "", headers)

    async def request(
        self, subject: str, payload: bytes = b"", headers: dict[str, str] | None = None
    ) -> Msg:
        reply, token, future = self.expect()
        try:
            await self.send(subject, payload, reply, headers)
            return await future  # TimeoutError after the timeout
        except TimeoutError as exc:
            tokens = subject.split(".", 3)  # $JS.API.{call}…: the call; else the subject
            what = tokens[2] if len(tokens) > 2 else subject
            raise unavailable(f"did not answer {what}") from exc
        finally:
            self.drop(token)

    async def api(self, call: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """A ``$JS.API.{call}`` request; raises :class:`ApiError` for JetStream's refusals."""
        msg = await self.request(f"$JS.API.{call}", orjson.dumps(body) if body else b"")
        if status(msg) == "503":
            raise unavailable("is not enabled or not reachable")
        answer: dict[str, Any] = orjson.loads(msg.data)
        error = answer.get("error")
        if error:
            raise ApiError(
                error.get("code", 0), error.get("err_code", 0), error.get("description", "")
            )
        return answer

    async def direct_get(self, stream: str, body: dict[str, Any]) -> Msg | None:
        """One message by sequence or by subject (``$JS.API.DIRECT.GET``), None if there is none."""
        msg = await self.request(f"$JS.API.DIRECT.GET.{stream}", orjson.dumps(body))
        code = status(msg)
        if code == "404":
            return None
        if code is not None:
            raise unavailable(f"answered a direct get with status {code}")
        return msg

    async def request_many(
        self, requests: Sequence[tuple[str, bytes, dict[str, str] | None]]
    ) -> list[Msg]:
        """Many requests pipelined: sent one after the other, answers awaited together."""
        waits = []
        try:
            for subject, payload, headers in requests:
                reply, token, future = self.expect()
                waits.append((token, future))
                await self.send(subject, payload, reply, headers)
            return [await future for _, future in waits]  # TimeoutError after the timeout
        except TimeoutError as exc:
            raise unavailable(f"did not answer {len(waits)} request(s)") from exc
        finally:
            for token, _ in waits:
                self.drop(token)

    async def direct_get_many(
        self, stream: str, bodies: Sequence[dict[str, Any]]
    ) -> list[Msg | None]:
        """Many direct gets pipelined: sent together, answers awaited together."""
        waits = []
        try:
            for body in bodies:
                reply, token, future = self.expect()
                waits.append((token, future))
                await self.send(f"$JS.API.DIRECT.GET.{stream}", orjson.dumps(body), reply)
            async with asyncio.timeout(self.timeout):
                answers = [await future for _, future in waits]
        except TimeoutError as exc:
            raise unavailable("did not answer direct gets") from exc
        finally:
            for token, _ in waits:
                self.drop(token)
        out: list[Msg | None] = []
        for msg in answers:
            code = status(msg)
            if code is not None and code != "404":
                raise unavailable(f"answered a direct get with status {code}")
            out.append(None if code else msg)
        return out

    async def consumer(self, stream: str, config: dict[str, Any]) -> PullConsumer:
        """An ephemeral pull consumer made with ``config`` (no acks, in memory)."""
        config = {"ack_policy": "none", "mem_storage": True, "num_replicas": 1} | config
        config.setdefault("inactive_threshold", int(30e9))  # gone by itself if forgotten
        body = {"stream_name": stream, "config": config}
        info = await self.api(f"CONSUMER.CREATE.{stream}", body)
        # Delivered messages keep their own subject: they come on an inbox of their own.
        consumer = PullConsumer(self, stream, info["name"], self.conn.new_inbox())
        with engine_errors("read the stream"):
            consumer.sub = await self.conn.subscribe(consumer.inbox, cb=consumer.arrived)
        return consumer

    async def fetch(
        self,
        stream: str,
        config: dict[str, Any],
        limit: int,
        keep: Callable[[Msg], bool],
        *,
        collect: bool = True,
    ) -> list[Msg]:
        """Up to ``limit`` messages from a consumer made with ``config``, then deleted.

        Without ``collect`` the messages are only shown to ``keep``, which says
        stop by returning False.
        """
        consumer = await self.consumer(stream, config)
        try:
            return (await consumer.pull(limit, keep, collect=collect))[0]
        finally:
            await consumer.close()


def _give_up_on(answer: asyncio.Future[Msg] | Callable[[Msg], Awaitable[None]]) -> None:
    """An awaited answer that will not come raises TimeoutError (an unawaited one is only
    forgotten)."""
    if isinstance(answer, asyncio.Future) and not answer.done():
        answer.set_exception(TimeoutError())
        # Marked retrieved: whoever awaits it raises it; a future nobody awaits any
        # longer (its caller gave up on another) is not logged as lost.
        answer.exception()


class PullConsumer:
    """An ephemeral pull consumer: a read position in the stream, kept for the next page."""

    def __init__(self, client: JetStreamClient, stream: str, name: str, inbox: str) -> None:
        self.client = client
        self.stream = stream
        self.name = name
        self.inbox = inbox
        self.sub: Subscription | None = None
        self._pulled: asyncio.Queue[Msg] = asyncio.Queue()

    async def arrived(self, msg: Msg) -> None:
        self._pulled.put_nowait(msg)

    async def pull(
        self, limit: int, keep: Callable[[Msg], bool], *, collect: bool = True
    ) -> tuple[list[Msg], bool]:
        """Up to ``limit`` messages, and whether there were that many (so maybe more)."""
        out: list[Msg] = []
        taken = 0
        while taken < limit:
            batch = min(limit - taken, PAGE)
            page, full = await self._pull_page(batch, keep)
            taken += len(page)
            if collect:
                out.extend(page)
            if not full:
                return out, False
        return out, True

    async def _pull_page(self, batch: int, keep: Callable[[Msg], bool]) -> tuple[list[Msg], bool]:
        page: list[Msg] = []
        request = orjson.dumps({"batch": batch, "no_wait": True})
        subject = f"$JS.API.CONSUMER.MSG.NEXT.{self.stream}.{self.name}"
        await self.client.send(subject, request, self.inbox)
        pulled = self._pulled
        try:
            async with asyncio.timeout(self.client.timeout):
                while True:
                    msg = await pulled.get()
                    code = status(msg)
                    if code is not None:
                        if code in ("404", "408"):  # no more messages now
                            return page, False
                        if code != "100":  # 100: a heartbeat or flow control
                            raise unavailable(f"answered a pull with status {code}")
                        continue
                    if not keep(msg):
                        return page, False
                    page.append(msg)
                    if len(page) == batch:
                        return page, True
        except TimeoutError as exc:
            raise unavailable("did not answer a pull") from exc

    async def close(self) -> None:
        sub, self.sub = self.sub, None
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        if self.client.nc is None:
            return
        reply, token, _ = self.client.expect()
        self.client.drop(token)  # nobody waits for the answer
        with contextlib.suppress(Unavailable):
            await self.client.send(f"$JS.API.CONSUMER.DELETE.{self.stream}.{self.name}", b"", reply)


def message_seq(msg: Msg) -> int:
    """The stream sequence of a message from a direct get or a consumer."""
    headers = msg.headers
    if headers and "Nats-Sequence" in headers:
        return int(headers["Nats-Sequence"])
    # $JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<time>.<pending>
    return int(msg.reply.split(".")[5])


def message_subject(msg: Msg) -> str:
    headers = msg.headers
    if headers and "Nats-Subject" in headers:
        return headers["Nats-Subject"]
    return msg.subject

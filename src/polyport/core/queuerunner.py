"""Runs a node's message queues: validated sends, and consumers that settle every message.

The node builds one :class:`QueueRunner` over its broker (the
:class:`~polyport.core.broker.Broker` port) and starts it with the core. It
is what :meth:`Queue.send <polyport.core.queues.Queue.send>` and
``ctx.enqueue`` reach (the service's queue sender for this node), and the
queues edge (``POST /v{n}/queues/{name}``) sends through it too.

Each consumer is a loop that holds at most ``prefetch`` messages and runs at
most ``concurrency`` handlers at once (a handler's slot is free when it
returns: its message is settled outside it, while the next one runs). While
it holds a message it renews the message's lease every third of ``lease``, so
a long handler keeps it and a node that dies (SIGKILL) lets it go after one
lease. A handler's message is settled after the events it published are
durable:

* it returned: **ack**;
* it raised, or ran past ``timeout``: **retry** after the backoff, or, on its
  ``max_attempts``-th run, **dead letter** with the error;
* the message does not validate against the queue's model (another client
  sent it straight to the broker): **dead letter** at once, with the
  validation errors, without running the handler;
* the node stops: handlers get ``queues.shutdown_grace`` seconds, then are
  cancelled and their messages **released** (not counted as attempts).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import time
import typing
import uuid
from collections.abc import Mapping
from typing import Any

import orjson
from pydantic import TypeAdapter, ValidationError

from polyport.core.broker import (
    Broker,
    Delivery,
    OutgoingMessage,
    QueuedMessage,
    QueueOptions,
    QueueStats,
    check_name,
)
from polyport.core.config import QueuesConfig
from polyport.core.context import Context, Principal
from polyport.core.dispatch import validation_details
from polyport.core.errors import (
    Conflict,
    ContractError,
    DeadlineExceeded,
    Internal,
    InvalidArgument,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    ServiceError,
    Unavailable,
)
from polyport.core.hub import EventHub, settle_published
from polyport.core.logs import Outage
from polyport.core.metrics import Metrics
from polyport.core.queuerouter import EventRouter
from polyport.core.queues import Consumer, Queue, QueueMessage, Sent, trace_id_of
from polyport.core.records import RecordStore
from polyport.core.spec import ServiceSpec

log = logging.getLogger("polyport.queues")

EDGE = "queues"
#: The longest delay a message may be sent with, in seconds.
MAX_DELAY = 30 * 86400.0
#: Errors a consumer raises that a call's caller gets as they are (as from a method).
RELAYED: tuple[type[ServiceError], ...] = (
    InvalidArgument,
    NotFound,
    Conflict,
    PermissionDenied,
    DeadlineExceeded,
    Unavailable,
)
RELAYED_BY_CODE = {cls.code: cls for cls in RELAYED}
#: The longest a call waits for its reply, in seconds.
MAX_CALL_TIMEOUT = 3600.0
#: How often a node forgets the ids of messages older than their queue's dedup window.
EXPIRE_INTERVAL = 600.0


class QueueBinding:
    """One declared queue, read once at start-up: its codec and its consumer's call."""

    def __init__(self, queue: Queue, service_name: str) -> None:
        self.queue = queue
        self.name = queue.name
        where = f"queue {queue.name}"
        try:
            self.adapter: TypeAdapter[Any] = TypeAdapter(queue.model)
        except Exception as exc:
            raise ContractError(f"{where}: the message model cannot be validated: {exc}") from exc
        self.type = f"{service_name}.{queue.name}"
        self.consumer: Consumer | None = queue.handler
        self.body_param: str | None = None
        self.context_param: str | None = None
        self.message_param: str | None = None
        self.is_async = True
        #: What the consumer returns, as a reply to a call (``queue.call``) encodes it.
        self.reply_adapter: TypeAdapter[Any] = TypeAdapter(Any)
        if self.consumer is not None:
            self._read_handler(where, self.consumer)

    def _read_handler(self, where: str, consumer: Consumer) -> None:
        fn = consumer.fn
        try:
            hints = typing.get_type_hints(fn, include_extras=True)
        except Exception as exc:
            raise ContractError(
                f"{where}: cannot resolve the consumer's type hints: {exc}"
            ) from exc
        for pname, parameter in inspect.signature(fn).parameters.items():
            if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
                raise ContractError(f"{where}: *args and **kwargs are not allowed")
            annotation = hints.get(pname, Any)
            if annotation is Context:
                self.context_param = pname
            elif annotation is QueueMessage:
                self.message_param = pname
            elif self.body_param is None:
                self.body_param = pname
            else:
                raise ContractError(
                    f"{where}: parameter {pname!r} is neither the message (that is "
                    f"{self.body_param!r}), a Context nor a QueueMessage"
                )
        self.is_async = inspect.iscoroutinefunction(fn)
        returns = hints.get("return", Any)
        try:
            self.reply_adapter = TypeAdapter(Any if returns is None else returns)
        except Exception as exc:
            raise ContractError(
                f"{where}: the consumer's return type cannot be encoded: {exc}"
            ) from exc

    def encode(self, data: Any) -> bytes:
        """The message's JSON, validated against the model; InvalidArgument if it is not."""
        try:
            return self.adapter.dump_json(self.adapter.validate_python(data), by_alias=True)
        except ValidationError as exc:
            raise InvalidArgument(
                f"the message does not match queue {self.name}'s model",
                details=validation_details(exc),
            ) from None

    def encode_json(self, body: bytes) -> bytes:
        """A JSON body validated against the model, as the queue stores it."""
        try:
            value = self.adapter.validate_json(body)
        except ValidationError as exc:
            errors = exc.errors(include_url=False, include_input=False)
            if any(e["type"] == "json_invalid" for e in errors):
                raise InvalidArgument("the body is not valid JSON", unparseable=True) from None
            raise InvalidArgument(
                f"the message does not match queue {self.name}'s model",
                details=validation_details(exc),
            ) from None
        return self.adapter.dump_json(value, by_alias=True)


class QueueRunner:
    """The node's queues on its broker: sends, consumers, and the operations on both."""

    def __init__(
        self,
        spec: ServiceSpec,
        broker: Broker,
        metrics: Metrics,
        config: QueuesConfig,
        *,
        hub: EventHub | None = None,
        records: RecordStore | None = None,
        owner: str = "",
        follows_log: bool = False,
    ) -> None:
        """``hub`` and ``records`` serve the event routes (``queue.route(...)``): the log
        they are read from and where the cursor and lease are kept."""
        self.spec = spec
        self.service = spec.service
        self.broker = broker
        self.metrics = metrics
        self.config = config
        self.bindings = {
            name: QueueBinding(queue, self.service.name)
            for name, queue in self.service.queues.items()
        }
        self.router: EventRouter | None = None
        if any(binding.queue.routes for binding in self.bindings.values()):
            if hub is None or records is None:
                raise ContractError("queues with event routes need the node's hub and records")
            self.router = EventRouter(self, hub, records, owner=owner, follows_log=follows_log)
        self._workers: list[ConsumerWorker] = []
        self._expirer: asyncio.Task[None] | None = None
        self._open = False
        #: This node's reply queue, made by the first call, and the calls awaiting replies.
        self._replies: str | None = None
        self._reply_task: asyncio.Task[None] | None = None
        # Concurrent first calls make one reply queue between them, not one each: a
        # broker's declare may wait on the broker.
        self._replies_made = asyncio.Lock()
        self._waiting: dict[str, asyncio.Future[Delivery]] = {}

    # -- lifecycle ------------------------------------------------------------------------

    async def open(self) -> None:
        """Open the broker and declare the queues, without consuming (``polyport queues``)."""
        if self._open or not self.bindings:
            return
        await self.broker.open()
        try:
            for binding in self.bindings.values():
                await self.broker.declare(
                    QueueOptions(binding.name, dedup_window=binding.queue.dedup_window)
                )
        except BaseException:
            await self.broker.close()
            raise
        self._open = True

    async def start(self) -> None:
        """Open the broker, declare the queues and start their consumers (nothing without)."""
        await self.open()
        if not self._open:
            return
        self._workers = [
            ConsumerWorker(self, binding)
            for binding in self.bindings.values()
            if binding.consumer is not None
        ]
        for worker in self._workers:
            worker.start()
        self._expirer = asyncio.create_task(self._expire(), name="polyport-queues-expire")
        if self.router is not None:
            await self.router.start()

    async def stop(self) -> None:
        """Stop the consumers (see :meth:`ConsumerWorker.stop`) and close the broker."""
        if not self._open:
            return
        if self.router is not None:
            await self.router.stop()
        await self._stop_replies()
        if self._expirer is not None:
            self._expirer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._expirer
            self._expirer = None
        await asyncio.gather(*(worker.stop() for worker in self._workers))
        self._workers = []
        self._open = False
        await self.broker.close()

    async def _expire(self) -> None:
        outage = Outage(log, "forgetting old message ids")
        while True:
            await asyncio.sleep(EXPIRE_INTERVAL)
            for name in self.bindings:
                try:
                    await self.broker.expire(name)
                except Exception as exc:
                    outage.failed(exc)
                else:
                    outage.worked()

    # -- sending --------------------------------------------------------------------------

    def binding(self, name: str) -> QueueBinding:
        try:
            return self.bindings[name]
        except KeyError:
            raise NotFound(f"no queue named {name[:100]!r}") from None

    async def send(
        self,
        queue: Queue,
        data: Any,
        *,
        id: str | None = None,
        key: str | None = None,
        delay: float | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Sent:
        """Validate ``data`` against the queue's model and send it (the :class:`QueueSender`)."""
        binding = self.binding(queue.name)
        if binding.queue is not queue:
            raise NotFound(f"queue {queue!r} is not one of service {self.service.name}'s")
        return await self.send_encoded(
            binding, binding.encode(data), id=id, key=key, delay=delay, headers=headers
        )

    async def send_encoded(
        self,
        binding: QueueBinding,
        body: bytes,
        *,
        id: str | None = None,
        key: str | None = None,
        delay: float | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Sent:
        """Send a body already validated by ``binding`` (what the HTTP edge does)."""
        if not self._open:
            raise ContractError(f"queue {binding.name}: the node's queues are not started")
        if len(body) > self.config.max_message:
            raise PayloadTooLarge(
                f"the message is {len(body)} bytes; queue messages are at most "
                f"{self.config.max_message} (queues.max_message)"
            )
        if id is None:
            id = os.urandom(16).hex()  # 128 random bits (uuid4 has 122), for a quarter of its cost
        else:
            check_name("id", id)
        if key is not None:
            check_name("key", key)
        if delay is not None and not 0 <= delay <= MAX_DELAY:
            raise InvalidArgument(
                f"delay must be from 0 to {MAX_DELAY:g} seconds",
                details=[{"field": "delay", "message": "out of range"}],
            )
        message = OutgoingMessage(
            id,
            body,
            {**(headers or {}), "content-type": "application/json", "type": binding.type},
            key=key,
            delay=delay or 0.0,
        )
        [stored] = await self.broker.send(binding.name, [message])
        self._count(binding.name, "sent" if stored else "duplicate")
        return Sent(id, binding.name, duplicate=not stored)

    # -- calls: a request and its reply over the broker -----------------------------------

    async def call(
        self,
        queue: Queue,
        data: Any,
        *,
        timeout: float = 30.0,  # noqa: ASYNC109 (the wait is the call's: DeadlineExceeded)
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """Send ``data`` with a reply-to and a correlation id; the consumer's return value.

        The reply comes back on this node's reply queue (made at the first
        call). :class:`DeadlineExceeded` when none came within ``timeout``; an
        :class:`Internal` error when the consumer failed for good (the message
        became a dead letter).
        """
        binding = self.binding(queue.name)
        return await self.call_encoded(
            binding, binding.encode(data), timeout=timeout, key=key, headers=headers
        )

    async def call_encoded(
        self,
        binding: QueueBinding,
        body: bytes,
        *,
        timeout: float = 30.0,  # noqa: ASYNC109 (the wait is the call's: DeadlineExceeded)
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """:meth:`call` with a body ``binding`` validated already (what HTTP does)."""
        if not 0 < timeout <= MAX_CALL_TIMEOUT:
            raise InvalidArgument(
                f"a call's timeout is above 0 and at most {MAX_CALL_TIMEOUT:g} seconds",
                details=[{"field": "timeout", "message": "out of range"}],
            )
        replies = await self._reply_queue()
        correlation = uuid.uuid4().hex
        waiting: asyncio.Future[Delivery] = asyncio.get_running_loop().create_future()
        self._waiting[correlation] = waiting
        try:
            await self.send_encoded(
                binding,
                body,
                id=correlation,
                key=key,
                headers={**(headers or {}), "reply-to": replies, "correlation-id": correlation},
            )
            try:
                async with asyncio.timeout(timeout):
                    reply = await waiting
            except TimeoutError:
                raise DeadlineExceeded(
                    f"queue {binding.name}: no reply within {timeout:g} s"
                ) from None
        finally:
            self._waiting.pop(correlation, None)
        if reply.headers.get("status") == "error":
            failure = orjson.loads(reply.body)
            relayed = RELAYED_BY_CODE.get(failure.get("code"))
            if relayed is not None:
                raise relayed(failure.get("message"))
            raise Internal(f"the consumer failed for good: {failure.get('message')}")
        return binding.reply_adapter.validate_json(reply.body)

    async def reply(self, binding: QueueBinding, delivery: Delivery, result: Any) -> None:
        """Send a consumer's result to the queue its message names in ``reply-to``, if any."""
        if not delivery.headers.get("reply-to"):
            return
        body = binding.reply_adapter.dump_json(result, by_alias=True)
        await self._send_reply(binding, delivery, body, "ok")

    async def reply_failure(
        self, binding: QueueBinding, delivery: Delivery, exc: BaseException
    ) -> None:
        """Tell the caller its request failed for good. A :class:`ServiceError` the
        handler raised (``NotFound``, ``Conflict``…) is the caller's business and goes as
        it is, as a method's would; anything else says only where to look — the dead
        letter keeps the error for the operators."""
        relayed = next((cls for cls in RELAYED if isinstance(exc, cls)), None)
        if relayed is not None and isinstance(exc, ServiceError):
            failure = {"code": relayed.code, "message": exc.message}
        else:
            message = f"dead letter {delivery.id} of queue {binding.name}"
            failure = {"code": "INTERNAL", "message": message}
        await self._send_reply(binding, delivery, orjson.dumps(failure), "error")

    async def _send_reply(
        self, binding: QueueBinding, delivery: Delivery, body: bytes, status: str
    ) -> None:
        to = delivery.headers.get("reply-to")
        if not to:
            return
        correlation = delivery.headers.get("correlation-id") or delivery.id
        reply = OutgoingMessage(
            f"reply-{delivery.id}",  # a handler run twice replies once
            body,
            {
                "content-type": "application/json",
                "type": f"{binding.type}.reply",
                "correlation-id": correlation,
                "status": status,
            },
        )
        try:
            await self.broker.send(to, [reply])
        except NotFound:
            # The caller's reply queue is gone (its node stopped): nobody waits for this.
            log.info("queue %s: the reply to %s found no queue %s", binding.name, delivery.id, to)

    async def _reply_queue(self) -> str:
        async with self._replies_made:
            if self._replies is None:
                name = f"replies-{uuid.uuid4().hex[:16]}"
                await self.broker.declare(QueueOptions(name, dedup_window=3600, temporary=True))
                self._replies = name
                self._reply_task = asyncio.create_task(
                    self._receive_replies(name), name="polyport-queue-replies"
                )
            return self._replies

    async def _receive_replies(self, name: str) -> None:
        outage = Outage(log, "receiving replies")
        while True:
            try:
                replies = await self.broker.receive(
                    name, limit=100, lease=30.0, wait=self.config.poll_interval
                )
                for reply in replies:
                    waiting = self._waiting.get(reply.headers.get("correlation-id", ""))
                    if waiting is not None and not waiting.done():
                        waiting.set_result(reply)
                    await self.broker.ack(reply)  # a late or unknown reply is dropped
            except Exception as exc:
                outage.failed(exc)
                await asyncio.sleep(self.config.poll_interval)
            else:
                outage.worked()

    async def _stop_replies(self) -> None:
        task, self._reply_task = self._reply_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        name, self._replies = self._replies, None
        if name is not None:
            with contextlib.suppress(Exception):
                await self.broker.purge(name)

    # -- operating ------------------------------------------------------------------------

    async def observe(self) -> None:
        """Set each queue's gauges — messages waiting (its depth: the consumers' lag), in
        flight and dead — for ``/metrics``; a broker that cannot answer leaves them as
        they were (the scrape still answers)."""
        if not self._open:
            return
        for name in self.bindings:
            try:
                stats = await self.broker.stats(name)
            except Exception as exc:
                log.debug("queue %s: no counts for /metrics: %s", name, exc)
                continue
            for state, value in (
                ("waiting", stats.waiting),
                ("in_flight", stats.in_flight),
                ("dead", stats.dead),
            ):
                self.metrics.set(
                    "polyport_queue_messages",
                    "Messages of each queue by state: waiting (the depth, the consumers' lag), "
                    "in_flight, dead.",
                    value,
                    queue=name,
                    state=state,
                )

    async def stats(self, name: str) -> QueueStats:
        return await self.broker.stats(self.binding(name).name)

    async def peek(self, name: str, *, limit: int = 50) -> list[QueuedMessage]:
        return await self.broker.peek(self.binding(name).name, limit=limit)

    async def dead(
        self, name: str, *, limit: int = 50, after: str | None = None
    ) -> list[QueuedMessage]:
        return await self.broker.dead(self.binding(name).name, limit=limit, after=after)

    async def redrive(self, name: str, ids: list[str] | None = None) -> int:
        count = await self.broker.redrive(self.binding(name).name, ids)
        if count:
            log.info("queue %s: %d dead letter(s) redriven", name, count)
        return count

    async def purge(self, name: str) -> int:
        count = await self.broker.purge(self.binding(name).name)
        log.warning("queue %s purged: %d message(s) deleted", name, count)
        return count

    def _count(self, queue: str, outcome: str) -> None:
        self.metrics.inc(
            "polyport_queue_messages_total",
            "Queue messages by queue and outcome "
            "(sent, duplicate, done, retry, dead, invalid, released).",
            queue=queue,
            outcome=outcome,
        )


class ConsumerWorker:
    """One queue's consumer on this node: receives, runs the handler, settles."""

    def __init__(self, runner: QueueRunner, binding: QueueBinding) -> None:
        assert binding.consumer is not None
        self.runner = runner
        self.binding = binding
        self.consumer: Consumer = binding.consumer
        self.broker = runner.broker
        self.name = binding.name
        self._held: dict[asyncio.Task[None], Delivery] = {}
        self._slots = asyncio.Semaphore(self.consumer.concurrency)
        self._room = asyncio.Event()
        self._closing = False
        self._loop_task: asyncio.Task[None] | None = None
        self._renew_task: asyncio.Task[None] | None = None
        self._outage = Outage(log, f"receiving from queue {self.name}")

    def start(self) -> None:
        self._closing = False
        self._loop_task = asyncio.create_task(self._loop(), name=f"polyport-queue-{self.name}")
        self._renew_task = asyncio.create_task(
            self._renew(), name=f"polyport-queue-{self.name}-leases"
        )

    async def stop(self) -> None:
        self._closing = True
        for task in (self._loop_task, self._renew_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._loop_task = self._renew_task = None
        running = list(self._held)
        if running:
            grace = self.runner.config.shutdown_grace
            log.info("waiting up to %g s for %d message(s) of %s", grace, len(running), self.name)
            await asyncio.wait(running, timeout=grace)
        for task in running:
            task.cancel()
        for task in running:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- receiving ------------------------------------------------------------------------

    async def _loop(self) -> None:
        consumer = self.consumer
        poll = self.runner.config.poll_interval
        while not self._closing:
            free = consumer.prefetch - len(self._held)
            if free <= 0:
                self._room.clear()
                await self._room.wait()
                continue
            try:
                deliveries = await self.broker.receive(
                    self.name, limit=free, lease=consumer.lease, wait=poll
                )
            except Exception as exc:
                self._outage.failed(exc)
                await asyncio.sleep(poll)
                continue
            self._outage.worked()
            for delivery in deliveries:
                task = asyncio.create_task(
                    self._process(delivery), name=f"polyport-queue-{self.name}-message"
                )
                self._held[task] = delivery
                task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._held.pop(task, None)
        self._room.set()

    async def _renew(self) -> None:
        """Renew the leases of every message held, every third of the lease."""
        lease = self.consumer.lease
        while True:
            await asyncio.sleep(lease / 3)
            held = list(self._held.values())
            if not held:
                continue
            try:
                await self.broker.extend(held, lease)
            except Exception as exc:
                log.warning("queue %s: renewing %d lease(s) failed: %s", self.name, len(held), exc)

    # -- one message ----------------------------------------------------------------------

    async def _process(self, delivery: Delivery) -> None:
        try:
            value = self.binding.adapter.validate_json(delivery.body)
        except ValidationError as exc:
            details = orjson.dumps(validation_details(exc)[:20]).decode()
            await self._settle(
                self.broker.dead_letter(delivery, error=f"invalid message: {details}"),
                delivery,
                "invalid",
            )
            log.error("queue %s: message %s is invalid; dead-lettered", self.name, delivery.id)
            return
        async with self._slots:
            failure = await self._run(delivery, value)
        # Settled once the handler's slot is free: the next handler runs while the
        # broker records this outcome (held, still, within the prefetch).
        if failure is None:
            await self._settle(self.broker.ack(delivery), delivery, "done")
        else:
            await self._failed(delivery, failure)

    async def _run(self, delivery: Delivery, value: Any) -> Exception | None:
        """Run the handler (and send its reply); None if it succeeded, else what it raised."""
        consumer = self.consumer
        started = time.perf_counter()
        try:
            async with asyncio.timeout(consumer.timeout):
                result = await self._call(delivery, value)
                # Events the handler published are stored before its message goes.
                await settle_published()
            # A reply that cannot be sent fails the attempt: it runs again.
            await self.runner.reply(self.binding, delivery, result)
        except asyncio.CancelledError:
            if self._closing:
                await self._settle(self.broker.release(delivery), delivery, "released")
            raise
        except Exception as exc:
            code = "DEADLINE_EXCEEDED" if isinstance(exc, TimeoutError) else "INTERNAL"
            self.runner.metrics.observe_call(EDGE, self.name, code, time.perf_counter() - started)
            return exc
        self.runner.metrics.observe_call(EDGE, self.name, "OK", time.perf_counter() - started)
        return None

    async def _call(self, delivery: Delivery, value: Any) -> Any:
        binding = self.binding
        kwargs: dict[str, Any] = {}
        if binding.body_param is not None:
            kwargs[binding.body_param] = value
        if binding.context_param is not None:
            kwargs[binding.context_param] = Context(
                Principal(f"queue:{self.name}"),
                EDGE,
                request_id=delivery.id,
                trace_id=trace_id_of(delivery.headers.get("traceparent")),
                deadline=time.monotonic() + self.consumer.timeout,
                service=self.runner.service,
            )
        if binding.message_param is not None:
            kwargs[binding.message_param] = QueueMessage(
                id=delivery.id,
                queue=self.name,
                attempt=delivery.attempt,
                key=delivery.key,
                sent=delivery.sent,
                headers=dict(delivery.headers),
                error=delivery.error,
            )
        if binding.is_async:
            return await self.consumer.fn(**kwargs)
        return await asyncio.to_thread(self.consumer.fn, **kwargs)

    async def _failed(self, delivery: Delivery, exc: Exception) -> None:
        consumer = self.consumer
        if isinstance(exc, TimeoutError):
            error = f"the handler did not finish within {consumer.timeout:g} s"
        else:
            error = f"{type(exc).__name__}: {exc}"[:1000]
        if delivery.attempt >= consumer.max_attempts:
            log.error(
                "queue %s: message %s failed %d time(s); dead-lettered: %s",
                self.name,
                delivery.id,
                delivery.attempt,
                error,
                exc_info=exc,
            )
            await self._settle(self.broker.dead_letter(delivery, error=error), delivery, "dead")
            with contextlib.suppress(Exception):  # the caller's timeout covers a lost one
                await self.runner.reply_failure(self.binding, delivery, exc)
            return
        delay = consumer.backoff.delay(delivery.attempt)
        log.warning(
            "queue %s: message %s failed (attempt %d of %d), retrying in %.1f s: %s",
            self.name,
            delivery.id,
            delivery.attempt,
            consumer.max_attempts,
            delay,
            error,
            exc_info=exc,
        )
        await self._settle(self.broker.retry(delivery, delay=delay, error=error), delivery, "retry")

    async def _settle(self, outcome: typing.Awaitable[bool], delivery: Delivery, what: str) -> None:
        """Record an outcome; one the broker refuses (the lease was lost) is only logged."""
        try:
            settled = await outcome
        except Exception as exc:
            # The broker is away: the lease runs out and the message comes back.
            log.warning(
                "queue %s: recording %s of %s failed: %s", self.name, what, delivery.id, exc
            )
            return
        if settled:
            self.runner._count(self.name, what)
        else:
            log.warning(
                "queue %s: message %s was taken over (its lease ran out); %s not recorded",
                self.name,
                delivery.id,
                what,
            )

"""A node: one service served over every installed edge, from one process.

The node is the composition root. It reads the settings, chooses the
backends, builds the core (:class:`~polyport.core.runtime.Runtime`), loads
each edge lazily by its ``"module:Class"`` name — so a missing optional
dependency only disables that edge — and serves the HTTP edges through one
ASGI app on one port.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import importlib
import inspect
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson

from polyport import brokers, engines
from polyport.backends.memory import MemoryEventLog
from polyport.backends.sqlite import (
    SqliteDatabase,
    SqliteEventLog,
    SqliteRecordStore,
    SqliteWorkQueue,
)
from polyport.core.auth import Authenticator
from polyport.core.broker import Broker
from polyport.core.contract import Service
from polyport.core.dispatch import Dispatcher
from polyport.core.errors import ConfigError, MissingExtra, PermissionDenied, Unauthenticated
from polyport.core.eventlog import EventLog, History
from polyport.core.hub import EventHub
from polyport.core.inbox import QueuedReceiverInbox
from polyport.core.jobs import JobRunner
from polyport.core.metrics import Metrics
from polyport.core.queuebroker import WorkQueueBroker
from polyport.core.queuerunner import QueueRunner
from polyport.core.ratelimit import RateLimiter
from polyport.core.runtime import Endpoint, EventCodec, Runtime
from polyport.core.webhookqueue import QueuedWebhookStore
from polyport.edges.kinds import ChannelEdge, Edge, HttpEdge, ListenerEdge, WebSocketEdge
from polyport.http.app import HttpApp
from polyport.http.asgi import AsgiApp
from polyport.http.forwarded import TrustedProxies
from polyport.http.request import TOKEN_COOKIE, Request, Response
from polyport.http.router import Route
from polyport.settings import Settings
from polyport.web import web_routes
from polyport.webhooks.encryption import SecretCipher

if TYPE_CHECKING:
    from polyport.http.websocket import WebSocketEndpoint

log = logging.getLogger("polyport.node")

#: Every edge a node can serve, by pattern, imported only when used.
EDGES: dict[str, str] = {
    "rest": "polyport.edges.rest.binding:RestEdge",
    "poll": "polyport.edges.poll.binding:PollEdge",
    "sse": "polyport.edges.sse.binding:SseEdge",
    "ws": "polyport.edges.ws.binding:WsEdge",
    "jsonrpc": "polyport.edges.jsonrpc.binding:JsonRpcEdge",
    "xmlrpc": "polyport.edges.xmlrpc.binding:XmlRpcEdge",
    "grpc": "polyport.edges.grpc.binding:GrpcEdge",
    "soap": "polyport.edges.soap.binding:SoapEdge",
    "graphql": "polyport.edges.graphql.binding:GraphQLEdge",
    "webhooks": "polyport.edges.webhooks.binding:WebhooksEdge",
    "hooks": "polyport.edges.hooks.binding:HooksEdge",
    "queues": "polyport.edges.queues.binding:QueuesEdge",
    "mqtt": "polyport.edges.mqtt.binding:MqttEdge",
    "webrtc": "polyport.edges.webrtc.binding:WebRtcEdge",
    "mqtt-bridge": "polyport.edges.mqtt.bridge:MqttBridgeEdge",
}

DEV_WARNING = (
    "DEVELOPMENT MODE: anonymous callers may do everything on this node. "
    "Never expose it; use `polyport serve` with credentials for anything real."
)
NO_CREDENTIALS_WARNING = (
    "no credentials are configured: every call to a method that is not public=True "
    "answers 401 (UNAUTHENTICATED). Add an API key (`polyport key` prints one and its "
    "settings), a JWT key (auth.jwt), or run with --dev on your own machine."
)
NO_SECRET_KEY_WARNING = (
    "no webhooks.secret_keys is configured: creating a webhook endpoint answers 503 "
    "until one is, because endpoint secrets are only stored encrypted outside "
    "development mode (docs/webhooks.md says how to make a key)"
)


class EdgeNotInstalled(Exception):
    """The edge's own package is not part of this installation."""


def load_edge(path: str) -> Callable[[Runtime], Edge]:
    """The edge class named by ``"module:Class"``, imported now (and its extra with it).

    Raises :class:`MissingExtra` when the edge needs an optional dependency group
    that is not installed, :class:`EdgeNotInstalled` when its package is absent.
    """
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise EdgeNotInstalled(f"{module_name} is not part of this installation") from exc
        raise
    edge_class: Callable[[Runtime], Edge] = getattr(module, attr)
    return edge_class


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket, or a one-line :class:`ConfigError` saying why not."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"cannot resolve host {host!r}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(
                f"port {port} on {host} is already in use; choose another with --port"
            ) from None
        if exc.errno == errno.EACCES:
            raise ConfigError(f"no permission to listen on {host}:{port}") from None
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def _call_hook(hook: Any, settings: Settings) -> Any:
    """Hooks may take the node's settings (to find the database, say) or nothing."""
    if inspect.signature(hook).parameters:
        return hook(settings)
    return hook()


class Node:
    """Serves ``service`` on every edge in ``edges`` (default: all that can load).

    At start the node logs, as warnings, what a reader must know (see
    :meth:`warnings`) — unless ``announce`` is False because the caller prints
    them itself, as ``polyport serve`` does in its banner.
    """

    def __init__(
        self,
        service: Service,
        settings: Settings | None = None,
        *,
        edges: list[str] | None = None,
        announce: bool = True,
    ) -> None:
        self.service = service
        self.announce = announce
        # An embedded engine URL (sqlite:///…, memory://) is the database settings spelled
        # another way; a shared one (PostgreSQL, Redis, NATS) holds the event log itself.
        self.settings = settings = engines.embedded(settings or Settings())
        spec = service.spec()
        self.metrics = Metrics()
        history = History(settings.history.max_events, settings.history.max_age)
        # One SQLite connection for every store in the file: a second one would wait
        # on the group transaction of the first.
        self.db = SqliteDatabase(settings.database, synchronous=settings.database_sync)
        #: The engine several nodes share, when there is one (None: embedded).
        self.shared: engines.SharedEngine | None = None
        sqlite_log = None
        event_log: EventLog
        if settings.engine is not None and engines.scheme_of(settings.engine) not in (
            engines.EMBEDDED
        ):
            self.shared = engines.shared_engine(settings.engine, history)
            event_log = self.shared.log
        elif settings.event_log == "sqlite":
            event_log = sqlite_log = SqliteEventLog(self.db, history)
        else:
            event_log = MemoryEventLog(history)
        codec = EventCodec(spec)
        hub = EventHub(
            event_log,
            buffer=settings.limits.subscriber_buffer,
            buffer_bytes=settings.limits.subscriber_buffer_bytes,
            encoder=codec.encode,
            type_encoder=codec.encoder,
            max_age=history.max_age,
            trim_interval=min(60.0, max(0.05, history.max_age / 10)),
            bus=self.shared.bus if self.shared is not None else None,
            poll_interval=settings.engine_poll,
        )
        # Handlers publish to this node's hub, whichever other node serves the service.
        dispatcher = Dispatcher(
            spec,
            authenticator=Authenticator(settings.auth, dev=settings.dev),
            limiter=RateLimiter(settings.rate_limit),
            metrics=self.metrics,
            hub=hub,
        )
        #: Jobs, the receivers' inbox and webhook deliveries are queues of one work
        #: queue: the shared engine's, or the SQLite file's.
        work_queue = self.shared.work_queue if self.shared else SqliteWorkQueue(self.db)
        # What is not a queue (webhook endpoints, histories, the fan-out cursor) is kept
        # in records, beside it.
        records = self.shared.records if self.shared else SqliteRecordStore(self.db)
        jobs = JobRunner(work_queue, dispatcher, settings.jobs)
        webhook_store = QueuedWebhookStore(
            work_queue,
            records,
            log=event_log,
            # A cursor into the log means something after a restart only where the log
            # and the records outlive the process together: one SQLite file, or an engine.
            follows_log=sqlite_log is not None or self.shared is not None,
            seal=SecretCipher([k.get_secret_value() for k in settings.webhooks.secret_keys]),
        )
        # Message queues are queues of the same work queue, unless a broker is named.
        broker: Broker
        if settings.queues.broker is not None:
            broker = brokers.build_broker(
                settings.queues.broker,
                owner=jobs.owner,
                poll_interval=settings.queues.poll_interval,
            )
        else:
            shared_kind = engines.scheme_of(settings.engine) if settings.engine else None
            broker = WorkQueueBroker(
                work_queue,
                kind=shared_kind if self.shared and shared_kind else "sqlite",
                owner=jobs.owner,
                poll_interval=settings.queues.poll_interval,
            )
        self.runtime = Runtime(
            spec,
            settings,
            dispatcher,
            hub,
            jobs,
            self.metrics,
            codec,
            webhook_store=webhook_store,
            receiver_inbox=QueuedReceiverInbox(work_queue),
            queues=QueueRunner(
                spec,
                broker,
                self.metrics,
                settings.queues,
                hub=hub,
                records=records,
                owner=jobs.owner,
                follows_log=sqlite_log is not None or self.shared is not None,
            ),
            records=records,
        )
        self.edges: list[Edge] = []
        self.skipped: dict[str, str] = {}
        for name in edges or list(EDGES):
            if name not in EDGES:
                raise ConfigError(f"unknown edge {name!r}; known: {', '.join(EDGES)}")
            try:
                edge_class = load_edge(EDGES[name])
            except (MissingExtra, EdgeNotInstalled) as exc:
                self.skipped[name] = str(exc)
                continue
            edge = edge_class(self.runtime)
            if not isinstance(edge, Edge):
                raise TypeError(f"{EDGES[name]} is not an edge (see polyport.edges.kinds)")
            self.edges.append(edge)
        self.http = HttpApp(
            self._routes(),
            websocket=self._websocket_routes(),
            max_body=settings.limits.max_body,
            cors_origins=settings.cors_origins,
            access_log_enabled=settings.log.access,
            trusted_proxies=TrustedProxies(
                settings.server.trusted_proxies, settings.server.forwarded_header
            ),
        )
        #: The HTTP edges as an ASGI application, to run under another server.
        self.app = AsgiApp(self.http)
        self._started = False

    # -- routes of the node itself ---------------------------------------------------

    def _routes(self) -> list[Route]:
        routes: list[Route] = []
        for edge in self.edges:
            if isinstance(edge, HttpEdge):
                routes.extend(edge.routes())
        routes.extend(web_routes(self))
        routes.append(Route("POST", "/auth/ticket", self._ticket, "ticket"))
        routes.append(Route("GET", "/metrics", self._metrics, "metrics"))
        routes.append(Route("GET", "/healthz", self._health, "health"))
        return routes

    def _websocket_routes(self) -> dict[str, WebSocketEndpoint]:
        found: dict[str, WebSocketEndpoint] = {}
        for edge in self.edges:
            if isinstance(edge, WebSocketEdge):
                found.update(edge.websocket_routes())
        return found

    async def _ticket(self, request: Request) -> Response:
        """Trade credentials for a short-lived ticket (URL- and cookie-safe), as JSON and cookie."""
        authenticator = self.runtime.dispatcher.authenticator
        principal = authenticator.authenticate(request.caller("auth").credentials)
        if principal.anonymous and not principal.scopes:
            raise Unauthenticated("present credentials to get a ticket")
        ticket, _ = authenticator.tickets.issue(principal)
        ttl = int(authenticator.tickets.ttl)
        body = orjson.dumps({"ticket": ticket, "expires_in": ttl, "subject": principal.subject})
        cookie = f"{TOKEN_COOKIE}={ticket}; Max-Age={ttl}; Path=/; HttpOnly; SameSite=Strict"
        return Response(
            200, body, headers=[(b"cache-control", b"no-store"), (b"set-cookie", cookie.encode())]
        )

    async def _metrics(self, request: Request) -> Response:
        config = self.settings.metrics
        if not config.public:
            # Read like an event type's scopes: development mode's anonymous caller holds "*".
            authenticator = self.runtime.dispatcher.authenticator
            principal = authenticator.authenticate(request.credentials())
            if not principal.has_scopes(frozenset({config.scope})):
                if principal.anonymous:
                    raise Unauthenticated("the metrics need credentials")
                raise PermissionDenied(f"the metrics need the scope {config.scope!r}")
        hub = self.runtime.hub
        self.metrics.set("polyport_subscribers", "Live event subscriptions.", hub.subscriber_count)
        self.metrics.set(
            "polyport_events_published", "Events published since start.", hub.published
        )
        await self.runtime.queues.observe()
        return Response(
            200,
            self.metrics.render(),
            content_type=b"text/plain; version=0.0.4; charset=utf-8",
            headers=[(b"cache-control", b"no-store")],
        )

    async def _health(self, request: Request) -> Response:
        status = b'{"status":"ok"}' if self._started else b'{"status":"starting"}'
        return Response(
            200 if self._started else 503, status, headers=[(b"cache-control", b"no-store")]
        )

    def catalog(self) -> list[Endpoint]:
        """Every endpoint of every edge, for ``polyport routes`` and the dashboard."""
        entries: list[Endpoint] = []
        for edge in self.edges:
            entries.extend(edge.catalog())
        if any(isinstance(edge, ChannelEdge) for edge in self.edges):
            # One document for every edge carrying events, served by the node itself.
            entries.append(Endpoint("AsyncAPI", "AsyncAPI", "document", "GET /asyncapi.json"))
        return entries

    @property
    def listeners(self) -> list[ListenerEdge]:
        """The edges on ports of their own (gRPC, MQTT), started or not."""
        return [edge for edge in self.edges if isinstance(edge, ListenerEdge)]

    @property
    def credentials_configured(self) -> bool:
        auth = self.settings.auth
        return bool(auth.api_keys) or auth.jwt is not None

    def warnings(self) -> list[str]:
        """What a reader must know about this node once it started, most important first.

        Development mode; secure mode with no credentials to present; an edge
        serving somewhere else than configured, or not at all, and why.
        """
        found: list[str] = []
        if self.settings.dev:
            found.append(DEV_WARNING)
        elif not self.credentials_configured:
            found.append(NO_CREDENTIALS_WARNING)
        if (
            not self.settings.dev
            and not self.settings.webhooks.secret_keys
            and any(type(edge).__name__ == "WebhooksEdge" for edge in self.edges)
        ):
            found.append(NO_SECRET_KEY_WARNING)
        for listener in self.listeners:
            if listener.off is not None:
                found.append(f"{listener.name} is not served: {listener.off}")
            elif listener.notice is not None:
                found.append(listener.notice)
        for name, reason in self.skipped.items():
            found.append(f"{name} is not served: {reason}")
        return found

    # -- lifecycle ----------------------------------------------------------------------

    def publishing(self) -> contextlib.AbstractContextManager[None]:
        """Within the block, the service's publishes go to this node.

        Needed only outside a call when several nodes serve the service in this
        process (``with node.publishing(): await OrderShipped.publish(s)``):
        handlers, start-up and shutdown hooks, and the tasks they start publish
        to their own node already. Tasks created in the block publish here too.
        """
        return self.runtime.hub.publishing()

    async def start(self) -> None:
        """Start the core, the service's start-up hooks, then every edge.

        Other nodes may serve the same service in this process; the hooks run
        once per node, and they and every task started here (jobs, workers, a
        hook's producer) publish to this node. If any step fails, what had
        started is stopped again (in reverse) and the service is released.
        """
        runtime = self.runtime
        self.service.bind(runtime.hub, runtime.queues)
        undo: list[Callable[[], Awaitable[None]]] = []
        try:
            with self.publishing():
                await runtime.hub.start()
                undo.append(runtime.hub.stop)
                await runtime.jobs.start()
                undo.append(runtime.jobs.stop)
                await runtime.queues.start()
                undo.append(runtime.queues.stop)
                for hook in self.service.startup_hooks:
                    result = _call_hook(hook, self.settings)
                    if inspect.isawaitable(result):
                        await result
                for edge in self.edges:
                    await edge.start()
                    undo.append(edge.stop)
        except BaseException:
            for step in reversed(undo):
                try:
                    await step()
                except Exception:
                    log.exception("stopping after a failed start failed")
            self.service.unbind(runtime.hub)
            raise
        self._started = True
        if self.announce:
            for warning in self.warnings():
                log.warning(warning)

    async def stop(self) -> None:
        """Stop the edges, the jobs, the shutdown hooks, then the core; release the service.

        Other nodes serving the same service keep serving it.
        """
        self._started = False
        with self.publishing():
            for edge in reversed(self.edges):
                with contextlib.suppress(Exception):
                    await edge.stop()
            # Jobs and consumers run handlers: let them finish before the service closes
            # its resources.
            await self.runtime.queues.stop()
            await self.runtime.jobs.stop()
            for hook in self.service.shutdown_hooks:
                try:
                    result = _call_hook(hook, self.settings)
                    if inspect.isawaitable(result):
                        await result
                except Exception:
                    log.exception("a shutdown hook failed")
            await self.runtime.hub.stop()
        self.service.unbind(self.runtime.hub)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Node]:
        await self.start()
        try:
            yield self
        finally:
            await self.stop()

    async def serve(self, sock: socket.socket, *, ready: asyncio.Event | None = None) -> None:
        """Serve HTTP on ``sock`` until stopped (``self.server.stop()``, Ctrl-C, SIGTERM)."""
        from polyport.server import HttpServer, Limits

        def release() -> None:
            # Held long polls and job waits answer now instead of holding the
            # graceful-shutdown period hostage.
            self.runtime.hub.release_waiters()
            self.runtime.jobs.release_waiters()

        limits = Limits.from_config(self.settings.server)
        server = HttpServer(self.http, limits=limits, on_shutdown=release)
        if self.http.websocket:
            from polyport.server.websocket import WebSocketOptions, accept

            ws = self.settings.websocket
            options = WebSocketOptions(
                ping_interval=ws.ping_interval,
                ping_timeout=ws.ping_timeout,
                max_message=ws.max_message,
                send_buffer=ws.send_buffer,
                stall_timeout=ws.stall_timeout,
            )
            handlers = self.http.websocket

            def upgrade(connection: Any, request: Request, rest: bytes) -> None:
                accept(connection, request, rest, handlers[request.path], options)

            server.state.upgrade = upgrade
        self.server = server
        port = sock.getsockname()[1]
        if port != self.settings.port:
            # Port 0 (or a socket bound by the caller): start-up hooks and edges see
            # the port actually served, e.g. to give a callback URL to a partner.
            self.settings = self.settings.model_copy(update={"port": port})
            self.runtime.settings = self.settings
        async with self.running():
            if ready is not None:
                asyncio.get_running_loop().call_soon(ready.set)
            await server.serve(sock)

"""The gRPC edge: the contract on its own grpc.aio server, from runtime descriptors.

    HOST:50051  polyport.{service}.v{n}.{Service}Service/{Method}   every method, four kinds
                polyport.events.v1.Events/Subscribe                   the event log, batched
                grpc.reflection.v1alpha.ServerReflection              server reflection
                grpc.health.v1.Health                                 SERVING while up
    GET /grpc/{service}.proto · /grpc/polyport-events.proto           the same, as .proto text

Descriptors are built from the type graph into a private descriptor pool at
start-up; handlers are generic (raw bytes in, raw bytes out), so a message
that does not parse is this edge's ``INVALID_ARGUMENT``, not grpcio's
``INTERNAL``. Every call goes through the dispatcher: authentication from
metadata, validation by the same validators as REST, the deadline as the
caller's timeout.
"""

from __future__ import annotations

import errno
import logging
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

from polyport.core.errors import (
    ConfigError,
    ContractError,
    InvalidArgument,
    MissingExtra,
    ServiceError,
)

try:  # grpcio, protobuf and friends come with the 'grpc' extra
    import grpc
    from google.protobuf import descriptor_pool, empty_pb2, struct_pb2, timestamp_pb2
    from google.protobuf.message import DecodeError
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection, reflection_pb2
except ImportError as exc:
    raise MissingExtra("grpc", "the gRPC edge") from exc

from polyport.core.contract import MethodKind, Service
from polyport.core.dispatch import Binding, PageResult, internal_error
from polyport.core.runtime import Endpoint as CatalogEntry
from polyport.core.runtime import Runtime
from polyport.edges.grpc.codec import ABSENT, GrpcCodec
from polyport.edges.grpc.config import GrpcConfig
from polyport.edges.grpc.descriptors import FDP, MethodPlan, Schema, build_schema
from polyport.edges.grpc.errors import abort
from polyport.edges.grpc.events import SERVICE as EVENTS_SERVICE
from polyport.edges.grpc.events import EventStream, events_file
from polyport.edges.grpc.metadata import EDGE, caller_of
from polyport.edges.grpc.proto_text import proto_text
from polyport.edges.kinds import HttpEdge, ListenerEdge
from polyport.http.openapi import OpenApiDocument
from polyport.http.request import Request, Response
from polyport.http.router import Route

log = logging.getLogger("polyport.grpc")

#: Seconds in-flight calls get to finish when the node stops.
STOP_GRACE = 5.0
EVENTS_PROTO_PATH = "/grpc/polyport-events.proto"
TEXT = b"text/plain; charset=utf-8"

Handler = Callable[..., Any]


def schema_pool(schema: Schema) -> descriptor_pool.DescriptorPool:
    """A private pool with the service, the events service and what they import.

    Health and reflection are in it too, so a reflection client can resolve
    every service the server lists.
    """
    pool = descriptor_pool.DescriptorPool()
    for module in (timestamp_pb2, struct_pb2, empty_pb2, health_pb2, reflection_pb2):
        pool.AddSerializedFile(module.DESCRIPTOR.serialized_pb)
    pool.Add(schema.file)
    pool.Add(events_file())
    return pool


def _address(host: str, port: int | str) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _port_taken(host: str, port: int) -> bool:
    """Whether ``host:port`` is already in use, asked of the system before grpcio is.

    grpcio logs its own multi-line error for a port it cannot bind; asking
    first keeps the start-up output to the one line the node prints.
    """
    if port == 0:
        return False
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror:
        return False  # grpcio reports it
    for family, kind, proto, _, address in infos:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    return True
    return False


def _listen(server: grpc.aio.Server, host: str, port: int) -> int:
    """The port ``server`` will listen on, or 0 when ``host:port`` cannot be bound."""
    if _port_taken(host, port):
        return 0
    try:
        return int(server.add_insecure_port(_address(host, port)))
    except RuntimeError:
        return 0


def service_proto(service: Service) -> str:
    """The ``.proto`` text of ``service`` (what ``GET /grpc/{service}.proto`` serves)."""
    return proto_text(build_schema(service.spec()).file)


def events_proto() -> str:
    """The ``.proto`` text of the events service, the same for every node."""
    return proto_text(events_file())


class GrpcEdge(HttpEdge, ListenerEdge):
    """Serves the contract over gRPC, with reflection, health and the event stream."""

    name = EDGE

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        config = runtime.settings.section(GrpcConfig)
        self.enabled = config.enabled
        self.host = config.host or runtime.settings.host
        #: The port served: the configured one, or the one the system chose for 0.
        self.port = config.port
        self.port_chosen = "port" in config.model_fields_set
        #: Why the edge serves nothing (disabled, or no port to listen on), else None.
        self.off: str | None = None if self.enabled else "disabled by grpc.enabled = false"
        #: What a reader must know about where it serves (a default port taken), else None.
        self.notice: str | None = None
        self.max_message = config.max_message
        try:
            self.schema = build_schema(runtime.spec)
            self.pool = schema_pool(self.schema)
            self.codec = GrpcCodec(self.schema, self.pool)
        except (TypeError, ValueError, KeyError) as exc:
            # Every type of the graph has a protobuf form; reaching this is a bug to report.
            raise ContractError(f"gRPC: cannot describe the contract in protobuf: {exc}") from exc
        self.events = EventStream(runtime, self.pool)
        self.proto = proto_text(self.schema.file)
        self.events_proto = events_proto()
        self.server: grpc.aio.Server | None = None
        self.health: Any = None

    @property
    def address(self) -> str:
        """``HOST:PORT`` as a client dials it: the port bound, once started."""
        return _address(self.host, self.port)

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        if not self.enabled:
            return
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", self.max_message),
                ("grpc.max_send_message_length", self.max_message),
                ("grpc.so_reuseport", 0),  # a port in use is an error, not a shared port
            ]
        )
        services = {self.schema.service: self._handlers(), EVENTS_SERVICE: self._event_handlers()}
        for service, handlers in services.items():
            server.add_generic_rpc_handlers(
                (grpc.method_handlers_generic_handler(service, handlers),)
            )
            server.add_registered_method_handlers(service, handlers)
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        names = [*services, health.SERVICE_NAME, reflection.SERVICE_NAME]
        reflection.enable_server_reflection(names, server, pool=self.pool)
        port = _listen(server, self.host, self.port)
        if port == 0:
            problem = f"gRPC cannot listen on {self.address}: the port is in use or not permitted"
            if self.port_chosen:
                await server.stop(None)
                raise ConfigError(problem + "; choose another with grpc.port (0: any free port)")
            # The default port taken (another node, a test, another program): serve
            # gRPC anyway, on a port the system chooses, and say so at start.
            wanted = self.port
            port = _listen(server, self.host, 0)
            if port == 0:
                self.off = problem
                await server.stop(None)
                return
            self.notice = (
                f"gRPC's default port {wanted} is in use: gRPC is served on "
                f"{_address(self.host, port)} instead (set grpc.port to choose one)"
            )
        self.port = port
        await server.start()
        self.server = server
        for service in ("", *services):
            await self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        log.info("gRPC listening on %s", self.address, extra={"edge": EDGE})

    async def stop(self) -> None:
        server, self.server = self.server, None
        if server is None:
            return
        if self.health is not None:
            await self.health.enter_graceful_shutdown()
        self.events.close()
        await server.stop(STOP_GRACE)

    # -- documents ----------------------------------------------------------------------------

    def routes(self) -> list[Route]:
        if not self.enabled:
            return []
        return [
            Route("GET", f"/grpc/{self.runtime.spec.name}.proto", self._proto, "grpc_proto"),
            Route("GET", EVENTS_PROTO_PATH, self._events_proto, "grpc_events_proto"),
        ]

    def describe(self, doc: OpenApiDocument) -> None:
        """Nothing: gRPC is described by its ``.proto`` files and by server reflection."""

    async def _proto(self, request: Request) -> Response:
        return Response(200, self.proto.encode(), content_type=TEXT)

    async def _events_proto(self, request: Request) -> Response:
        return Response(200, self.events_proto.encode(), content_type=TEXT)

    def catalog(self) -> list[CatalogEntry]:
        if self.off is not None:
            return []
        # Before start-up (`polyport routes`) port 0 has no number yet.
        where = f"grpc {_address(self.host, self.port or '(any free port)')}"
        entries = [
            CatalogEntry("gRPC", name, "method", f"{where} {self.schema.service}/{plan.rpc}")
            for name, plan in self.schema.methods.items()
        ]
        for name, event in self.runtime.spec.events.items():
            entries.append(
                CatalogEntry(
                    "gRPC",
                    name,
                    "event",
                    f"{where} {EVENTS_SERVICE}/Subscribe channels={event.event.channel_pattern}",
                )
            )
        entries += [
            CatalogEntry("gRPC", ".proto", "document", f"GET /grpc/{self.runtime.spec.name}.proto"),
            CatalogEntry("gRPC", "events .proto", "document", f"GET {EVENTS_PROTO_PATH}"),
            CatalogEntry("gRPC", "reflection", "document", f"{where} {reflection.SERVICE_NAME}"),
            CatalogEntry("gRPC", "health", "document", f"{where} {health.SERVICE_NAME}"),
        ]
        return entries

    # -- handlers --------------------------------------------------------------------------------

    def _event_handlers(self) -> dict[str, grpc.RpcMethodHandler]:
        return {"Subscribe": grpc.unary_stream_rpc_method_handler(self.events.subscribe)}

    def _handlers(self) -> dict[str, grpc.RpcMethodHandler]:
        handlers = {}
        bindings = self.runtime.dispatcher.bindings
        for name, plan in self.schema.methods.items():
            binding = bindings[name]
            if plan.kind is MethodKind.UNARY:
                handler = grpc.unary_unary_rpc_method_handler(self._unary(plan, binding))
            elif plan.kind is MethodKind.SERVER_STREAM:
                handler = grpc.unary_stream_rpc_method_handler(self._server_stream(plan, binding))
            elif plan.kind is MethodKind.CLIENT_STREAM:
                handler = grpc.stream_unary_rpc_method_handler(self._client_stream(plan, binding))
            else:
                handler = grpc.stream_stream_rpc_method_handler(self._bidi_stream(plan, binding))
            handlers[plan.rpc] = handler
        return handlers

    def _parser(self, plan: MethodPlan) -> Callable[[bytes], Any]:
        """Raw bytes → the input message, or INVALID_ARGUMENT."""
        cls: Any = self.codec.classes[plan.input]
        from_string = cls.FromString
        full = self.schema.full(plan.input)

        def parse(raw: bytes) -> Any:
            try:
                return from_string(raw)
            except DecodeError:
                raise InvalidArgument(
                    f"the request is not a valid {full} message", unparseable=True
                ) from None

        return parse

    def _arguments(self, plan: MethodPlan) -> Callable[[bytes], Any]:
        parse = self._parser(plan)
        read = self.codec.readers[plan.input]
        return lambda raw: read(parse(raw))

    def _responder(self, plan: MethodPlan, binding: Binding) -> Callable[[Any], bytes]:
        """A result → the serialized output message."""
        if plan.output_kind == "empty":
            return lambda result: b""
        cls: Any = self.codec.classes[plan.output]
        write = self.codec.writers[plan.output]
        dump = binding.dump_python
        if plan.output_kind == "page":

            def page(result: PageResult) -> bytes:
                items = dump(result.items, mode="python")
                fields = write({"items": items, "next_cursor": result.next_cursor})
                return cls(**fields).SerializeToString()  # type: ignore[no-any-return]

            return self._page_encoder(plan.output, page) or page
        direct = self.codec.object_encoder(plan.output) if plan.output_kind == "model" else None
        if direct is not None:
            model, encode_object = direct

            def model_message(result: Any) -> bytes:
                if type(result) is model:
                    return encode_object(result)
                return cls(**write(dump(result, mode="python"))).SerializeToString()  # type: ignore[no-any-return]

            return model_message
        return lambda result: cls(**write(dump(result, mode="python"))).SerializeToString()

    def _page_encoder(
        self, name: str, general: Callable[[PageResult], bytes]
    ) -> Callable[[PageResult], bytes] | None:
        """A page of flat models written straight into one reused message (see ``object_filler``).

        A page holding anything but the model itself goes the general way.
        """
        items = next(f for f in self.schema.messages[name].fields if f.name == "items")
        element = items.slot.element
        if element is None or element.type != FDP.TYPE_MESSAGE:
            return None
        found = self.codec.object_filler(element.type_name.rsplit(".", 1)[-1])
        if found is None:
            return None
        model, fill = found
        scratch: Any = self.codec.classes[name]()

        def page(result: PageResult) -> bytes:
            scratch.Clear()
            add = scratch.items.add  # after Clear: it detaches the old repeated field
            for item in result.items:
                if type(item) is not model:
                    return general(result)
                fill(add(), item)
            if result.next_cursor is not None:
                scratch.next_cursor = result.next_cursor
            return scratch.SerializeToString()  # type: ignore[no-any-return]

        return page

    def _inbound(
        self, plan: MethodPlan, first: Any, rest: AsyncIterator[bytes]
    ) -> AsyncIterator[Any]:
        """The stream items of a client-streaming call, as Python values to validate."""
        parse = self._parser(plan)
        read = self.codec.readers[plan.input]
        field = plan.stream_field

        def item_of(values: Any) -> Any:
            if plan.input_kind == "model":
                return values
            return values.get(field, ABSENT)

        async def items() -> AsyncIterator[Any]:
            if first is not None:
                item = item_of(first)
                if item is not ABSENT:
                    yield item
            async for raw in rest:
                item = item_of(read(parse(raw)))
                if item is not ABSENT:
                    yield item

        return items()

    def _unary(self, plan: MethodPlan, binding: Binding) -> Handler:
        parse = self._parser(plan)
        read = self.codec.readers[plan.input]
        respond = self._responder(plan, binding)
        call = self.runtime.dispatcher.call

        async def unary(request: bytes, context: Any) -> bytes:
            try:
                caller = caller_of(context)
                return respond(await call(binding, read(parse(request)), caller))
            except ServiceError as exc:
                await abort(context, exc)
            except Exception as exc:
                await abort(context, internal_error(f"gRPC {plan.rpc} failed", exc))
            raise AssertionError("unreachable: abort raises")

        return unary

    def _server_stream(self, plan: MethodPlan, binding: Binding) -> Handler:
        arguments = self._arguments(plan)
        respond = self._responder(plan, binding)
        open_stream = self.runtime.dispatcher.open_stream

        async def server_stream(request: bytes, context: Any) -> AsyncIterator[bytes]:
            items: Any = None
            try:
                caller = caller_of(context)
                items = await open_stream(binding, arguments(request), caller)
                async for item in items:
                    yield respond(item)
            except ServiceError as exc:
                await abort(context, exc)
            except Exception as exc:
                await abort(context, internal_error(f"gRPC {plan.rpc} failed", exc))
            finally:
                if items is not None:
                    await items.aclose()

        return server_stream

    async def _open_inbound(
        self, plan: MethodPlan, binding: Binding, requests: AsyncIterator[bytes], context: Any
    ) -> AsyncIterator[Any]:
        caller = caller_of(context)
        requests = aiter(requests)
        args: dict[str, Any] | None = None
        first = None
        if plan.input_kind == "params":
            # The parameters come with the first message.
            raw = await anext(requests, None)
            first = {} if raw is None else self.codec.readers[plan.input](self._parser(plan)(raw))
            args = {k: v for k, v in first.items() if k != plan.stream_field}
        inbound = self._inbound(plan, first, requests)
        return await self.runtime.dispatcher.open_stream(binding, args, caller, inbound)

    def _client_stream(self, plan: MethodPlan, binding: Binding) -> Handler:
        respond = self._responder(plan, binding)

        async def client_stream(requests: AsyncIterator[bytes], context: Any) -> bytes:
            results: Any = None
            try:
                results = await self._open_inbound(plan, binding, requests, context)
                async for result in results:
                    return respond(result)
                raise AssertionError("a client stream yields one result")
            except ServiceError as exc:
                await abort(context, exc)
            except Exception as exc:
                await abort(context, internal_error(f"gRPC {plan.rpc} failed", exc))
            finally:
                if results is not None:
                    await results.aclose()
            raise AssertionError("unreachable: abort raises")

        return client_stream

    def _bidi_stream(self, plan: MethodPlan, binding: Binding) -> Handler:
        respond = self._responder(plan, binding)

        async def bidi_stream(requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
            results: Any = None
            try:
                results = await self._open_inbound(plan, binding, requests, context)
                async for result in results:
                    yield respond(result)
            except ServiceError as exc:
                await abort(context, exc)
            except Exception as exc:
                await abort(context, internal_error(f"gRPC {plan.rpc} failed", exc))
            finally:
                if results is not None:
                    await results.aclose()

        return bidi_stream

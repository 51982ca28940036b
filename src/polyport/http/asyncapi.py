"""The AsyncAPI 3.0 document of a node's event channels, written from the type graph.

    servers      one per pattern that carries events: sse, poll, ws, webhooks
    channels     one per event type: its channel template as the address, a
                 parameter per ``{field}``, its one message
    operations   one per pattern and event type: ``send`` when the node pushes
                 the event to clients, ``receive`` when clients may publish it
    components   the messages (payload: the event data's JSON Schema), the
                 schemas they reference (the same as /openapi.json's), and the
                 security schemes the operations accept

Each edge that carries events describes its server and its operations into
one :class:`AsyncApiDocument` (``edge.describe_channels(doc)``, the
:class:`~polyport.edges.kinds.ChannelEdge` kind), so the document holds what
this node serves and nothing else: an edge turned off takes its server and
its operations with it, and a channel no edge serves is left out. Channels
and messages are made by the document on first use; queues, when they land,
add theirs the same way (:meth:`AsyncApiDocument.channel`,
:meth:`~AsyncApiDocument.message`), and their operations through the edges
that serve them.

Actions are the node's: ``send`` means the node sends the message (to a
subscriber, a poller, a webhook endpoint), ``receive`` that it takes it in
(a client's ``publish`` frame). Every event type is listed, public or not,
as /openapi.json lists every method: the contract is not a secret, and an
operation's ``security`` says what a caller must present.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal
from urllib.parse import quote

from polyport._version import __version__
from polyport.core.contract import EventType
from polyport.core.events import (
    CURSOR_EXPRESSION,
    MAX_CHANNEL_LENGTH,
    MAX_PATTERNS,
    PATTERN_EXPRESSION,
)
from polyport.core.jsonschema import JsonSchemas
from polyport.core.spec import EventSpec, ServiceSpec
from polyport.core.typegraph import TypeGraph
from polyport.core.types import ModelRef

Action = Literal["send", "receive"]

#: The credentials a node accepts, as AsyncAPI security schemes; each edge names
#: those its transport can carry (browsers cannot set headers on EventSource).
SECURITY_SCHEMES: dict[str, dict[str, Any]] = {
    "bearer": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT or API key",
        "description": "A JWT (HS256/RS256) or an API key as a bearer token.",
    },
    "apiKey": {"type": "httpApiKey", "in": "header", "name": "X-API-Key"},
    "accessToken": {
        "type": "httpApiKey",
        "in": "query",
        "name": "access_token",
        "description": "A bearer token or a ticket from POST /auth/ticket, for browsers.",
    },
    "ticketCookie": {
        "type": "httpApiKey",
        "in": "cookie",
        "name": "polyport_token",
        "description": "The HttpOnly cookie POST /auth/ticket sets (WebSocket: from the "
        "node's own origin or one of cors_origins only).",
    },
    "mqttPassword": {
        "type": "userPassword",
        "description": "MQTT CONNECT: the password carries an API key, a JWT or a ticket of "
        "POST /auth/ticket; the user name is free.",
    },
}


class AsyncApiDocument:
    """An AsyncAPI 3.0.0 document under construction.

    ``events`` are the event types subscribers are admitted to on this node:
    the contract's, and the node's own (``webhooks.endpoint.disabled``).
    """

    def __init__(
        self, spec: ServiceSpec, events: Mapping[str, EventType], *, auth_optional: bool
    ) -> None:
        self.spec = spec
        self.events = events
        self.auth_optional = auth_optional
        self.schemas = JsonSchemas(spec.graph, "#/components/schemas/")
        self.servers: dict[str, dict[str, Any]] = {}
        #: Servers on the node's own HTTP port: their host is the one a request used.
        self.node_servers: set[str] = set()
        #: Servers on the node's host but a port of their own (MQTT's): key → its port.
        self.node_ports: dict[str, Callable[[], int]] = {}
        self.channels: dict[str, dict[str, Any]] = {}
        self.messages: dict[str, dict[str, Any]] = {}
        self.operations: dict[str, dict[str, Any]] = {}
        self.extra_schemas: dict[str, Any] = {}
        self.security_schemes: dict[str, dict[str, Any]] = {}

    # -- building blocks used by edges ----------------------------------------------

    def server(
        self,
        key: str,
        protocol: str,
        *,
        pathname: str | None = None,
        host: str | None = None,
        port: Callable[[], int] | None = None,
        protocol_version: str | None = None,
        variables: dict[str, Any] | None = None,
        title: str,
        description: str,
        bindings: dict[str, Any] | None = None,
    ) -> None:
        """A server; without ``host``, the node's own HTTP port (filled in per request),
        or with ``port`` a port of its own on the host the request named (asked at each
        build: the document is made once, possibly before that port is bound).

        ``protocol`` is the plain one (``http``, ``ws``): a node reached over
        TLS is described with ``https`` and ``wss`` (a server on a port of its
        own keeps its protocol: TLS in front of HTTP says nothing about it).
        """
        if key in self.servers:
            raise ValueError(f"AsyncAPI: server {key!r} described twice")
        server: dict[str, Any] = {"host": host or "", "protocol": protocol}
        if protocol_version is not None:
            server["protocolVersion"] = protocol_version
        if pathname is not None:
            server["pathname"] = pathname
        if variables:
            server["variables"] = variables
        server["title"] = title
        server["description"] = description
        if bindings:
            server["bindings"] = bindings
        self.servers[key] = server
        if host is None:
            self.node_servers.add(key)
            if port is not None:
                self.node_ports[key] = port

    def channel(
        self,
        key: str,
        address: str | None,
        *,
        messages: Iterable[str],
        parameters: dict[str, Any] | None = None,
        title: str | None = None,
        description: str | None = None,
    ) -> str:
        """A channel carrying ``messages`` (keys of :meth:`message`); its key, once made.

        A None ``address`` is a channel known only at run time (a reply queue).
        """
        if key not in self.channels:
            channel: dict[str, Any] = {"address": address}
            if title:
                channel["title"] = title
            if description:
                channel["description"] = description
            channel["messages"] = {m: {"$ref": f"#/components/messages/{m}"} for m in messages}
            if parameters:
                channel["parameters"] = parameters
            channel["servers"] = []
            self.channels[key] = channel
        return key

    def message(
        self,
        key: str,
        payload: dict[str, Any],
        *,
        title: str | None = None,
        description: str | None = None,
    ) -> str:
        """A message of the components whose payload is ``payload``; its key."""
        if key not in self.messages:
            message: dict[str, Any] = {"name": key}
            if title:
                message["title"] = title
            if description:
                message["description"] = description
            message["contentType"] = "application/json"
            message["payload"] = payload
            self.messages[key] = message
        return key

    def event_channel(self, name: str) -> str:
        """The channel of event type ``name``, and its message, made on first use.

        The address is the event's channel template; each ``{field}`` is a
        parameter whose value is the event data's field of that name.
        """
        if name in self.channels:
            return name
        event = self.events[name]
        declared = self.spec.events.get(name)
        payload = (
            self.schemas.schema(declared.payload)
            if declared is not None
            else self._undeclared_payload(event.model)
        )
        described = declared.description if declared is not None else event.description
        self.message(name, payload, title=name, description=described)
        parameters = {
            field: {
                "description": f"The event's {field!r}: one channel per value "
                f"(subscribe to {event.channel_pattern} for every one).",
                "location": f"$message.payload#/{self._wire_name(declared, field)}",
            }
            for field in event.channel_fields
        }
        return self.channel(
            name,
            event.channel,
            messages=[name],
            parameters=parameters,
            title=name,
            description=described,
        )

    def operation(
        self,
        key: str,
        action: Action,
        channel: str,
        *,
        server: str,
        summary: str,
        description: str,
        messages: Sequence[str] | None = None,
        security: list[dict[str, Any]] | None = None,
        bindings: dict[str, Any] | None = None,
        tags: Sequence[str] = (),
        extensions: dict[str, Any] | None = None,
        reply: dict[str, Any] | None = None,
    ) -> None:
        """An operation on ``channel`` carried by ``server`` (which the channel then lists).

        ``messages`` default to every message of the channel; ``reply`` is an
        AsyncAPI reply object (request/reply over a queue).
        """
        if key in self.operations:
            raise ValueError(f"AsyncAPI: operation {key!r} described twice")
        if server not in self.servers:
            raise ValueError(f"AsyncAPI: operation {key!r} names no server ({server!r})")
        found = self.channels[channel]
        ref = {"$ref": f"#/servers/{server}"}
        if ref not in found["servers"]:
            found["servers"].append(ref)
        names = list(messages) if messages is not None else list(found["messages"])
        operation: dict[str, Any] = {
            "action": action,
            "channel": {"$ref": f"#/channels/{channel}"},
            "summary": summary,
            "description": description,
            "messages": [{"$ref": f"#/channels/{channel}/messages/{m}"} for m in names],
        }
        if security is not None:
            operation["security"] = security
        if tags:
            operation["tags"] = [{"name": tag} for tag in tags]
        if bindings:
            operation["bindings"] = bindings
        if reply:
            operation["reply"] = reply
        operation.update(extensions or {})
        self.operations[key] = operation

    def security(
        self, schemes: Sequence[str], *, public: bool, scopes: Iterable[str] = ()
    ) -> tuple[list[dict[str, Any]] | None, dict[str, Any]]:
        """An operation's ``security`` (any one of ``schemes``) and its extensions.

        None when no credentials are needed: a public event type, or a node in
        development mode, where anonymous callers may do everything. AsyncAPI
        has no optional security; ``x-polyport-scopes`` names the scopes the
        credentials must hold (the ``security`` list says how to present them).
        """
        extensions: dict[str, Any] = {}
        needed = sorted(scopes)
        if public or self.auth_optional:
            return None, extensions
        for name in schemes:
            self.security_schemes[name] = SECURITY_SCHEMES[name]
        if needed:
            extensions["x-polyport-scopes"] = needed
        return [{"$ref": f"#/components/securitySchemes/{name}"} for name in schemes], extensions

    # -- schemas for bindings ------------------------------------------------------------

    @staticmethod
    def channels_query(event: EventType) -> dict[str, Any]:
        """``?channel=`` of the event readers: channels or patterns, repeatable."""
        return {
            "type": "array",
            "minItems": 1,
            "maxItems": MAX_PATTERNS,
            "description": "Channels or patterns (+ one segment, # the rest); repeatable",
            "items": {
                "type": "string",
                "minLength": 1,
                "maxLength": MAX_CHANNEL_LENGTH,
                "pattern": PATTERN_EXPRESSION,
            },
            "examples": [[event.channel_pattern]],
        }

    @staticmethod
    def query_pattern(event: EventType) -> str:
        """The event's channel pattern as a query value (``chat/%2B``: a bare + is a space)."""
        return quote(event.channel_pattern, safe="/")

    @staticmethod
    def cursor(description: str, *, empty: bool = False) -> dict[str, Any]:
        """A resume cursor (event id, position, ``now``, ``earliest``), as ``Cursor`` reads it."""
        pattern = CURSOR_EXPRESSION.replace("^(?:", "^(?:|", 1) if empty else CURSOR_EXPRESSION
        return {"type": "string", "pattern": pattern, "description": description}

    # -- the document -----------------------------------------------------------------

    def build(self, host: str, *, secure: bool = False) -> dict[str, Any]:
        """The document, the node's own servers at ``host`` (``HOST:PORT``), over TLS or not."""
        service = self.spec.service
        info: dict[str, Any] = {
            "title": f"{service.name} events",
            "version": f"{service.version}",
            "x-polyport-version": __version__,
        }
        if service.description:
            info["description"] = service.description
        servers = {}
        for key, server in self.servers.items():
            if key in self.node_ports:
                server = {**server, "host": _on_port(host, self.node_ports[key]())}
            elif key in self.node_servers:
                protocol = server["protocol"]
                secured = {"http": "https", "ws": "wss"}.get(protocol, protocol)
                server = {**server, "host": host, "protocol": secured if secure else protocol}
            servers[key] = server
        # Only the schemas the messages reach: the components of /openapi.json, by name.
        schemas = {**self.schemas.definitions(), **self.extra_schemas}
        used = _reachable(self.messages, schemas)
        components: dict[str, Any] = {
            "schemas": {name: schemas[name] for name in sorted(used)},
            "messages": dict(sorted(self.messages.items())),
        }
        if self.security_schemes:
            components["securitySchemes"] = dict(sorted(self.security_schemes.items()))
        return {
            "asyncapi": "3.0.0",
            "info": info,
            "defaultContentType": "application/json",
            "servers": servers,
            "channels": dict(sorted(self.channels.items())),
            "operations": dict(sorted(self.operations.items())),
            "components": components,
        }

    # -- helpers --------------------------------------------------------------------------

    def _wire_name(self, declared: EventSpec | None, field: str) -> str:
        """The JSON name of the payload field ``field`` (a model's alias, if it has one)."""
        payload = declared.payload if declared is not None else None
        if isinstance(payload, ModelRef):
            for spec in self.spec.graph.model(payload.name).fields:
                if spec.name == field:
                    return spec.wire_name
        return field

    def _undeclared_payload(self, model: Any) -> dict[str, Any]:
        """The payload schema of an event type the node declares itself, from its own graph."""
        graph = TypeGraph()
        schemas = JsonSchemas(graph, "#/components/schemas/")
        schema = schemas.schema(graph.node(model))
        for name, definition in schemas.definitions().items():
            if self.extra_schemas.setdefault(name, definition) != definition:
                raise ValueError(f"AsyncAPI: two schemas named {name!r}")
        return schema


def _on_port(host: str, port: int) -> str:
    """``host`` (``HOST[:PORT]``, ``[v6][:PORT]``) with its port replaced by ``port``."""
    if host.startswith("["):
        name = host[: host.index("]") + 1]
    else:
        name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return f"{name}:{port}"


def _reachable(roots: Any, schemas: Mapping[str, Any]) -> set[str]:
    """The names of ``schemas`` that ``roots`` reference, directly or through each other."""
    prefix = "#/components/schemas/"
    found: set[str] = set()
    pending = [roots]
    while pending:
        value = pending.pop()
        if isinstance(value, dict):
            ref = value.get("$ref")
            if isinstance(ref, str) and ref.startswith(prefix):
                name = ref[len(prefix) :]
                if name not in found and name in schemas:
                    found.add(name)
                    pending.append(schemas[name])
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)
    return found

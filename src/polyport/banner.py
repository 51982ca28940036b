"""What ``polyport serve`` and ``polyport demo`` print once a node listens.

Printed only after every listener is bound (the HTTP socket, gRPC's and
MQTT's own ports), so each address in it is one that answers, and what is
*not* served is said first, as warnings, with the reason:

    WARNING DEVELOPMENT MODE: anonymous callers may do everything on this node. …
    polyport 0.1.0 serving shop v1 on http://127.0.0.1:8000
      dashboard  http://127.0.0.1:8000/  ·  API docs http://127.0.0.1:8000/docs  ·  …
      REST       http://127.0.0.1:8000/v1/…  ·  OpenAPI http://127.0.0.1:8000/openapi.json
      gRPC       127.0.0.1:50051 (reflection, health)  ·  .proto http://127.0.0.1:8000/grpc/shop.proto
      MQTT       mqtt://127.0.0.1:1883 (MQTT 5.0 and 3.1.1; topics = channels)
      …
      press Ctrl-C to stop
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape

from polyport._version import __version__
from polyport.edges.kinds import ChannelEdge, WebSocketEdge

if TYPE_CHECKING:
    from polyport.node import Node

#: Width of the label column.
LABEL = 10


def base_url(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def served_rows(node: Node, base: str) -> list[tuple[str, str]]:
    """(label, where) for each pattern the node serves, in the order of the design's table."""
    spec = node.runtime.spec
    v = f"{base}/v{spec.version}"
    ws = "ws" + base.removeprefix("http")
    names = {edge.name for edge in node.edges}
    paths = set(node.http.router.paths())
    rows = [("dashboard", f"{base}/  ·  API docs {base}/docs")]
    if "rest" in names:
        rows.append(("REST", f"{v}/…  ·  OpenAPI {base}/openapi.json"))
    if "poll" in names:
        rows.append(("polling", f"{v}/events?channel=…  ·  long polling: add &wait=25"))
        if f"/v{spec.version}/jobs/{{id}}" in paths:
            rows.append(("jobs", f"{v}/jobs/{{method}}"))
    if "sse" in names:
        rows.append(("SSE", f"{v}/events/stream?channel=…"))
    if "ws" in names:
        rows.append(("WebSocket", f"{ws}/ws"))
    if "graphql" in names:
        rows.append(
            (
                "GraphQL",
                f"{base}/graphql (GraphiQL in a browser)  ·  SDL {base}/graphql/schema.graphql",
            )
        )
    if "jsonrpc" in names:
        rows.append(("JSON-RPC", f"{base}/jsonrpc  ·  OpenRPC {base}/openrpc.json"))
    if "xmlrpc" in names:
        rows.append(("XML-RPC", f"{base}/xmlrpc"))
    if "soap" in names:
        rows.append(("SOAP", f"{base}/soap  ·  WSDL {base}/soap?wsdl"))
    for listener in node.listeners:
        if listener.name == "grpc" and listener.off is None:
            rows.append(
                (
                    "gRPC",
                    f"{listener.address} (reflection, health)  ·  "
                    f".proto {base}/grpc/{spec.name}.proto",
                )
            )
    for listener in node.listeners:
        if listener.name == "mqtt" and listener.off is None:
            where = f"mqtt://{listener.address} (MQTT 5.0 and 3.1.1; topics = channels)"
            if isinstance(listener, WebSocketEdge):
                for path in listener.websocket_routes():
                    where += f"  ·  over WebSocket {ws}{path}"
            rows.append(("MQTT", where))
    if "webhooks" in names:
        rows.append(("webhooks", f"subscriptions {v}/webhooks"))
    if any(isinstance(edge, ChannelEdge) for edge in node.edges):
        rows.append(("AsyncAPI", f"{base}/asyncapi.json (every event channel, per pattern)"))
    receivers = sorted(p for p in paths if p.startswith("/hooks/") and p.count("/") == 2)
    if receivers:
        rows.append(("receivers", "  ·  ".join(base + path for path in receivers)))
    demo = sorted(p for p in paths if p.startswith("/demo/"))
    if demo:
        rows.append(("demo pages", "  ·  ".join(base + path for path in demo)))
    rows.append(("metrics", f"{base}/metrics ({metrics_access(node)})  ·  health {base}/healthz"))
    return rows


def metrics_access(node: Node) -> str:
    config = node.settings.metrics
    if config.public:
        return "public"
    if node.settings.dev:
        return "open in development mode"
    return f"needs the scope {config.scope!r}"


def data_row(node: Node) -> str:
    settings = node.settings
    if node.shared is not None:
        return f"events on {node.shared.where} (shared); the rest in SQLite {settings.database}"
    if settings.database == ":memory:":
        return "in memory: nothing is kept after a stop"
    log = "" if settings.event_log == "sqlite" else " (event history in memory)"
    return f"SQLite {settings.database}{log}"


def queues_row(node: Node) -> str | None:
    """Where the message queues live when not beside the jobs: their broker."""
    url = node.settings.queues.broker
    if url is None or not node.runtime.queues.bindings:
        return None
    from polyport.brokers import describe

    return f"on {describe(url)}"


def print_banner(console: Console, node: Node, base: str, *, data: str | None = None) -> None:
    """Warnings first (what is not served, and why), then what is served where."""
    for warning in node.warnings():
        console.print(f"[bold yellow]WARNING[/] {escape(warning)}", soft_wrap=True)
    spec = node.runtime.spec
    console.print(
        f"[bold]polyport {__version__}[/] serving [bold]{escape(spec.name)}[/] "
        f"v{spec.version} on {base}",
        soft_wrap=True,
    )
    rows = [*served_rows(node, base), ("data", data or data_row(node))]
    queues = queues_row(node)
    if queues is not None:
        rows.append(("queues", queues))
    width = max(LABEL, *(len(label) for label, _ in rows))
    for label, where in rows:
        console.print(f"  {label:<{width}} {escape(where)}", soft_wrap=True)
    console.print("  press Ctrl-C to stop")

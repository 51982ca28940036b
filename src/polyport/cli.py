"""The ``polyport`` command: serve, demo, routes, bench."""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from polyport._version import __version__
from polyport.core.config import Settings, load_settings
from polyport.core.contract import Service
from polyport.core.errors import ConfigError, ContractError, MissingExtra, PolyportError

app = typer.Typer(
    name="polyport",
    help="One service contract, served over every API communication pattern.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True, highlight=False)
out = Console(highlight=False)


def fail(message: str, code: int = 2) -> typer.Exit:
    console.print("[bold red]error:[/] " + escape(message), soft_wrap=True)
    return typer.Exit(code)


def load_service(target: str) -> Service:
    """Import ``module:attribute`` and check it is a :class:`Service`."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"expected MODULE:SERVICE (like myapp.api:service), got {target!r}")
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise ConfigError(f"cannot import module {module_name!r}: no such module") from None
        raise ConfigError(f"importing {module_name!r} failed: {exc}") from None
    except PolyportError:
        raise
    except Exception as exc:
        raise ConfigError(
            f"importing {module_name!r} failed: {type(exc).__name__}: {exc}"
        ) from None
    try:
        service = getattr(module, attr)
    except AttributeError:
        raise ConfigError(f"module {module_name!r} has no attribute {attr!r}") from None
    if not isinstance(service, Service):
        raise ConfigError(f"{target} is a {type(service).__name__}, not a polyport.Service")
    return service


def _version(value: bool) -> None:
    if value:
        out.print(f"polyport {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """polyport: one service contract, every API communication pattern."""


def _run_node(service: Service, settings: Settings) -> None:
    from polyport.core.logs import configure_logging
    from polyport.node import DEV_WARNING, Node, bind_socket

    configure_logging(settings.log.level, settings.log.format)
    node = Node(service, settings)  # contract errors surface here, before binding
    sock = bind_socket(settings.host, settings.port)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    base = f"http://{shown}:{port}"
    if settings.dev:
        console.print(f"[bold yellow]WARNING[/] {DEV_WARNING}", soft_wrap=True)
    spec = node.runtime.spec
    console.print(
        f"[bold]polyport {__version__}[/] serving [bold]{spec.name}[/] v{spec.version} on {base}",
        soft_wrap=True,
    )
    console.print(
        f"  dashboard {base}/  ·  API docs {base}/docs  ·  OpenAPI {base}/openapi.json  ·  "
        f"metrics {base}/metrics",
        soft_wrap=True,
    )
    if node.http.websocket:
        ws = base.replace("http://", "ws://", 1)
        console.print(
            f"  SSE {base}/v{spec.version}/events/stream?channel=…  ·  WebSocket {ws}/ws",
            soft_wrap=True,
        )
    if any(e.name == "graphql" for e in node.edges):
        console.print(
            f"  GraphQL {base}/graphql (GraphiQL in a browser)  ·  "
            f"SDL {base}/graphql/schema.graphql",
            soft_wrap=True,
        )
    grpc_edge: Any = next((e for e in node.edges if e.name == "grpc"), None)
    if grpc_edge is not None and grpc_edge.off is None:
        where = grpc_edge.address if settings.grpc.port else "(a free port, logged at start)"
        console.print(
            f"  gRPC {where} (reflection, health)  ·  .proto {base}/grpc/{spec.name}.proto",
            soft_wrap=True,
        )
    if any(route.startswith("/demo/") for route in node.http.router.paths()):
        console.print(f"  demo pages {base}/demo/orders  ·  {base}/demo/chat", soft_wrap=True)
    console.print(f"  edges: {', '.join(e.name for e in node.edges)}")
    for name, reason in node.skipped.items():
        console.print(f"  [yellow]edge {name} is off:[/] {reason}")
    console.print("  press Ctrl-C to stop")
    from polyport.server import run

    run(node.serve(sock))


ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="A TOML configuration file.")
]


@app.command()
def serve(
    target: Annotated[str, typer.Argument(help="The service to serve, as MODULE:SERVICE.")],
    host: Annotated[
        str | None, typer.Option(help="Address to listen on [default: 127.0.0.1].")
    ] = None,
    port: Annotated[int | None, typer.Option(help="HTTP port [default: 8000].")] = None,
    config: ConfigOption = None,
    database: Annotated[
        str | None,
        typer.Option(help="SQLite file for events and jobs [default: polyport.sqlite3]."),
    ] = None,
    dev: Annotated[
        bool, typer.Option("--dev", help="Development mode: anonymous callers may do everything.")
    ] = False,
) -> None:
    """Serve MODULE:SERVICE on every installed edge; credentials required unless public."""
    try:
        settings = load_settings(
            config,
            overrides={
                "host": host,
                "port": port,
                "database": database,
                "dev": True if dev else None,
            },
        )
        service = load_service(target)
        _run_node(service, settings)
    except (ConfigError, ContractError, MissingExtra) as exc:
        raise fail(str(exc)) from None


@app.command()
def demo(
    port: Annotated[int | None, typer.Option(help="HTTP port [default: 8000].")] = None,
    database: Annotated[
        str, typer.Option(help="SQLite file of the demo (':memory:' for none).")
    ] = ".polyport/demo.sqlite3",
    config: ConfigOption = None,
) -> None:
    """Run the e-commerce demo on 127.0.0.1 in development mode (no credentials needed)."""
    try:
        settings = load_settings(
            config,
            overrides={"port": port, "database": database},
            # Webhooks to a receiver on this machine (the README's walkthrough).
            base={
                "dev": True,
                "log": {"format": "text"},
                "webhooks": {"allow_private": ["127.0.0.1"]},
            },
        )
        # The demo never listens beyond this machine, whatever the configuration says.
        settings = settings.model_copy(update={"host": "127.0.0.1", "dev": True})
        from polyport.demo.shop import shop

        _run_node(shop, settings)
    except (ConfigError, ContractError, MissingExtra) as exc:
        raise fail(str(exc)) from None


@app.command()
def routes(
    target: Annotated[
        str, typer.Argument(help="MODULE:SERVICE (default: the demo shop).")
    ] = "polyport.demo.shop:shop",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List every endpoint of every method and event, per pattern."""
    from polyport.node import Node

    try:
        service = load_service(target)
        node = Node(service, Settings(database=":memory:", event_log="memory"))
    except (ConfigError, ContractError, MissingExtra) as exc:
        raise fail(str(exc)) from None
    entries = node.catalog()
    if as_json:
        import orjson

        data: list[dict[str, Any]] = [
            {"pattern": e.pattern, "target": e.target, "kind": e.kind, "address": e.address}
            for e in entries
        ]
        sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    spec = node.runtime.spec
    table = Table(title=f"{spec.name} v{spec.version}: endpoints per pattern", show_lines=False)
    table.add_column("target", style="bold")
    table.add_column("kind")
    table.add_column("pattern", style="cyan")
    table.add_column("address")
    last = None
    for entry in sorted(entries, key=lambda e: (e.kind != "method", e.kind, e.target, e.pattern)):
        shown = entry.target if entry.target != last else ""
        last = entry.target
        table.add_row(shown, entry.kind, entry.pattern, entry.address)
    out.print(table)


@app.command()
def proto(
    target: Annotated[
        str, typer.Argument(help="MODULE:SERVICE (default: the demo shop).")
    ] = "polyport.demo.shop:shop",
    events: Annotated[
        bool, typer.Option("--events", help="Print the event stream's .proto instead.")
    ] = False,
) -> None:
    """Print the gRPC .proto of MODULE:SERVICE, to compile with grpc_tools.protoc."""
    try:
        from polyport.edges.grpc import events_proto, service_proto

        text = events_proto() if events else service_proto(load_service(target))
    except (ConfigError, ContractError, MissingExtra) as exc:
        raise fail(str(exc)) from None
    sys.stdout.write(text)


bench_app = typer.Typer(
    help="The benchmark lab: the same handler over each pattern.", no_args_is_help=True
)
app.add_typer(bench_app, name="bench")


DurationOption = Annotated[float, typer.Option(help="Seconds of measured load per case.")]
ConnectionsOption = Annotated[
    int, typer.Option(help="Calls in flight: keep-alive connections (or gRPC streams).")
]
WarmupOption = Annotated[float, typer.Option(help="Seconds of warm-up per case.")]
GeneratorOption = Annotated[str, typer.Option(help="HTTP load generator: auto, wrk or python.")]
RepeatsOption = Annotated[
    int, typer.Option(help="Interleaved rounds; each figure is the median run.")
]
OutOption = Annotated[Path, typer.Option("--out", help="Where results go.")]
RESULTS = Path("bench-results")


def _bench(module: str, function: str, **options: Any) -> None:
    """Run ``polyport.bench.{module}.{function}``; a missing extra or a bad option is one line."""
    try:
        run = getattr(importlib.import_module(f"polyport.bench.{module}"), function)
    except MissingExtra as exc:
        raise fail(str(exc)) from None
    try:
        run(console=out, **options)
    except (ConfigError, MissingExtra) as exc:
        raise fail(str(exc)) from None


@bench_app.command("rest")
def bench_rest(
    duration: DurationOption = 10.0,
    connections: ConnectionsOption = 64,
    warmup: WarmupOption = 2.0,
    output: OutOption = RESULTS,
    generator: GeneratorOption = "auto",
    repeats: RepeatsOption = 1,
) -> None:
    """GET /v1/users/{id} through polyport, plain FastAPI and a plain Starlette route."""
    _bench(
        "rest",
        "run_rest_bench",
        duration=duration,
        connections=connections,
        warmup=warmup,
        output=output,
        generator=generator,
        repeats=repeats,
    )


@bench_app.command("rpc")
def bench_rpc(
    duration: DurationOption = 5.0,
    connections: ConnectionsOption = 64,
    warmup: WarmupOption = 1.0,
    output: OutOption = RESULTS,
    generator: GeneratorOption = "auto",
    repeats: RepeatsOption = 1,
) -> None:
    """One User and 50 over REST, JSON-RPC, XML-RPC, SOAP and gRPC, against grpcio and Spyne."""
    _bench(
        "rpc",
        "run_rpc_bench",
        duration=duration,
        connections=connections,
        warmup=warmup,
        output=output,
        generator=generator,
        repeats=repeats,
    )


@bench_app.command("graphql")
def bench_graphql(
    duration: DurationOption = 10.0,
    connections: ConnectionsOption = 64,
    warmup: WarmupOption = 2.0,
    output: OutOption = RESULTS,
    generator: GeneratorOption = "auto",
    repeats: RepeatsOption = 1,
) -> None:
    """A simple and a nested query over POST /graphql: polyport against plain Strawberry."""
    _bench(
        "graphql",
        "run_graphql_bench",
        duration=duration,
        connections=connections,
        warmup=warmup,
        output=output,
        generator=generator,
        repeats=repeats,
    )


@bench_app.command("webhooks")
def bench_webhooks(
    endpoints: Annotated[int, typer.Option(help="Endpoints subscribed to every event.")] = 100,
    rate: Annotated[
        float, typer.Option(help="Deliveries/s asked for in the sustained phase.")
    ] = 2000.0,
    duration: Annotated[float, typer.Option(help="Seconds of the sustained phase.")] = 10.0,
    burst: Annotated[int, typer.Option(help="Events published back to back in the burst.")] = 200,
    output: OutOption = RESULTS,
    receiver: Annotated[
        bool, typer.Option(help="Then a receiver's acknowledgements/s, --duration s per phase.")
    ] = True,
    connections: Annotated[
        int, typer.Option(help="Keep-alive connections posting to the receiver.")
    ] = 32,
    generator: Annotated[
        str, typer.Option(help="Receiver load generator: auto, wrk or python.")
    ] = "auto",
) -> None:
    """Signed deliveries from the SQLite outbox to a local receiver; a receiver's acks/s."""
    _bench(
        "webhooks",
        "run_webhooks_bench",
        endpoints=endpoints,
        rate=rate,
        duration=duration,
        burst=burst,
        output=output,
        receiver=receiver,
        connections=connections,
        generator=generator,
    )


def _bench_realtime(bench: str, **options: Any) -> None:
    _bench("realtime", "run_realtime_bench", bench=bench, **options)


ClientsOption = Annotated[int, typer.Option(help="Subscribers of the fan-out.")]
MessagesOption = Annotated[int, typer.Option(help="Messages broadcast to every subscriber.")]
SizeOption = Annotated[int, typer.Option(help="Bytes of each message's JSON payload.")]
IdleOption = Annotated[int, typer.Option(help="Idle connections for the memory figure (0: skip).")]
SamplesOption = Annotated[int, typer.Option(help="Messages timed publish→receive, 1 ms apart.")]
StreamOption = Annotated[int, typer.Option(help="Messages streamed back to back to one client.")]


@bench_app.command("ws")
def bench_ws(
    clients: ClientsOption = 1000,
    messages: MessagesOption = 200,
    size: SizeOption = 100,
    idle: IdleOption = 5000,
    latency_samples: SamplesOption = 2000,
    stream_messages: StreamOption = 20_000,
    output: OutOption = RESULTS,
) -> None:
    """WebSocket push: polyport's /ws against websockets.broadcast() from a plain server."""
    _bench_realtime(
        "ws",
        clients=clients,
        messages=messages,
        size=size,
        idle=idle,
        latency_samples=latency_samples,
        stream_messages=stream_messages,
        output=output,
    )


@bench_app.command("sse")
def bench_sse(
    clients: ClientsOption = 1000,
    messages: MessagesOption = 200,
    size: SizeOption = 100,
    idle: IdleOption = 5000,
    latency_samples: SamplesOption = 2000,
    stream_messages: StreamOption = 20_000,
    output: OutOption = RESULTS,
) -> None:
    """Server-Sent Events: polyport's /v1/events/stream against plain sse-starlette."""
    _bench_realtime(
        "sse",
        clients=clients,
        messages=messages,
        size=size,
        idle=idle,
        latency_samples=latency_samples,
        stream_messages=stream_messages,
        output=output,
    )


def main() -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    app()


if __name__ == "__main__":
    main()

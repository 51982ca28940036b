"""The ``polyport`` command: serve, demo, routes, key, proto, queues, bench."""

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
from polyport.cli_queues import queues_app
from polyport.core.contract import Service
from polyport.core.errors import ConfigError, ContractError, MissingExtra, PolyportError
from polyport.settings import Settings, load_settings

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


def _run_node(service: Service, settings: Settings, *, data: str | None = None) -> None:
    """Bind everything, then print the banner, then serve until Ctrl-C or SIGTERM."""
    import asyncio

    from polyport.banner import base_url, print_banner
    from polyport.core.logs import configure_logging
    from polyport.node import Node, bind_socket
    from polyport.server import run

    configure_logging(settings.log.level, settings.log.format)
    # Contract errors surface here, before binding; the banner carries the
    # warnings the node would otherwise log.
    node = Node(service, settings, announce=False)
    sock = bind_socket(settings.host, settings.port)
    base = base_url(*sock.getsockname()[:2])

    async def main() -> None:
        ready = asyncio.Event()
        serving = asyncio.ensure_future(node.serve(sock, ready=ready))
        started = asyncio.ensure_future(ready.wait())
        await asyncio.wait({serving, started}, return_when=asyncio.FIRST_COMPLETED)
        if ready.is_set():
            # Only now is every listener bound (gRPC's port too): say what is where.
            print_banner(console, node, base, data=data)
        else:
            started.cancel()
        await serving

    try:
        run(main())
    finally:
        sock.close()


ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="A TOML configuration file.")
]
# Help texts say "(default …)": typer's rich help would read "[default: …]" as markup and drop it.
PortOption = Annotated[
    int | None, typer.Option(help="HTTP port (default 8000; 0: any free port, printed at start).")
]
DEMO_DATABASE = ".polyport/demo.sqlite3"


@app.command()
def serve(
    target: Annotated[str, typer.Argument(help="The service to serve, as MODULE:SERVICE.")],
    host: Annotated[
        str | None, typer.Option(help="Address to listen on (default 127.0.0.1).")
    ] = None,
    port: PortOption = None,
    config: ConfigOption = None,
    database: Annotated[
        str | None,
        typer.Option(help="SQLite file for events and jobs (default polyport.sqlite3)."),
    ] = None,
    engine: Annotated[
        str | None,
        typer.Option(
            help="Where the event log lives, as a URL: sqlite:///FILE (the default), "
            "memory://, or an engine several nodes share: postgresql://…, redis://…, nats://…."
        ),
    ] = None,
    broker: Annotated[
        str | None,
        typer.Option(
            help="Where the message queues live, as a URL (default: beside the jobs, in the "
            "engine): amqp://… (RabbitMQ), redis://… (Redis Streams), nats://… (JetStream)."
        ),
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
                "engine": engine,
                "queues": {"broker": broker} if broker else None,
                "dev": True if dev else None,
            },
        )
        service = load_service(target)
        _run_node(service, settings)
    except (ConfigError, ContractError, MissingExtra) as exc:
        raise fail(str(exc)) from None


@app.command()
def demo(
    port: PortOption = None,
    database: Annotated[
        str,
        typer.Option(
            help="SQLite file of the demo; its shop data goes beside it "
            "(':memory:': nothing is kept)."
        ),
    ] = DEMO_DATABASE,
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
                # The monitoring demo's simulated sensors, publishing over MQTT.
                "demo": {"sensors": True},
            },
        )
        # The demo never listens beyond this machine, whatever the configuration says.
        settings = settings.model_copy(update={"host": "127.0.0.1", "dev": True})
        from polyport.demo.shop import shop

        _run_node(shop, settings, data=_demo_data(settings.database))
    except (ConfigError, ContractError, MissingExtra) as exc:
        raise fail(str(exc)) from None


def _demo_data(database: str) -> str | None:
    """Where the demo keeps its data, and how to start afresh (the README's ids assume it)."""
    if database == ":memory:":
        return None
    shop = str(Path(database).with_suffix("")) + ".shop.sqlite3"
    # Only the default folder is the demo's alone: never suggest deleting another.
    afresh = (
        "stop, rm -r .polyport, start again"
        if database == DEMO_DATABASE
        else "stop, delete both (and their -wal/-shm files), start again"
    )
    return f"{database} and {shop}, kept between runs; to start afresh: {afresh}"


@app.command()
def routes(
    target: Annotated[
        str, typer.Argument(help="MODULE:SERVICE (default: the demo shop).")
    ] = "polyport.demo.shop:shop",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    config: ConfigOption = None,
) -> None:
    """List every endpoint of every method and event, per pattern (as configured)."""
    from polyport.banner import queues_row
    from polyport.node import Node

    try:
        # The addresses a node started with the same file and variables would use
        # (gRPC's port); nothing is opened or written.
        settings = load_settings(config).model_copy(
            update={"database": ":memory:", "event_log": "memory"}
        )
        service = load_service(target)
        node = Node(service, settings, announce=False)
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
    queues = queues_row(node)
    if queues is not None:
        table.caption = f"queues {queues}"
    out.print(table)


@app.command()
def key(
    subject: Annotated[
        str, typer.Option(help="Who calls with the key: the principal's subject.")
    ] = "me",
    scope: Annotated[
        list[str] | None,
        typer.Option("--scope", help="A scope the key holds; repeat for more (default '*': all)."),
    ] = None,
) -> None:
    """Make a new API key and print the settings that accept it (only its SHA-256 is kept)."""
    import hashlib
    import secrets
    import shlex

    import orjson

    made = "pp_" + secrets.token_urlsafe(32)
    entry = {
        "key_sha256": hashlib.sha256(made.encode()).hexdigest(),
        "subject": subject,
        "scopes": scope or ["*"],
    }

    def toml(value: object) -> str:
        return orjson.dumps(value).decode()  # JSON strings and lists are TOML too

    sys.stdout.write(
        "A new API key (shown once; send it as 'Authorization: Bearer …' or 'X-API-Key: …'):\n\n"
        f"    {made}\n\n"
        "Accept it with these lines in your --config file (polyport.toml):\n\n"
        "    [[auth.api_keys]]\n"
        + "".join(f"    {name} = {toml(value)}\n" for name, value in entry.items())
        + "\nor with this environment variable (it replaces the file's keys):\n\n"
        f"    POLYPORT_AUTH__API_KEYS={shlex.quote(toml([entry]))}\n"
    )


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
        from polyport.edges.grpc.binding import events_proto, service_proto

        text = events_proto() if events else service_proto(load_service(target))
    except (ConfigError, ContractError, MissingExtra) as exc:
        raise fail(str(exc)) from None
    sys.stdout.write(text)


bench_app = typer.Typer(
    help="The benchmark lab: the same handler over each pattern.", no_args_is_help=True
)
app.add_typer(bench_app, name="bench")
app.add_typer(queues_app, name="queues")


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


@bench_app.command("queues")
def bench_queues(
    targets: Annotated[
        str,
        typer.Option(
            help="Comma-separated: sqlite (embedded), postgresql, redis, nats (work queues); "
            "redis-streams, nats-jetstream, rabbitmq (brokers, each against its bare client)."
        ),
    ] = "sqlite",
    messages: Annotated[int, typer.Option(help="Messages sent, then consumed.")] = 20_000,
    in_flight: Annotated[int, typer.Option(help="Sends awaiting their answer at once.")] = 256,
    rate: Annotated[float, typer.Option(help="Sends/s of the latency phase.")] = 1000.0,
    duration: Annotated[float, typer.Option(help="Seconds of the latency phase.")] = 5.0,
    repeats: Annotated[int, typer.Option(help="Rounds; figures are medians.")] = 3,
    output: OutOption = RESULTS,
) -> None:
    """Durable enqueue/s, consume+ack/s and enqueue→handler latency of the message queues."""
    _bench(
        "queues",
        "run_queues_bench",
        targets=[t.strip() for t in targets.split(",") if t.strip()],
        messages=messages,
        in_flight=in_flight,
        rate=rate,
        duration=duration,
        repeats=repeats,
        output=output,
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


@bench_app.command("cluster")
def bench_cluster(
    engines: Annotated[
        str, typer.Option(help="Engines to measure: some of postgresql,redis,nats.")
    ] = "postgresql,redis,nats",
    nodes: Annotated[str, typer.Option(help="Node counts to measure, e.g. 1,2,3.")] = "1,2,3",
    rate: Annotated[float, typer.Option(help="Ticks/s offered, all nodes together.")] = 5000.0,
    duration: Annotated[float, typer.Option(help="Seconds of measured publishing per run.")] = 5.0,
    warmup: Annotated[float, typer.Option(help="Seconds of publishing before measuring.")] = 1.0,
    size: Annotated[int, typer.Option(help="Bytes of each tick's JSON.")] = 100,
    channels: Annotated[
        str, typer.Option(help="'shared': every node on one channel; 'node': one channel each.")
    ] = "shared",
    repeats: RepeatsOption = 1,
    postgresql_url: Annotated[
        str | None, typer.Option(help="PostgreSQL (default: postgres@127.0.0.1:5432/test).")
    ] = None,
    redis_url: Annotated[
        str | None, typer.Option(help="Redis (default: redis://127.0.0.1:6379/0).")
    ] = None,
    nats_url: Annotated[
        str | None, typer.Option(help="NATS JetStream (default: nats://127.0.0.1:4222).")
    ] = None,
    output: OutOption = RESULTS,
) -> None:
    """Events across 1, 2, 3 nodes on each shared engine, against the engine's own client."""
    _bench(
        "cluster",
        "run_cluster_bench",
        engines=engines,
        nodes=nodes,
        rate=rate,
        duration=duration,
        warmup=warmup,
        size=size,
        channels=channels,
        repeats=repeats,
        urls={"postgresql": postgresql_url, "redis": redis_url, "nats": nats_url},
        output=output,
    )


@bench_app.command("mqtt")
def bench_mqtt(
    messages: Annotated[
        int, typer.Option(help="Messages published per throughput phase, all publishers.")
    ] = 50_000,
    publishers: Annotated[int, typer.Option(help="Publisher processes.")] = 2,
    subscribers: Annotated[int, typer.Option(help="Subscriber processes.")] = 1,
    in_flight: Annotated[
        int, typer.Option(help="QoS 1 PUBLISHes awaiting PUBACK per publisher.")
    ] = 64,
    size: Annotated[int, typer.Option(help="Bytes of each message's JSON payload.")] = 100,
    rate: Annotated[float, typer.Option(help="Messages/s of the latency phases.")] = 1000.0,
    duration: Annotated[float, typer.Option(help="Seconds of each latency phase.")] = 5.0,
    idle: Annotated[
        int, typer.Option(help="Idle connections for the memory figure (0: skip).")
    ] = 10_000,
    topics: Annotated[
        str, typer.Option(help="typed: a validated event type; open: mqtt.open_topics ['#'].")
    ] = "typed",
    repeats: Annotated[int, typer.Option(help="Paired rounds; figures are medians.")] = 3,
    output: OutOption = RESULTS,
) -> None:
    """MQTT QoS 0/1 throughput, latency and idle memory: polyport's edge against Mosquitto."""
    _bench(
        "mqtt",
        "run_mqtt_bench",
        messages=messages,
        publishers=publishers,
        subscribers=subscribers,
        in_flight=in_flight,
        size=size,
        rate=rate,
        duration=duration,
        idle_connections=idle,
        topics=topics,
        repeats=repeats,
        output=output,
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

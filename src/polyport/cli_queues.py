"""``polyport queues``: list, peek, read the dead letters, redrive and purge a service's queues.

The commands talk to the broker itself, as the node configured by the same
file and environment would (``--config``, ``POLYPORT_ENGINE``, ``--engine``,
``--database``, ``--broker``) — a running node is not needed, and one that runs meanwhile
sees the changes at once. Without ``--service`` they act on the demo, in the
file ``make run`` uses (``.polyport/demo.sqlite3``).
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import orjson
import typer
from rich.markup import escape
from rich.table import Table

from polyport.core.broker import QueuedMessage
from polyport.core.errors import ConfigError, ContractError, MissingExtra, PolyportError

T = TypeVar("T")

queues_app = typer.Typer(
    help="Inspect and operate a service's message queues (list, peek, dead, redrive, purge).",
    no_args_is_help=True,
)

Target = Annotated[
    str, typer.Option("--service", "-s", help="MODULE:SERVICE (default: the demo shop).")
]
Config = Annotated[Path | None, typer.Option("--config", "-c", help="A TOML configuration file.")]
Engine = Annotated[
    str | None,
    typer.Option(help="The engine's URL, as `polyport serve --engine` (default: the settings')."),
]
Database = Annotated[
    str | None, typer.Option(help="The SQLite file, as `polyport serve --database`.")
]
Broker = Annotated[str | None, typer.Option(help="The broker's URL, as `polyport serve --broker`.")]
Name = Annotated[str, typer.Argument(help="The queue's name.")]
Limit = Annotated[int, typer.Option(min=1, max=500, help="How many at most.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON.")]
DEFAULT_TARGET = "polyport.demo.shop:shop"


def _with_runner(
    target: str,
    config: Path | None,
    engine: str | None,
    database: str | None,
    broker: str | None,
    work: Callable[[Any], Awaitable[T]],
) -> T:
    """Build the node's queue runner from the settings, open its broker, run ``work``."""
    from polyport.cli import DEMO_DATABASE, fail, load_service
    from polyport.node import Node
    from polyport.settings import load_settings

    try:
        settings = load_settings(
            config,
            # The demo's queues are where `make run` (`polyport demo`) keeps them.
            base={"database": DEMO_DATABASE} if target == DEFAULT_TARGET else None,
            overrides={
                "engine": engine,
                "database": database,
                "queues": {"broker": broker} if broker else None,
            },
        )
        node = Node(load_service(target), settings, edges=[], announce=False)
    except (ConfigError, ContractError, MissingExtra) as exc:
        raise fail(str(exc)) from None
    runner = node.runtime.queues
    if not runner.bindings:
        raise fail(f"service {node.service.name} declares no queue")

    async def main() -> T:
        await runner.open()
        try:
            return await work(runner)
        finally:
            await runner.stop()

    try:
        return asyncio.run(main())
    except PolyportError as exc:
        raise fail(str(exc)) from None


def _when(value: float | None) -> str:
    if value is None:
        return ""
    return datetime.datetime.fromtimestamp(value).strftime("%Y-%m-%d %H:%M:%S")


def _print_messages(title: str, found: list[QueuedMessage], as_json: bool) -> None:
    from polyport.cli import out

    if as_json:
        rows = [
            {
                "id": m.id,
                "state": m.state,
                "key": m.key,
                "attempts": m.attempts,
                "sent": m.sent,
                "due": m.due,
                "died": m.died,
                "error": m.error,
                "headers": dict(m.headers),
                "body": m.body.decode("utf-8", "replace"),
            }
            for m in found
        ]
        out.print_json(orjson.dumps(rows).decode())
        return
    table = Table(title=title)
    for column in ("id", "state", "key", "attempts", "sent", "error", "body"):
        table.add_column(column, overflow="fold")
    for m in found:
        body = m.body.decode("utf-8", "replace")
        table.add_row(
            escape(m.id),
            m.state,
            escape(m.key or ""),
            str(m.attempts),
            _when(m.sent),
            escape((m.error or "")[:200]),
            escape(body[:200] + ("…" if len(body) > 200 else "")),
        )
    out.print(table)


@queues_app.command("list")
def list_queues(
    target: Target = DEFAULT_TARGET,
    config: Config = None,
    engine: Engine = None,
    database: Database = None,
    broker: Broker = None,
    as_json: AsJson = False,
) -> None:
    """Every queue with its messages waiting, in flight and dead."""
    from polyport.cli import out

    async def work(runner: Any) -> list[dict[str, Any]]:
        rows = []
        for name in runner.bindings:
            stats = await runner.stats(name)
            rows.append(
                {
                    "name": name,
                    "waiting": stats.waiting,
                    "in_flight": stats.in_flight,
                    "dead": stats.dead,
                    "consumer": runner.bindings[name].consumer is not None,
                }
            )
        return rows

    rows = _with_runner(target, config, engine, database, broker, work)
    if as_json:
        out.print_json(orjson.dumps(rows).decode())
        return
    table = Table(title="queues")
    for column in ("name", "waiting", "in flight", "dead", "consumer"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            row["name"],
            str(row["waiting"]),
            str(row["in_flight"]),
            str(row["dead"]),
            "yes" if row["consumer"] else "no",
        )
    out.print(table)


@queues_app.command("peek")
def peek(
    name: Name,
    target: Target = DEFAULT_TARGET,
    config: Config = None,
    engine: Engine = None,
    database: Database = None,
    broker: Broker = None,
    limit: Limit = 20,
    as_json: AsJson = False,
) -> None:
    """Messages waiting or in flight, without taking them."""
    found = _with_runner(
        target, config, engine, database, broker, lambda r: r.peek(name, limit=limit)
    )
    _print_messages(f"queue {name}: waiting and in flight", found, as_json)


@queues_app.command("dead")
def dead(
    name: Name,
    target: Target = DEFAULT_TARGET,
    config: Config = None,
    engine: Engine = None,
    database: Database = None,
    broker: Broker = None,
    limit: Limit = 20,
    as_json: AsJson = False,
) -> None:
    """The dead letters, with their attempts and last error."""
    found = _with_runner(
        target, config, engine, database, broker, lambda r: r.dead(name, limit=limit)
    )
    _print_messages(f"queue {name}: dead letters", found, as_json)


@queues_app.command("redrive")
def redrive(
    name: Name,
    ids: Annotated[
        list[str] | None, typer.Option("--id", help="A dead letter to redrive (repeatable).")
    ] = None,
    all_: Annotated[bool, typer.Option("--all", help="Redrive every dead letter.")] = False,
    target: Target = DEFAULT_TARGET,
    config: Config = None,
    engine: Engine = None,
    database: Database = None,
    broker: Broker = None,
) -> None:
    """Make dead letters ready again (attempts from zero): those named, or --all."""
    from polyport.cli import fail, out

    if bool(ids) == all_:
        raise fail("say which dead letters: --id ID (repeatable) or --all")
    count = _with_runner(
        target, config, engine, database, broker, lambda r: r.redrive(name, None if all_ else ids)
    )
    out.print(f"{count} dead letter(s) of queue {escape(name)} redriven")


@queues_app.command("purge")
def purge(
    name: Name,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    target: Target = DEFAULT_TARGET,
    config: Config = None,
    engine: Engine = None,
    database: Database = None,
    broker: Broker = None,
) -> None:
    """Delete every message of a queue — waiting, in flight and dead — and forget its ids."""
    from polyport.cli import fail, out

    if not yes:
        answer = typer.prompt(
            f"This deletes every message of queue {name}, dead letters too. "
            "Type the queue's name to go on"
        )
        if answer != name:
            raise fail("not confirmed; nothing deleted", code=1)
    count = _with_runner(target, config, engine, database, broker, lambda r: r.purge(name))
    out.print(f"queue {escape(name)} purged: {count} message(s) deleted")

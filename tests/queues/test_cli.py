"""``polyport queues``: list, peek, dead, redrive and purge, on the broker the settings name."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from tests.queues.cli_service import svc
from typer.testing import CliRunner

from polyport import Settings
from polyport.cli import app
from polyport.node import Node

TARGET = "tests.queues.cli_service:svc"
runner = CliRunner()


def run(*args: str, input: str | None = None) -> tuple[int, str]:
    result = runner.invoke(app, list(args), input=input)
    return result.exit_code, result.output


def fill(database: str, broker: str | None = None) -> None:
    """Three messages in outbox, one of them dead (m0), in the SQLite file or on ``broker``."""

    async def main() -> None:
        settings = Settings.model_validate({"database": database, "queues": {"broker": broker}})
        node = Node(svc, settings, edges=[], announce=False)
        queues = node.runtime.queues
        await queues.open()
        try:
            for n in range(3):
                await queues.send(svc.queues["outbox"], {"to": f"u{n}@example.com"}, id=f"m{n}")
            [delivery] = await queues.broker.receive("outbox", limit=1, lease=30, wait=0)
            assert delivery.id == "m0"
            await queues.broker.dead_letter(delivery, error="mailbox full")
        finally:
            await queues.stop()

    asyncio.run(main())


def test_queues_commands(tmp_path: Path) -> None:
    db = str(tmp_path / "q.sqlite3")
    fill(db)
    common = ["--service", TARGET, "--database", db]
    code, output = run("queues", "list", *common, "--json")
    assert code == 0, output
    rows = {row["name"]: row for row in json.loads(output)}
    assert rows["outbox"] == {
        "name": "outbox",
        "waiting": 2,
        "in_flight": 0,
        "dead": 1,
        "consumer": False,
    }
    code, output = run("queues", "peek", "outbox", *common, "--json")
    assert code == 0 and sorted(m["id"] for m in json.loads(output)) == ["m1", "m2"]
    code, output = run("queues", "dead", "outbox", *common, "--json")
    [dead] = json.loads(output)
    assert dead["id"] == "m0" and dead["error"] == "mailbox full" and dead["attempts"] == 1
    code, output = run("queues", "dead", "outbox", *common)
    assert code == 0 and "mailbox full" in output

    code, output = run("queues", "redrive", "outbox", *common)
    assert code == 2 and "--id ID" in output
    code, output = run("queues", "redrive", "outbox", "--id", "m0", *common)
    assert code == 0 and "1 dead letter(s)" in output

    code, output = run("queues", "purge", "outbox", *common, input="nope\n")
    assert code == 1 and "nothing deleted" in output
    code, output = run("queues", "purge", "outbox", *common, input="outbox\n")
    assert code == 0 and "3 message(s) deleted" in output
    code, output = run("queues", "list", *common)
    assert code == 0 and "outbox" in output

    code, output = run("queues", "peek", "nope", *common)
    assert code == 2 and "no queue named 'nope'" in output
    code, output = run("queues", "list", "--service", "tests.queues.cli_service:plain")
    assert code == 2 and "declares no queue" in output

"""``polyport queues`` on RabbitMQ (``--broker amqp://…``): list, peek, dead, redrive and
purge talk to RabbitMQ itself, as a node would; on queues of the test's own prefix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.contract.rabbitmq_names import Names, rabbit
from tests.queues.test_cli import TARGET, fill, run

pytestmark = [pytest.mark.services, pytest.mark.timeout(120)]
__all__ = ["rabbit"]  # the fixture: a prefix of the test's own, its queues deleted after


def test_queues_commands_on_rabbitmq(tmp_path: Path, rabbit: Names) -> None:
    for queue in ("outbox", "bounces"):
        rabbit.made(queue)
    db = str(tmp_path / "q.sqlite3")
    fill(db, rabbit.url())
    common = ["--service", TARGET, "--database", db, "--broker", rabbit.url()]
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
    code, output = run("queues", "redrive", "outbox", "--id", "m0", *common)
    assert code == 0 and "1 dead letter(s)" in output
    code, output = run("queues", "list", *common, "--json")
    assert {row["name"]: row for row in json.loads(output)}["outbox"]["waiting"] == 3
    code, output = run("queues", "purge", "outbox", *common, input="outbox\n")
    assert code == 0 and "3 message(s) deleted" in output
    code, output = run("queues", "list", *common, "--json")
    assert {row["name"]: row for row in json.loads(output)}["outbox"]["waiting"] == 0

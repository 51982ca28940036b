"""SIGKILL a node whose queues are on RabbitMQ while producers send and its consumer runs:
no acknowledged message is lost (``kill_rounds``), on queues of the test's own prefix."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.contract.rabbitmq_names import Names, rabbit
from tests.queues import test_kill9
from tests.queues.test_kill9 import kill_rounds

pytestmark = [pytest.mark.services, pytest.mark.slow, pytest.mark.timeout(300)]
__all__ = ["rabbit"]  # the fixture: a prefix of the test's own, its queues deleted after


def test_nothing_acknowledged_is_lost_across_kill_9_on_rabbitmq(
    tmp_path: Path, rabbit: Names, monkeypatch: pytest.MonkeyPatch
) -> None:
    """202 = confirmed by RabbitMQ; a killed node's messages come back when its connection
    closes; every acknowledged message is handled at least once."""
    rabbit.made("work")
    # A send waits for two confirms (the message, then its id's record), each a quorum
    # write, so four producers send slower than the node handles and a kill may find no
    # handler running, proving nothing: four times as many keep a backlog.
    monkeypatch.setattr(test_kill9, "PRODUCERS", 4 * test_kill9.PRODUCERS)
    kill_rounds(tmp_path, rabbit.url())
